import { SigningClusterError } from "../errors.js";

/**
 * The stored form of an issuer's password, `scrypt$N$r$p$<salt b64>$<hash b64>`: read here, by
 * the config check at start-up and by verifyPassword (src/tokens/credentials.ts) alike.
 */
const FORMAT = "scrypt$N$r$p$<salt base64>$<hash base64>";
/** The memory scrypt may use here; parsePasswordHash refuses parameters that need more. */
export const MAXMEM = 256 * 1024 * 1024;

/** A stored password hash taken apart; parsePasswordHash makes sure scrypt accepts it. */
export interface PasswordHash {
  N: number;
  r: number;
  p: number;
  salt: Buffer;
  hash: Buffer;
}

/** A stored password hash that scrypt cannot use, with every reason (never the hash itself). */
export class PasswordHashError extends SigningClusterError<"PASSWORD_HASH_INVALID"> {
  constructor(readonly problems: string[]) {
    super("PASSWORD_HASH_INVALID", `not a usable scrypt hash (${FORMAT}): ${problems.join("; ")}`);
  }
}

/**
 * The one reading of the stored form, for the config check at start-up and for verifyPassword:
 * what passes here is what scrypt accepts, so a bad hash is refused when the node starts rather
 * than failing every POST /token.
 */
export function parsePasswordHash(stored: string): PasswordHash {
  const parts = stored.split("$");
  if (parts.length !== 6 || parts[0] !== "scrypt") {
    throw new PasswordHashError(['not 6 fields separated by "$", the first "scrypt"']);
  }
  const problems: string[] = [];
  const N = positiveInteger("N", parts[1] as string, problems);
  const r = positiveInteger("r", parts[2] as string, problems);
  const p = positiveInteger("p", parts[3] as string, problems);
  if (N !== undefined && !isPowerOfTwo(N)) problems.push(`N must be a power of two ≥ 2, not ${N}`);
  else if (N !== undefined && r !== undefined && p !== undefined) problems.push(...scryptLimits(N, r, p));
  const salt = canonicalBase64("salt", parts[4] as string, problems);
  const hash = canonicalBase64("hash", parts[5] as string, problems);
  if (problems.length || N === undefined || r === undefined || p === undefined || !salt || !hash) {
    throw new PasswordHashError(problems);
  }
  return { N, r, p, salt, hash };
}

function positiveInteger(name: string, text: string, problems: string[]): number | undefined {
  const n = Number(text);
  if (/^[1-9][0-9]*$/.test(text) && Number.isSafeInteger(n)) return n;
  // Not echoed: in a hash with fields out of place this could be salt or hash.
  problems.push(`${name} must be a positive integer`);
  return undefined;
}

function isPowerOfTwo(n: number): boolean {
  return n >= 2 && (BigInt(n) & (BigInt(n) - 1n)) === 0n;
}

/**
 * OpenSSL's own checks (EVP_PBE_scrypt, behind node:crypto), not Node's documented estimate
 * 128·N·r: parameters just under that estimate are still refused by scrypt.
 */
function scryptLimits(N: number, r: number, p: number): string[] {
  if (16 * r < 64 && N >= 2 ** (16 * r)) return [`N must be below 2^(16·r) = ${2 ** (16 * r)} for r=${r}`];
  const bytes = 128 * r * (N + p + 2);
  if (bytes <= MAXMEM) return [];
  const mib = (b: number) => `${Math.ceil(b / 2 ** 20)} MiB`;
  return [
    `N=${N}, r=${r}, p=${p} need ${mib(bytes)} (128·r·(N+p+2) bytes), above scrypt's ${mib(MAXMEM)} here`,
  ];
}

function canonicalBase64(name: string, text: string, problems: string[]): Buffer | undefined {
  const bytes = Buffer.from(text, "base64");
  // Buffer.from skips what is not base64; only an exact round trip proves the text was.
  if (text.length && bytes.toString("base64") === text) return bytes;
  problems.push(text.length ? `${name} is not canonical base64` : `${name} is empty`);
  return undefined;
}
