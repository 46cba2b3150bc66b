import { constants, type KeyObject, privateEncrypt } from "node:crypto";

/** DER prefix of the PKCS#1 v1.5 DigestInfo for SHA-256 (RFC 8017 §9.2). */
export const SHA256_DIGEST_INFO = Buffer.from("3031300d060960864801650304020105000420", "hex");

/** PKCS#1 v1.5 over the DigestInfo: privateEncrypt with type-1 padding is exactly that signature. */
export function rsaPkcs1Sign(privateKey: KeyObject, digest: Buffer): Buffer {
  return privateEncrypt(
    { key: privateKey, padding: constants.RSA_PKCS1_PADDING },
    Buffer.concat([SHA256_DIGEST_INFO, digest]),
  );
}
