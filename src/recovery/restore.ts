import type { StoreKeys } from "../src/store/keys.js";
import type { RedisClient } from "../src/store/redis.js";
import { LuaScript } from "../src/store/script.js";
import type { Snapshot } from "./snapshot.js";

// Only the epoch we decided about, and only while nobody has decided yet: two monitors, or a
// monitor and an operator, cannot both act on one data loss.
const SETTLE_EPOCH = new LuaScript(`
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= 'fresh' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'minIat', ARGV[3]) end
return 1
`);

// A chain a node already re-seeded from a client's nonce may be ahead of the snapshot: keep it.
const RESTORE_NONCE = new LuaScript(`
local current = tonumber(redis.call('HGET', KEYS[1], 'n'))
if current and current >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'n', ARGV[1], 'd', ARGV[2], 'r', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 1
`);

export interface ReseedResult {
  tokens: number;
  revoked: number;
  nonces: number;
  skippedExpired: number;
}

/**
 * Puts a snapshot back: revocations first (a revoked token must never be restored before its
 * marker), then tokens (without overwriting a copy a node already healed) and nonces, each
 * with its remaining lifetime; entries already expired are skipped. Safe to run twice.
 */
export async function reseed(
  client: RedisClient,
  keys: StoreKeys,
  snap: Snapshot,
  now = Date.now(),
): Promise<ReseedResult> {
  const live = <T extends { expiresAt: number }>(list: T[]) => list.filter((e) => e.expiresAt > now + 50);
  const revoked = live(snap.revoked);
  const tokens = live(snap.tokens);
  const nonces = live(snap.nonces);
  const skippedExpired =
    snap.revoked.length +
    snap.tokens.length +
    snap.nonces.length -
    revoked.length -
    tokens.length -
    nonces.length;

  const inBatches = async <T>(list: T[], add: (pipe: ReturnType<RedisClient["pipeline"]>, e: T) => void) => {
    for (let i = 0; i < list.length; i += 500) {
      const pipe = client.pipeline();
      for (const e of list.slice(i, i + 500)) add(pipe, e);
      for (const [err] of (await pipe.exec()) ?? []) if (err) throw err;
    }
  };
  await inBatches(revoked, (pipe, r) => pipe.set(keys.revoked(r.id), r.reason, "PXAT", r.expiresAt));
  await inBatches(tokens, (pipe, t) => pipe.set(keys.token(t.id), t.value, "PXAT", t.expiresAt, "NX"));
  for (const n of nonces) {
    await RESTORE_NONCE.run(client, [keys.nonce(n.id)], [n.n, n.d, n.r, n.expiresAt]);
  }
  return { tokens: tokens.length, revoked: revoked.length, nonces: nonces.length, skippedExpired };
}

/** Marks epoch `epochId` restored or invalidated, if it is still the current, undecided one. */
export async function settleEpoch(
  client: RedisClient,
  keys: StoreKeys,
  epochId: string,
  state: "restored" | "invalidated",
  minIatMs?: number,
): Promise<boolean> {
  return (await SETTLE_EPOCH.run(client, [keys.epoch()], [epochId, state, minIatMs ?? ""])) === 1;
}

/** One monitor acts on a given data loss; the lock names the epoch, so a later loss is a new lock. */
export async function lockEpoch(
  client: RedisClient,
  keys: StoreKeys,
  epochId: string,
  owner: string,
  ttlMs = 60_000,
): Promise<boolean> {
  const key = lockKey(keys, epochId);
  if ((await client.set(key, owner, "PX", ttlMs, "NX")) === "OK") return true;
  // Ours from an attempt that failed half-way: take it up again.
  return (await client.get(key)) === owner;
}

export async function unlockEpoch(client: RedisClient, keys: StoreKeys, epochId: string): Promise<void> {
  await client.del(lockKey(keys, epochId));
}

const lockKey = (keys: StoreKeys, epochId: string) => `${keys.prefix}monitor:lock:${epochId}`;
