import type { StoreKeys } from "../store/keys.js";
import type { RedisClient } from "../store/redis.js";
import { LuaScript } from "../store/script.js";
import type { Snapshot } from "./snapshot.js";

// A chain a node already re-seeded from a client's nonce since the loss is live: keep it. A
// restored chain is marked: the first nonce at or beyond its counter re-seeds it under a new
// lineage, and every other holder of an old nonce is refused (DESIGN.md §4, nonce rule 3).
// A key of another type is not ours to overwrite: the restore fails, loudly, and is retried.
const RESTORE_NONCE = new LuaScript(
  "signingRestoreNonce",
  1,
  `
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'hash' then return 0 end
if t ~= 'none' then return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' is a ' .. t .. ', not a nonce chain') end
for i = 1, #ARGV - 1, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 's', 'restored')
redis.call('PEXPIREAT', KEYS[1], ARGV[#ARGV])
return 1
`,
);

export interface ReseedResult {
  tokens: number;
  revoked: number;
  nonces: number;
  skippedExpired: number;
}

/**
 * Puts a snapshot back: revocations first (a revoked token must never be restored before its
 * marker), then nonce chains (a token restored before its chain would let the first nonce
 * presented, even the empty one, start the chain afresh), then tokens (without overwriting a
 * copy a node already healed), each with its remaining lifetime; entries already expired are
 * skipped. Safe to run twice.
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
  RESTORE_NONCE.define(client);
  await inBatches(nonces, (pipe, { id, expiresAt, ...fields }) => {
    const pairs = Object.entries(fields).flatMap(([k, v]) => [k, String(v)]);
    RESTORE_NONCE.addTo(pipe, [keys.nonce(id)], [...pairs, expiresAt]);
  });
  await inBatches(tokens, (pipe, t) => pipe.set(keys.token(t.id), t.value, "PXAT", t.expiresAt, "NX"));
  return { tokens: tokens.length, revoked: revoked.length, nonces: nonces.length, skippedExpired };
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
