import type { KeyObject } from "node:crypto";

/**
 * ECDSA P-256 verification of a digest (FIPS 186-5 §6.4.2), for OpenPGP signatures (RFC 6637
 * §5): node's crypto verifies only a message it hashes itself, and signtool holds the input's
 * running SHA-256, not its bytes, so checking through node would read a large file twice.
 * Everything here is public (key, digest, signature): plain BigInt arithmetic, which is not
 * constant-time, leaks nothing. Jacobian coordinates; about 2 ms a signature.
 */

const P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn;
const N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
const G: Point = [
  0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296n,
  0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5n,
  1n,
];

/** X, Y, Z with x = X/Z², y = Y/Z³; Z = 0 is the point at infinity. */
type Point = [bigint, bigint, bigint];
const INFINITY: Point = [1n, 1n, 0n];

const mod = (a: bigint, m = P) => {
  const r = a % m;
  return r < 0n ? r + m : r;
};

/** a⁻¹ mod m (m prime, a not a multiple of m), by the extended Euclidean algorithm. */
function inverse(a: bigint, m: bigint): bigint {
  let [r0, r1, t0, t1] = [m, mod(a, m), 0n, 1n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1, t0, t1] = [r1, r0 - q * r1, t1, t0 - q * t1];
  }
  return mod(t0, m);
}

/** 2·(X, Y, Z) on a curve with a = −3. */
function double([x, y, z]: Point): Point {
  if (z === 0n || y === 0n) return INFINITY;
  const yy = mod(y * y);
  const s = mod(4n * x * yy);
  const zz = mod(z * z);
  const m = mod(3n * (x - zz) * (x + zz));
  const x3 = mod(m * m - 2n * s);
  return [x3, mod(m * (s - x3) - 8n * yy * yy), mod(2n * y * z)];
}

function add(a: Point, b: Point): Point {
  if (a[2] === 0n) return b;
  if (b[2] === 0n) return a;
  const [za2, zb2] = [mod(a[2] * a[2]), mod(b[2] * b[2])];
  const u1 = mod(a[0] * zb2);
  const u2 = mod(b[0] * za2);
  const s1 = mod(a[1] * zb2 * b[2]);
  const s2 = mod(b[1] * za2 * a[2]);
  const h = mod(u2 - u1);
  const r = mod(s2 - s1);
  if (h === 0n) return r === 0n ? double(a) : INFINITY;
  const [hh, hhh] = [mod(h * h), mod(h * h * h)];
  const x3 = mod(r * r - hhh - 2n * u1 * hh);
  return [x3, mod(r * (u1 * hh - x3) - s1 * hhh), mod(h * a[2] * b[2])];
}

/** u1·G + u2·Q in one pass over the bits (Shamir's trick). */
function twoMultiples(u1: bigint, u2: bigint, q: Point): Point {
  const both = add(G, q);
  let acc = INFINITY;
  for (let bit = 255n; bit >= 0n; bit--) {
    acc = double(acc);
    const [a, b] = [(u1 >> bit) & 1n, (u2 >> bit) & 1n];
    if (a && b) acc = add(acc, both);
    else if (a) acc = add(acc, G);
    else if (b) acc = add(acc, q);
  }
  return acc;
}

const toBig = (b: Buffer) => BigInt(`0x${b.toString("hex") || "0"}`);

/**
 * Whether `signature` (r‖s, 32 + 32 bytes) is `key`'s ECDSA signature of `digest`; a digest
 * longer than the curve's 256 bits is cut to its leftmost 256, as FIPS 186 and RFC 6637 say.
 * `key` is a node P-256 public key: node checked its point is on the curve when it was made.
 */
export function verifyP256Digest(key: KeyObject, digest: Buffer, signature: Buffer): boolean {
  const jwk = key.export({ format: "jwk" });
  if (jwk.crv !== "P-256" || signature.length !== 64) return false;
  const [r, s] = [toBig(signature.subarray(0, 32)), toBig(signature.subarray(32))];
  if (r <= 0n || r >= N || s <= 0n || s >= N) return false;
  const e = toBig(digest.subarray(0, 32));
  const w = inverse(s, N);
  const coordinate = (c: string | undefined) => toBig(Buffer.from(c ?? "", "base64url"));
  const q: Point = [coordinate(jwk.x), coordinate(jwk.y), 1n];
  const [x, , z] = twoMultiples(mod(e * w, N), mod(r * w, N), q);
  if (z === 0n) return false;
  return mod(mod(x * inverse(mod(z * z), P)), N) === r;
}
