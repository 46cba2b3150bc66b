import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { fileKey } from "../../keys/file.js";
import type { SigningKey } from "../../keys/key.js";
import { asIs } from "../../keys/observed.js";
import { publicParts } from "../../keys/public-parts.js";
import { parseOpenSshKey, sshFingerprint, sshString, sshUint32, wrapBase64 } from "../openssh-key.js";
import {
  type FileKeyOptions,
  KeyLoadError,
  type Signer,
  type SignInput,
  type SshsigKeyConfig,
} from "../signer.js";

const MAGIC = Buffer.from("SSHSIG", "latin1");
// SSHSIG allows sha256 or sha512; sha256 is the hash the node already runs over every upload.
const HASH_ALG = "sha256";
const SIG_VERSION = 1;

/** An SSH `mpint`: big-endian two's complement, so a value with its top bit set gains a zero byte. */
function sshMpint(value: Buffer): Buffer {
  let start = 0;
  while (start < value.length - 1 && value[start] === 0) start++;
  const v = value.subarray(start);
  return sshString((v[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v);
}

/** The SSH encodings of a key: its public key blob and type, and its signatures' blob. */
interface SshKeyEncoding {
  type: string;
  blob: Buffer;
  /** The bytes the key signs for `signedData`: the data (Ed25519) or its SHA-256 (ECDSA, RSA). */
  input(signedData: Buffer): Buffer;
  signatureBlob(raw: Buffer): Buffer;
}

function sshEncoding(key: SigningKey): SshKeyEncoding {
  const parts = publicParts(key.algorithm, key.publicKey);
  const sha256 = (d: Buffer) => createHash("sha256").update(d).digest();
  switch (parts.algorithm) {
    case "ed25519":
      return {
        type: "ssh-ed25519",
        blob: Buffer.concat([sshString("ssh-ed25519"), sshString(parts.point)]),
        input: (d) => d,
        signatureBlob: (raw) => Buffer.concat([sshString("ssh-ed25519"), sshString(raw)]),
      };
    case "ecdsa-p256": {
      const type = "ecdsa-sha2-nistp256";
      return {
        type,
        blob: Buffer.concat([sshString(type), sshString("nistp256"), sshString(parts.point)]),
        input: sha256,
        signatureBlob: (raw) =>
          Buffer.concat([
            sshString(type),
            sshString(Buffer.concat([sshMpint(raw.subarray(0, 32)), sshMpint(raw.subarray(32))])),
          ]),
      };
    }
    case "rsa-pkcs1-sha256":
      return {
        type: "ssh-rsa",
        blob: Buffer.concat([sshString("ssh-rsa"), sshMpint(parts.e), sshMpint(parts.n)]),
        input: sha256,
        signatureBlob: (raw) => Buffer.concat([sshString("rsa-sha2-256"), sshString(raw)]),
      };
  }
}

/** An SSHSIG signer over any key (as `ssh-keygen -Y sign`): the key signs, this builds the blob. */
export function sshsigSignerForKey(key: SigningKey, namespace: string, comment: string): Signer {
  const enc = sshEncoding(key);
  const pubLine = `${enc.type} ${enc.blob.toString("base64")}${comment ? ` ${comment}` : ""}`;
  return {
    format: "sshsig",
    fingerprint: sshFingerprint(enc.blob),
    suffix: ".sig",
    kind: "detached",
    needs: {},
    contentType: "text/plain",
    key,
    publicKey: () => pubLine,
    async sign(input: SignInput): Promise<Buffer> {
      const digest = input.sha256.copy().digest();
      const signedData = Buffer.concat([
        MAGIC,
        sshString(namespace),
        sshString(""),
        sshString(HASH_ALG),
        sshString(digest),
      ]);
      const raw = await key.sign(enc.input(signedData));
      const blob = Buffer.concat([
        MAGIC,
        sshUint32(SIG_VERSION),
        sshString(enc.blob),
        sshString(namespace),
        sshString(""),
        sshString(HASH_ALG),
        sshString(enc.signatureBlob(raw)),
      ]);
      const armored = `-----BEGIN SSH SIGNATURE-----\n${wrapBase64(blob.toString("base64"))}\n-----END SSH SIGNATURE-----\n`;
      return Buffer.from(armored, "utf8");
    },
    close: () => key.close(),
  };
}

/** Loads the OpenSSH key file (Ed25519 or RSA) once (the file backend, as `wrap` returns it). */
export async function loadSshsigSigner(
  cfg: SshsigKeyConfig,
  { wrap = asIs, pool }: FileKeyOptions = {},
): Promise<Signer> {
  let pem: string;
  try {
    pem = await readFile(cfg.keyFile, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new KeyLoadError(
      "sshsig",
      cfg.keyFile,
      code === "ENOENT" ? "file not found" : `cannot read file (${code ?? "error"})`,
    );
  }
  let key: ReturnType<typeof parseOpenSshKey>;
  try {
    key = parseOpenSshKey(pem);
  } catch (err) {
    throw new KeyLoadError("sshsig", cfg.keyFile, (err as Error).message);
  }
  return sshsigSignerForKey(
    wrap(await fileKey(key.privateKey, cfg.keyFile, pool)),
    cfg.namespace,
    key.comment,
  );
}
