import { createPublicKey, type KeyObject, sign } from "node:crypto";
import { type KeyAlgorithm, KeyBackendUnavailableError, type SigningKey } from "./key.js";
import type { SigningPool } from "./pool.js";
import { rsaPkcs1Sign } from "./rsa.js";

function algorithmOf(privateKey: KeyObject): KeyAlgorithm {
  switch (privateKey.asymmetricKeyType) {
    case "ed25519":
      return "ed25519";
    case "rsa":
      return "rsa-pkcs1-sha256";
    default:
      throw new Error(`a ${privateKey.asymmetricKeyType} key (supported in files: Ed25519, RSA)`);
  }
}

/** An RSA file key signing in the pool's threads: milliseconds per signature, off the event loop. */
async function pooledRsaKey(privateKey: KeyObject, location: string, pool: SigningPool): Promise<SigningKey> {
  const key = pool.newKeyId();
  await pool.everyThread({ op: "file-open", key, privateKey }, { remember: key });
  let closed: Promise<void> | undefined;
  return {
    backend: "file",
    algorithm: "rsa-pkcs1-sha256",
    publicKey: createPublicKey(privateKey),
    location,
    async sign(digest) {
      try {
        return Buffer.from(await pool.run({ op: "file-sign", key, input: digest }));
      } catch (err) {
        throw new KeyBackendUnavailableError(location, (err as Error).message);
      }
    },
    available: () => true,
    check: async () => ({ ok: true, detail: "in memory" }),
    close() {
      pool.forget(key);
      closed ??= pool
        .everyThread({ op: "file-close", key })
        .then(() => {})
        .catch(() => {});
      return closed;
    },
  };
}

/**
 * A key read from a file (the `file` backend): the private key is in this process's memory.
 * Ed25519 signs on the event loop on purpose: a signature costs ~40 µs, less than handing it
 * to another thread would. RSA costs milliseconds: it signs in the pool's threads, or on the
 * event loop when the node has no pool (signing.workers 0, for comparison only).
 */
export async function fileKey(
  privateKey: KeyObject,
  location: string,
  pool?: SigningPool,
): Promise<SigningKey> {
  const algorithm = algorithmOf(privateKey);
  if (algorithm === "rsa-pkcs1-sha256" && pool) return pooledRsaKey(privateKey, location, pool);
  const signRaw =
    algorithm === "ed25519"
      ? (message: Buffer) => sign(null, message, privateKey)
      : (digest: Buffer) => rsaPkcs1Sign(privateKey, digest);
  return {
    backend: "file",
    algorithm,
    publicKey: createPublicKey(privateKey),
    location,
    sign: async (input) => signRaw(input),
    available: () => true,
    check: async () => ({ ok: true, detail: "in memory" }),
    close: async () => {},
  };
}
