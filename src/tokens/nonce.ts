import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { ChainStep } from "../store/token-records.js";

/**
 * Nonces are `<counter>.<lineage>.<random>.<mac>` (DESIGN.md §4): the counter orders the chain,
 * the lineage names the chain (new after a re-seed, so nonces of the chain before are dead), the
 * random part makes every step unpredictable, and the MAC (under the token's secret) lets a node
 * re-seed a chain the store lost from the nonce a client presents, without letting anyone
 * invent one. The empty nonce is counter 0, the start of every chain.
 */
export const NONCE_SHAPE =
  /^(|[1-9][0-9]{0,14}\.[A-Za-z0-9_-]{11}\.[A-Za-z0-9_-]{11}\.[A-Za-z0-9_-]{22}|[1-9][0-9]{0,14}\.[A-Za-z0-9_-]{22})$/;

/**
 * `<counter>.<mac>`, as nodes before lineages handed them out: still taken, so that a chain
 * in use across an upgrade goes on (its first step on a new node gives it a lineage). It can go
 * one `token.maxDuration` after the last node was upgraded.
 */
const LEGACY = /^([1-9][0-9]{0,14})\.([A-Za-z0-9_-]{22})$/;

const START: ChainStep = { counter: 0, lineage: "", random: "" };

/** 64 random bits, base64url: one lineage or one step's randomness. */
export function nonceRandom(): string {
  return randomBytes(8).toString("base64url");
}

export function encodeNonce(tokenId: string, step: ChainStep, secret: Buffer): string {
  return `${step.counter}.${step.lineage}.${step.random}.${nonceMac(tokenId, step, secret)}`;
}

/** The chain step a presented nonce stands for, or undefined when it is not one of ours. */
export function decodeNonce(tokenId: string, nonce: string, secret: Buffer): ChainStep | undefined {
  const text = nonce.trim();
  if (text === "") return START;
  const legacy = LEGACY.exec(text);
  if (legacy) return decodeLegacy(tokenId, Number(legacy[1]), legacy[2] as string, secret);
  if (!NONCE_SHAPE.test(text)) return undefined;
  const [counter, lineage, random, mac] = text.split(".") as [string, string, string, string];
  const step = { counter: Number(counter), lineage, random };
  const expected = Buffer.from(nonceMac(tokenId, step, secret));
  return timingSafeEqual(expected, Buffer.from(mac)) ? step : undefined;
}

function nonceMac(tokenId: string, s: ChainStep, secret: Buffer): string {
  return createHmac("sha256", secret)
    .update(`nonce.${tokenId}.${s.counter}.${s.lineage}.${s.random}`)
    .digest("base64url")
    .slice(0, 22);
}

function decodeLegacy(tokenId: string, counter: number, mac: string, secret: Buffer): ChainStep | undefined {
  const expected = createHmac("sha256", secret)
    .update(`nonce.${tokenId}.${counter}`)
    .digest("base64url")
    .slice(0, 22);
  return timingSafeEqual(Buffer.from(expected), Buffer.from(mac))
    ? { counter, lineage: "", random: "" }
    : undefined;
}
