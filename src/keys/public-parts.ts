import { createPublicKey, type KeyObject } from "node:crypto";
import type { KeyAlgorithm } from "./key.js";

/** The raw numbers of a public key, as the formats' encodings (OpenPGP, SSH) want them. */
export type PublicParts =
  | { algorithm: "ed25519"; point: Buffer }
  | { algorithm: "ecdsa-p256"; point: Buffer }
  | { algorithm: "rsa-pkcs1-sha256"; n: Buffer; e: Buffer };

const fromB64 = (s: string | undefined) => Buffer.from(s ?? "", "base64url");

/** `point` is the 32-byte Ed25519 key, or the uncompressed P-256 point 0x04‖X‖Y. */
export function publicParts(algorithm: KeyAlgorithm, key: KeyObject): PublicParts {
  const jwk = key.export({ format: "jwk" });
  switch (algorithm) {
    case "ed25519":
      return { algorithm, point: fromB64(jwk.x) };
    case "ecdsa-p256":
      return { algorithm, point: Buffer.concat([Buffer.from([4]), fromB64(jwk.x), fromB64(jwk.y)]) };
    case "rsa-pkcs1-sha256":
      return { algorithm, n: fromB64(jwk.n), e: fromB64(jwk.e) };
  }
}

/** The algorithm a public key is for, or why it is none of ours. */
export function algorithmOfPublicKey(key: KeyObject): KeyAlgorithm {
  const type = key.asymmetricKeyType;
  if (type === "ed25519") return "ed25519";
  if (type === "rsa") return "rsa-pkcs1-sha256";
  if (type === "ec" && key.asymmetricKeyDetails?.namedCurve === "prime256v1") return "ecdsa-p256";
  throw new Error(`a ${type} public key (supported: Ed25519, ECDSA P-256, RSA)`);
}

/** A public key from its raw numbers (what a PKCS#11 token holds in CKA_EC_POINT, CKA_MODULUS…). */
export function publicKeyFromParts(parts: PublicParts): KeyObject {
  const b64 = (b: Buffer) => b.toString("base64url");
  switch (parts.algorithm) {
    case "ed25519":
      return createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: b64(parts.point) }, format: "jwk" });
    case "ecdsa-p256": {
      const { point } = parts;
      if (point.length !== 65 || point[0] !== 4) throw new Error("not an uncompressed P-256 point");
      const jwk = { kty: "EC", crv: "P-256", x: b64(point.subarray(1, 33)), y: b64(point.subarray(33)) };
      return createPublicKey({ key: jwk, format: "jwk" });
    }
    case "rsa-pkcs1-sha256":
      return createPublicKey({ key: { kty: "RSA", n: b64(parts.n), e: b64(parts.e) }, format: "jwk" });
  }
}
