import { createHmac, timingSafeEqual } from "node:crypto";

/**
 * Nonces are `<counter>.<mac>`: the counter orders the chain, the MAC (under the token's
 * secret) lets a node re-seed a chain that Redis lost from the nonce the client presents,
 * without letting anyone invent one. The empty nonce is counter 0, the start of every chain.
 */
export function encodeNonce(tokenId: string, counter: number, secret: Buffer): string {
  return `${counter}.${nonceMac(tokenId, counter, secret)}`;
}

/** The counter a presented nonce stands for, or undefined when it is not one of ours. */
export function decodeNonce(tokenId: string, nonce: string, secret: Buffer): number | undefined {
  if (nonce === "") return 0;
  const m = /^([1-9][0-9]{0,14})\.([A-Za-z0-9_-]{22})$/.exec(nonce.trim());
  if (!m) return undefined;
  const counter = Number(m[1]);
  const expected = Buffer.from(nonceMac(tokenId, counter, secret));
  return timingSafeEqual(expected, Buffer.from(m[2] as string)) ? counter : undefined;
}

function nonceMac(tokenId: string, counter: number, secret: Buffer): string {
  return createHmac("sha256", secret).update(`nonce.${tokenId}.${counter}`).digest("base64url").slice(0, 22);
}
