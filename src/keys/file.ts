import { constants, createPublicKey, type KeyObject, privateEncrypt, sign } from "node:crypto";
import type { KeyAlgorithm, SigningKey } from "./key.js";

/** DER prefix of the PKCS#1 v1.5 DigestInfo for SHA-256 (RFC 8017 §9.2). */
export const SHA256_DIGEST_INFO = Buffer.from("3031300d060960864801650304020105000420", "hex");

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

/**
 * A key read from a file (the `file` backend): the private key is in this process's memory.
 * Signing is synchronous on purpose: an Ed25519 signature costs ~40 µs, less than handing it
 * to another thread would.
 */
export function fileKey(privateKey: KeyObject, location: string): SigningKey {
  const algorithm = algorithmOf(privateKey);
  const signRaw =
    algorithm === "ed25519"
      ? (message: Buffer) => sign(null, message, privateKey)
      : // PKCS#1 v1.5 over the DigestInfo: privateEncrypt with type-1 padding is exactly that signature.
        (digest: Buffer) =>
          privateEncrypt(
            { key: privateKey, padding: constants.RSA_PKCS1_PADDING },
            Buffer.concat([SHA256_DIGEST_INFO, digest]),
          );
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
