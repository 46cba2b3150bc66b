import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { canonicalIp } from "../net/address.js";

/** What a token proves: who may use it, from where, until when, issued in which store epoch. */
export interface TokenClaims {
  /** 128 random bits, base64url: names the token's Redis keys. */
  id: string;
  /** The build machine's IP the token is bound to. */
  ip: string;
  /** Issued-at and expiry, seconds since the epoch. */
  iat: number;
  exp: number;
  /** Store epoch id at issue time (DESIGN.md §4). */
  ep: string;
  /** Issuer (build-master user). */
  sub: string;
  /** Formats the token may sign; absent means all. */
  fmt?: string[];
}

/** A token MAC key as `token.secrets` lists it, read: the first signs new tokens, all verify. */
export interface TokenSecret {
  /** Named in each token, so a token is checked with the key that made it. */
  kid: string;
  secret: Buffer;
}

/** Results of the local (no Redis) half of a token check; names match signing_token_checks_total{result}. */
export type LocalRejection = "malformed" | "bad_signature" | "expired" | "ip_mismatch";

export type LocalCheck =
  | { ok: true; claims: TokenClaims; kid: string }
  | { ok: false; result: LocalRejection };

const VERSION = "v1";
const MAX_TOKEN_LENGTH = 2048;

const b64url = (b: Buffer | string) => Buffer.from(b).toString("base64url");

function mac(secret: Buffer, signed: string): Buffer {
  return createHmac("sha256", secret).update(signed).digest();
}

export function newTokenId(): string {
  return randomBytes(16).toString("base64url");
}

export function encodeToken(claims: TokenClaims, key: TokenSecret): string {
  const signed = `${VERSION}.${key.kid}.${b64url(JSON.stringify(claims))}`;
  return `${signed}.${b64url(mac(key.secret, signed))}`;
}

function isClaims(v: unknown): v is TokenClaims {
  if (typeof v !== "object" || v === null) return false;
  const c = v as Record<string, unknown>;
  return (
    typeof c.id === "string" &&
    /^[A-Za-z0-9_-]{22}$/.test(c.id) &&
    typeof c.ip === "string" &&
    canonicalIp(c.ip) === c.ip &&
    Number.isInteger(c.iat) &&
    Number.isInteger(c.exp) &&
    typeof c.ep === "string" &&
    typeof c.sub === "string" &&
    (c.fmt === undefined || (Array.isArray(c.fmt) && c.fmt.every((f) => typeof f === "string")))
  );
}

/** base64url as we write it: no padding, and no bits set past the last byte. */
function isCanonicalBase64url(text: string): boolean {
  return /^[A-Za-z0-9_-]+$/.test(text) && Buffer.from(text, "base64url").toString("base64url") === text;
}

/**
 * Parses a token and checks its MAC in constant time, without looking at expiry or IP:
 * what revocation needs. Unknown kids and bad MACs look alike to the caller. Whitespace around
 * the token (a token file's newline, sent as read) is ignored; inside it, every part must be
 * spelled as we write it, so one token has one spelling (DESIGN.md §3).
 */
export function verifyMac(token: string, secrets: ReadonlyMap<string, Buffer>): LocalCheck {
  if (token.length > MAX_TOKEN_LENGTH) return { ok: false, result: "malformed" };
  const parts = token.trim().split(".");
  if (parts.length !== 4 || parts[0] !== VERSION) return { ok: false, result: "malformed" };
  const [, kid, payload, sig] = parts as [string, string, string, string];
  if (!isCanonicalBase64url(payload) || sig.length !== 43 || !isCanonicalBase64url(sig)) {
    return { ok: false, result: "malformed" };
  }
  const secret = secrets.get(kid);
  if (!secret) return { ok: false, result: "bad_signature" };
  const expected = mac(secret, `${VERSION}.${kid}.${payload}`);
  if (!timingSafeEqual(expected, Buffer.from(sig, "base64url")))
    return { ok: false, result: "bad_signature" };
  let claims: unknown;
  try {
    claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
  } catch {
    return { ok: false, result: "malformed" };
  }
  if (!isClaims(claims)) return { ok: false, result: "malformed" };
  return { ok: true, claims, kid };
}

/** The local half of every token check: MAC, expiry and IP binding, before any Redis call. */
export function verifyTokenLocally(
  token: string,
  secrets: ReadonlyMap<string, Buffer>,
  clientIp: string,
  nowSeconds: number,
): LocalCheck {
  const checked = verifyMac(token, secrets);
  if (!checked.ok) return checked;
  if (checked.claims.exp <= nowSeconds) return { ok: false, result: "expired" };
  // Both sides are canonical: claims are checked so, and the HTTP edge normalises the peer.
  if (checked.claims.ip !== clientIp) return { ok: false, result: "ip_mismatch" };
  return checked;
}
