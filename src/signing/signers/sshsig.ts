import { sign as cryptoSign, type Hash } from "node:crypto";
import { readFile } from "node:fs/promises";
import {
  parseOpenSshEd25519,
  publicKeyLine,
  sshFingerprint,
  sshString,
  sshUint32,
  wrapBase64,
} from "../openssh-key.js";
import { KeyLoadError, type Signer, type SshsigKeyConfig } from "../signer.js";

const MAGIC = Buffer.from("SSHSIG", "latin1");
// SSHSIG allows sha256 or sha512; sha256 is the hash the node already runs over every upload.
const HASH_ALG = "sha256";
const SIG_VERSION = 1;

/** Loads the OpenSSH ed25519 key once; the signer produces armored SSHSIG signatures (as `ssh-keygen -Y sign`). */
export async function loadSshsigSigner(cfg: SshsigKeyConfig): Promise<Signer> {
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
  let key: ReturnType<typeof parseOpenSshEd25519>;
  try {
    key = parseOpenSshEd25519(pem);
  } catch (err) {
    throw new KeyLoadError("sshsig", cfg.keyFile, (err as Error).message);
  }
  const { publicKeyBlob, privateKey, comment } = key;
  const namespace = cfg.namespace;
  const fingerprint = sshFingerprint(publicKeyBlob);
  const pubLine = publicKeyLine(publicKeyBlob, comment);

  return {
    format: "sshsig",
    fingerprint,
    suffix: ".sig",
    publicKey: () => pubLine,
    async sign(inputSha256: Hash): Promise<Buffer> {
      const digest = inputSha256.copy().digest();
      const signedData = Buffer.concat([
        MAGIC,
        sshString(namespace),
        sshString(""),
        sshString(HASH_ALG),
        sshString(digest),
      ]);
      // Synchronous on purpose: ~40 µs, less than handing the call to libuv's thread pool costs.
      const sig = cryptoSign(null, signedData, privateKey);
      const blob = Buffer.concat([
        MAGIC,
        sshUint32(SIG_VERSION),
        sshString(publicKeyBlob),
        sshString(namespace),
        sshString(""),
        sshString(HASH_ALG),
        sshString(Buffer.concat([sshString("ssh-ed25519"), sshString(sig)])),
      ]);
      const armored = `-----BEGIN SSH SIGNATURE-----\n${wrapBase64(blob.toString("base64"))}\n-----END SSH SIGNATURE-----\n`;
      return Buffer.from(armored, "utf8");
    },
  };
}
