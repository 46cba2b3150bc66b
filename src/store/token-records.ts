import { StoreCorruptError } from "./errors.js";
import type { StoreKeys } from "./keys.js";
import type { RedisClient } from "./redis.js";
import { LuaScript } from "./script.js";

/** One step of a token's nonce chain, without its MAC (the tokens domain adds and checks it). */
export interface ChainStep {
  counter: number;
  /** Random per chain: a chain re-seeded after a loss gets a new one, so older nonces are dead. */
  lineage: string;
  /** Random per step: a chain cannot be re-derived from the nonces seen before. */
  random: string;
}

/** A nonce presented with an upload (its MAC already checked) and what it would advance to. */
export interface PresentedNonce extends ChainStep {
  /** sha256 of the upload: the previous nonce is accepted once more for the same file only. */
  sha256: string;
  /** Fresh randomness for the next step, and the lineage should the chain be re-seeded. */
  fresh: { lineage: string; random: string };
}

/** What Redis says about a token in one round trip: revocation, presence and the nonce chain. */
export type StoredTokenState =
  | { state: "ok"; next?: ChainStep }
  | { state: "revoked" }
  | { state: "invalidated" }
  | { state: "missing" }
  | { state: "nonce_mismatch" };

/*
 * KEYS: token, revoked, nonce, epoch.
 * ARGV: mode ('check' | 'sign'), record to heal with ('' = do not heal), token expiry (ms),
 *       presented counter, lineage, random, sha256 of the upload, fresh lineage, fresh random,
 *       token issue time (ms).
 * Keys of an unexpected type are reported, never read past (STORE_CORRUPT). A token issued
 * before the epoch's minIat (an invalidation) is refused here, in the same step that would heal
 * or accept it, so no heal or restore decided on an older epoch can bring it back. The nonce
 * rules (DESIGN.md §4):
 * - the current nonce advances the chain (same lineage, fresh random);
 * - the previous nonce is accepted once more for the same file, answering the same next nonce;
 * - a missing chain, or one the monitor restored ('s' = restored), is re-seeded by the first
 *   MAC-valid nonce at or beyond its counter, under a new lineage: every other holder of an old
 *   nonce then gets a mismatch, so a replay after a loss is visible to the owner;
 * - a counter ahead of a live chain of the same lineage means the store lost the last steps (a
 *   failover before they were replicated): re-seeded the same way;
 * - anything else is a mismatch.
 */
const CHECK_TOKEN = new LuaScript(
  "signingCheckToken",
  4,
  `
local function kind(k) return redis.call('TYPE', k).ok end
local tk, rk, nk = kind(KEYS[1]), kind(KEYS[2]), kind(KEYS[3])
if rk ~= 'none' and rk ~= 'string' then return {'corrupt', KEYS[2], 'a ' .. rk .. ', not a string'} end
if tk ~= 'none' and tk ~= 'string' then return {'corrupt', KEYS[1], 'a ' .. tk .. ', not a string'} end
if nk ~= 'none' and nk ~= 'hash' then return {'corrupt', KEYS[3], 'a ' .. nk .. ', not a hash'} end
if rk == 'string' then return {'revoked'} end
local ek = kind(KEYS[4])
if ek ~= 'none' and ek ~= 'hash' then return {'corrupt', KEYS[4], 'a ' .. ek .. ', not a hash'} end
local minIat = redis.call('HGET', KEYS[4], 'minIat')
if minIat and not string.match(minIat, '^%d+$') then return {'corrupt', KEYS[4], 'a minIat that is not a number'} end
if minIat and tonumber(ARGV[10]) < tonumber(minIat) then return {'invalidated'} end
if tk == 'none' then
  if ARGV[2] == '' then return {'missing'} end
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
end
if ARGV[1] ~= 'sign' then return {'ok'} end
local pc, pl, pr, digest = tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7]
local presented = ARGV[4] .. '.' .. pl .. '.' .. pr
local function step(n, l, c)
  -- A chain older nodes kept has no lineage: it gets one with its first step here.
  if l == '' then l = ARGV[8] end
  redis.call('HSET', KEYS[3], 'n', n, 'l', l, 'c', c, 'p', presented, 'd', digest, 'r', '0')
  redis.call('HDEL', KEYS[3], 's')
  redis.call('PEXPIREAT', KEYS[3], ARGV[3])
  return {'ok', tostring(n), l, c}
end
if nk == 'none' then return step(pc + 1, ARGV[8], ARGV[9]) end
local rec = redis.call('HMGET', KEYS[3], 'n', 'l', 'c', 'p', 'd', 'r', 's')
if not rec[1] or not string.match(rec[1], '^%d+$') then return {'corrupt', KEYS[3], 'a nonce chain without a counter'} end
local n = tonumber(rec[1])
local l, c = rec[2] or '', rec[3] or ''
if presented == rec[4] and digest == rec[5] and rec[6] == '0' then
  redis.call('HSET', KEYS[3], 'r', '1')
  return {'ok', tostring(n), l, c}
end
if rec[7] == 'restored' then
  if pc >= n then return step(pc + 1, ARGV[8], ARGV[9]) end
  return {'nonce_mismatch'}
end
if pl == l and pc == n and pr == c then return step(n + 1, l, ARGV[9]) end
if pl == l and pc > n then return step(pc + 1, ARGV[8], ARGV[9]) end
return {'nonce_mismatch'}
`,
);

/** The token a check is about, as the store needs it. */
export interface StoredToken {
  id: string;
  expiresAtMs: number;
  /** Compared with the epoch's minIat: tokens issued before an invalidation are refused. */
  issuedAtMs: number;
}

/**
 * What a token check does besides reading the record: advance a nonce chain, heal a lost record.
 */
export interface CheckOptions {
  /** With a nonce: an upload, which checks and advances the chain. Without: a read. */
  nonce?: PresentedNonce;
  /** The record to re-insert when the token is missing (a heal decided by the caller). */
  healWith?: string;
}

function parseReply(reply: unknown): StoredTokenState {
  const [state, a, b, c] = (Array.isArray(reply) ? reply : []) as unknown[];
  if (state === "ok" && a === undefined) return { state };
  if (state === "ok" && typeof b === "string" && typeof c === "string" && /^[0-9]{1,15}$/.test(String(a)))
    return { state, next: { counter: Number(a), lineage: b, random: c } };
  if (state === "revoked" || state === "invalidated" || state === "missing" || state === "nonce_mismatch")
    return { state };
  if (state === "corrupt") throw new StoreCorruptError(String(a), String(b));
  throw new StoreCorruptError(
    "(token check script)",
    `unexpected reply ${JSON.stringify(reply).slice(0, 100)}`,
  );
}

/** A token's keys in Redis: its record, its revocation marker and its nonce chain. */
export class TokenRecords {
  constructor(
    private readonly client: RedisClient,
    private readonly keys: StoreKeys,
  ) {}

  async save(id: string, expiresAtMs: number, record: string): Promise<void> {
    await this.client.set(this.keys.token(id), record, "PXAT", expiresAtMs);
  }

  async check(token: StoredToken, opts: CheckOptions = {}): Promise<StoredTokenState> {
    const { id, expiresAtMs, issuedAtMs } = token;
    const n = opts.nonce;
    const reply = await CHECK_TOKEN.run(
      this.client,
      [this.keys.token(id), this.keys.revoked(id), this.keys.nonce(id), this.keys.epoch()],
      [
        n ? "sign" : "check",
        opts.healWith ?? "",
        expiresAtMs,
        n?.counter ?? 0,
        n?.lineage ?? "",
        n?.random ?? "",
        n?.sha256 ?? "",
        n?.fresh.lineage ?? "",
        n?.fresh.random ?? "",
        issuedAtMs,
      ],
    );
    return parseReply(reply);
  }

  /**
   * Revocation is the marker alone, kept until the token's expiry: a token record that is
   * missing heals, so deleting it would revoke nothing. The caller makes it durable.
   */
  async revoke(id: string, expiresAtMs: number, reason: string, client = this.client): Promise<void> {
    await client.set(this.keys.revoked(id), reason, "PXAT", expiresAtMs);
  }
}
