import type { KeyObject } from "node:crypto";
import { p256 } from "@noble/curves/nist";

/**
 * ECDSA P-256 verification of a digest (FIPS 186-5 §6.4.2), for OpenPGP signatures (RFC 6637
 * §5). node's crypto verifies only a message it hashes itself, and signtool holds the input's
 * running SHA-256, not its bytes: checking through node would read a large file twice. So the
 * digest goes to @noble/curves (audited, no dependencies of its own but @noble/hashes), which
 * verifies a pre-hashed message (`prehash: false`).
 */

/** The 256-bit order of P-256's group: a longer digest is cut to its leftmost 32 bytes. */
const DIGEST_BYTES = 32;

/**
 * Whether `signature` (r‖s, 32 + 32 bytes) is `key`'s ECDSA signature of `digest`; a digest
 * longer than the curve's 256 bits is cut to its leftmost 256, as FIPS 186 and RFC 6637 say.
 */
export function verifyP256Digest(key: KeyObject, digest: Buffer, signature: Buffer): boolean {
  const jwk = key.export({ format: "jwk" });
  if (jwk.crv !== "P-256" || signature.length !== 64 || !jwk.x || !jwk.y) return false;
  const point = Buffer.concat([
    Buffer.of(4),
    Buffer.from(jwk.x, "base64url"),
    Buffer.from(jwk.y, "base64url"),
  ]);
  try {
    return p256.verify(signature, digest.subarray(0, DIGEST_BYTES), point, {
      prehash: false,
      lowS: false,
      format: "compact",
    });
  } catch {
    return false; // r or s out of range, or a point not on the curve
  }
}
