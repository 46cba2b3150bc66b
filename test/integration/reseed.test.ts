import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Redis } from "ioredis";
import { lockEpoch, reseed, settleEpoch } from "../../monitor/restore.js";
import type { Snapshot } from "../../monitor/snapshot.js";
import { readSnapshot, takeSnapshot, writeSnapshot } from "../../monitor/snapshot.js";
import { ensureEpoch } from "../../src/store/epoch.js";
import { StoreKeys } from "../../src/store/keys.js";
import { TestRedis } from "../helpers/redis.js";

const keys = new StoreKeys("signing:");
let server: TestRedis;
let redis: Redis;
before(async () => {
  server = await TestRedis.start();
  redis = new Redis(server.url);
});
after(async () => {
  redis?.disconnect();
  await server?.stop();
});

test("snapshot round trip: SCAN finds tokens, revocations and nonces with their TTLs; reseed skips the expired", async () => {
  const now = Date.now();
  await redis.set(keys.token("live"), '{"claims":1}', "PXAT", now + 60_000);
  await redis.set(keys.revoked("gone"), "revoked by issuer", "PXAT", now + 60_000);
  await redis.hset(keys.nonce("live"), { n: "4", d: "abc", r: "0" });
  await redis.pexpireat(keys.nonce("live"), now + 60_000);
  await redis.set("signing:job:gpg:abc", "x", "PX", 60_000); // not a token: not snapshotted
  const snap = await takeSnapshot(redis, keys, "e1");
  assert.deepEqual(
    snap.tokens.map((t) => t.id),
    ["live"],
  );
  assert.deepEqual(
    snap.revoked.map((r) => r.id),
    ["gone"],
  );
  assert.deepEqual(
    snap.nonces.map((n) => [n.id, n.n, n.d]),
    [["live", 4, "abc"]],
  );
  assert.ok(Math.abs((snap.tokens[0]?.expiresAt ?? 0) - (now + 60_000)) < 1000);

  // Redis loses everything; the snapshot also holds an entry that expired meanwhile.
  await redis.flushall();
  const withExpired: Snapshot = {
    ...snap,
    tokens: [...snap.tokens, { id: "old", value: "{}", expiresAt: Date.now() - 1 }],
  };
  const r = await reseed(redis, keys, withExpired);
  assert.deepEqual(r, { tokens: 1, revoked: 1, nonces: 1, skippedExpired: 1 });
  assert.equal(await redis.get(keys.token("live")), '{"claims":1}');
  assert.ok((await redis.pttl(keys.token("live"))) > 50_000, "remaining TTL kept");
  assert.equal(await redis.exists(keys.token("old")), 0);
  assert.equal(await redis.get(keys.revoked("gone")), "revoked by issuer");

  // A node already healed the token and moved its chain further: both are kept. Idempotent.
  await redis.set(keys.token("live"), '{"healed":true}', "PXAT", now + 60_000);
  await redis.hset(keys.nonce("live"), { n: "9" });
  await reseed(redis, keys, withExpired);
  assert.equal(await redis.get(keys.token("live")), '{"healed":true}');
  assert.equal(await redis.hget(keys.nonce("live"), "n"), "9");
});

test("an epoch's minIat travels in the snapshot, so an invalidation outlives a later data loss", async () => {
  const dir = mkdtempSync(join(tmpdir(), "reseed-minIat-"));
  try {
    const snap = await takeSnapshot(redis, keys, "e1", 1_700_000_000_000);
    await writeSnapshot(join(dir, "s.json"), snap);
    assert.equal((await readSnapshot(join(dir, "s.json")))?.minIat, 1_700_000_000_000);
    assert.equal((await takeSnapshot(redis, keys, "e1")).minIat, undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("one monitor acts on a data loss, and the epoch is settled once", async () => {
  await redis.flushall();
  const epoch = await ensureEpoch(redis, keys);
  assert.equal(await lockEpoch(redis, keys, epoch.id, "monitor-a"), true);
  assert.equal(await lockEpoch(redis, keys, epoch.id, "monitor-b"), false);
  assert.equal(await settleEpoch(redis, keys, epoch.id, "restored"), true);
  assert.equal(await settleEpoch(redis, keys, epoch.id, "invalidated", Date.now()), false, "already settled");
  assert.equal(await settleEpoch(redis, keys, "another-epoch", "restored"), false);
  assert.equal(await redis.hget(keys.epoch(), "state"), "restored");
});
