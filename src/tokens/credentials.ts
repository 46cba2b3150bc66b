import { randomBytes, type ScryptOptions, scrypt, timingSafeEqual } from "node:crypto";

/** Stored form: `scrypt$N$r$p$<salt b64>$<hash b64>`: the parameters travel with the hash. */
const DEFAULT = { N: 16384, r: 8, p: 1 };

function derive(password: string, salt: Buffer, opts: ScryptOptions, length: number): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(password, salt, length, { ...opts, maxmem: 256 * 1024 * 1024 }, (err, key) =>
      err ? reject(err) : resolve(key),
    ),
  );
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await derive(password, salt, DEFAULT, 32);
  return `scrypt$${DEFAULT.N}$${DEFAULT.r}$${DEFAULT.p}$${salt.toString("base64")}$${hash.toString("base64")}`;
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split("$");
  if (parts.length !== 6 || parts[0] !== "scrypt") return false;
  const [N, r, p] = parts.slice(1, 4).map(Number) as [number, number, number];
  const salt = Buffer.from(parts[4] as string, "base64");
  const expected = Buffer.from(parts[5] as string, "base64");
  if (!expected.length) return false;
  const actual = await derive(password, salt, { N, r, p }, expected.length);
  return timingSafeEqual(actual, expected);
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
