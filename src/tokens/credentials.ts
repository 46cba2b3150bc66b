import { randomBytes, type ScryptOptions, scrypt, timingSafeEqual } from "node:crypto";

import { MAXMEM, type PasswordHash, PasswordHashError, parsePasswordHash } from "../config/password-hash.js";

export { PasswordHashError, parsePasswordHash } from "../config/password-hash.js";

const DEFAULT = { N: 16384, r: 8, p: 1 };

function derive(password: string, salt: Buffer, opts: ScryptOptions, length: number): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(password, salt, length, { ...opts, maxmem: MAXMEM }, (err, key) =>
      err ? reject(err) : resolve(key),
    ),
  );
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await derive(password, salt, DEFAULT, 32);
  return `scrypt$${DEFAULT.N}$${DEFAULT.r}$${DEFAULT.p}$${salt.toString("base64")}$${hash.toString("base64")}`;
}

/** False for a wrong password, and for a stored hash scrypt cannot use: it never throws for one. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  let h: PasswordHash;
  try {
    h = parsePasswordHash(stored);
  } catch (e) {
    if (e instanceof PasswordHashError) return false;
    throw e;
  }
  const actual = await derive(password, h.salt, { N: h.N, r: h.r, p: h.p }, h.hash.length);
  return timingSafeEqual(actual, h.hash);
}

/**
 * The issuer a user/password pair belongs to, or undefined. An unknown user costs the same
 * scrypt as a known one, so timing does not tell which users exist.
 */
export async function findIssuer<T extends { user: string; passwordHash: string }>(
  user: string,
  password: string,
  credentials: readonly T[],
): Promise<T | undefined> {
  // Several entries for one user: an old and a new password during a rotation.
  const entries = credentials.filter((c) => c.user === user);
  if (entries.length === 0) {
    await verifyPassword(password, DUMMY_HASH);
    return undefined;
  }
  for (const entry of entries) if (await verifyPassword(password, entry.passwordHash)) return entry;
  return undefined;
}

const DUMMY_HASH = `scrypt$${DEFAULT.N}$${DEFAULT.r}$${DEFAULT.p}$${Buffer.alloc(16).toString("base64")}$${Buffer.alloc(32).toString("base64")}`;
