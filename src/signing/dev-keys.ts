import { generateKeyPairSync, randomBytes } from "node:crypto";
import { access, chmod, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as openpgp from "openpgp";
import { minisignPublicKey } from "./formats/minisign.js";
import { encodeOpenSshEd25519, parseOpenSshEd25519, publicKeyLine } from "./openssh-key.js";

/** The dev keys' files (gpg-clearsign signs with the gpg key). */
export interface DevKeys {
  gpg: { keyFile: string; passphraseFile: string; publicKeyFile: string };
  sshsig: { keyFile: string; publicKeyFile: string };
  /** A PKCS#8 PEM Ed25519 key, and its public key in minisign's own format. */
  minisign: { keyFile: string; publicKeyFile: string };
}

const DEV_NAME = "signing-cluster dev key";
const DEV_EMAIL = "dev@signing.invalid";

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

async function allExist(paths: string[]): Promise<boolean> {
  const found = await Promise.all(paths.map(exists));
  return found.every(Boolean);
}

/** Writes a secret file readable by its owner only (the mode is forced even if the file existed). */
async function writeSecret(path: string, data: string): Promise<void> {
  await writeFile(path, data, { mode: 0o600 });
  await chmod(path, 0o600);
}

/**
 * Generates throwaway development keys for every format into `dir` (created with mode 0700).
 * Idempotent: keys already present are reused, never regenerated.
 */
export async function generateDevKeys(dir: string): Promise<DevKeys> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const keys: DevKeys = {
    gpg: {
      keyFile: join(dir, "gpg-private.asc"),
      passphraseFile: join(dir, "gpg-passphrase.txt"),
      publicKeyFile: join(dir, "gpg-public.asc"),
    },
    sshsig: {
      keyFile: join(dir, "sshsig-ed25519"),
      publicKeyFile: join(dir, "sshsig-ed25519.pub"),
    },
    minisign: {
      keyFile: join(dir, "minisign-ed25519.pem"),
      publicKeyFile: join(dir, "minisign.pub"),
    },
  };

  if (!(await allExist([keys.gpg.keyFile, keys.gpg.passphraseFile, keys.gpg.publicKeyFile]))) {
    const passphrase = randomBytes(24).toString("base64url");
    const { privateKey, publicKey } = await openpgp.generateKey({
      type: "ecc",
      curve: "curve25519Legacy",
      userIDs: [{ name: DEV_NAME, email: DEV_EMAIL }],
      passphrase,
      format: "armored",
    });
    await writeSecret(keys.gpg.passphraseFile, `${passphrase}\n`);
    await writeSecret(keys.gpg.keyFile, privateKey);
    await writeFile(keys.gpg.publicKeyFile, publicKey, { mode: 0o644 });
  }

  if (!(await allExist([keys.sshsig.keyFile, keys.sshsig.publicKeyFile]))) {
    const { privateKey } = generateKeyPairSync("ed25519");
    const pem = encodeOpenSshEd25519(privateKey, DEV_EMAIL);
    const { publicKeyBlob } = parseOpenSshEd25519(pem);
    await writeSecret(keys.sshsig.keyFile, pem);
    await writeFile(keys.sshsig.publicKeyFile, `${publicKeyLine(publicKeyBlob, DEV_EMAIL)}\n`, {
      mode: 0o644,
    });
  }

  if (!(await allExist([keys.minisign.keyFile, keys.minisign.publicKeyFile]))) {
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    await writeSecret(keys.minisign.keyFile, privateKey.export({ type: "pkcs8", format: "pem" }) as string);
    await writeFile(keys.minisign.publicKeyFile, minisignPublicKey({ publicKey }), { mode: 0o644 });
  }

  return keys;
}
