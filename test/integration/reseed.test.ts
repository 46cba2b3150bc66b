import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Redis } from "ioredis";
import { lockEpoch, reseed } from "../../src/recovery/restore.js";
import type { Snapshot } from "../../src/recovery/snapshot.js";
import { readSnapshot, takeSnapshot, writeSnapshot } from "../../src/recovery/snapshot.js";
import { ensureEpoch, setEpochState } from "../../src/store/epoch.js";
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
  const settle = (id: string, state: "restored" | "invalidated") =>
    setEpochState(redis, keys, { id, state, onlyIfFresh: true });
  assert.equal(await settle(epoch.id, "restored"), true);
  assert.equal(await settle(epoch.id, "invalidated"), false, "already settled");
  assert.equal(await settle("another-epoch", "restored"), false);
  assert.equal(await redis.hget(keys.epoch(), "state"), "restored");
});

test("snapshot walks the keyspace once, among many results and jobs, and reads a glob-like prefix literally", async () => {
  await redis.flushall();
  const odd = new StoreKeys("sig*[n]:");
  const now = Date.now();
  for (const k of [keys, odd]) {
    await redis.set(k.token("t1"), "{}", "PXAT", now + 60_000);
    await redis.set(k.revoked("t2"), "revoked", "PXAT", now + 60_000);
    await redis.hset(k.nonce("t1"), { n: "1", d: "x", r: "0" });
    await redis.pexpireat(k.nonce("t1"), now + 60_000);
  }
  // What a busy cluster leaves behind: a result and a job per signed file, and another prefix.
  const pipe = redis.pipeline();
  for (let i = 0; i < 6000; i++) {
    pipe.set(keys.result("gpg", `r${i}`), "sig", "PX", 60_000);
    pipe.set(keys.job("gpg", `r${i}`), "done", "PX", 60_000);
  }
  pipe.set("sigXn:token:{t9}", "{}", "PX", 60_000); // what an unescaped "sig*[n]:" would match
  await pipe.exec();
  const total = await redis.dbsize();

  await redis.config("RESETSTAT");
  const snap = await takeSnapshot(redis, keys, "e1");
  const stats = await redis.info("commandstats");
  const scans = Number(/cmdstat_scan:calls=(\d+)/.exec(stats)?.[1]);
  assert.deepEqual(
    [snap.tokens.map((t) => t.id), snap.revoked.map((r) => r.id), snap.nonces.map((n) => n.id)],
    [["t1"], ["t2"], ["t1"]],
  );
  // COUNT 1000 visits ~1000 keys a call: one pass is about total/1000 calls, three passes three times that.
  assert.ok(scans <= Math.ceil(total / 1000) + 3, `${scans} SCAN calls for ${total} keys`);

  const oddSnap = await takeSnapshot(redis, odd, "e1");
  assert.deepEqual(
    [oddSnap.tokens.map((t) => t.id), oddSnap.revoked.map((r) => r.id), oddSnap.nonces.map((n) => n.id)],
    [["t1"], ["t2"], ["t1"]],
  );
});

test("epoch writes are compare-and-set on the id: a decision about one epoch never lands on the next", async () => {
  await redis.flushall();
  const old = await ensureEpoch(redis, keys);
  await redis.flushall();
  const current = await ensureEpoch(redis, keys);
  assert.notEqual(current.id, old.id);
  // An operator's invalidate (no onlyIfFresh) decided about the old epoch: refused.
  assert.equal(
    await setEpochState(redis, keys, { id: old.id, state: "invalidated", minIatMs: Date.now() }),
    false,
  );
  assert.deepEqual(await redis.hgetall(keys.epoch()), {
    id: current.id,
    createdAt: String(current.createdAt),
    state: "fresh",
    minIat: "0",
  });
  assert.equal(await setEpochState(redis, keys, { id: current.id, state: "invalidated", minIatMs: 5 }), true);
  assert.equal(await redis.hget(keys.epoch(), "minIat"), "5");
  // A record of another type is never written over.
  await redis.del(keys.epoch());
  await redis.set(keys.epoch(), "not a hash");
  assert.equal(await setEpochState(redis, keys, { id: current.id, state: "restored" }), false);
  assert.equal(await redis.get(keys.epoch()), "not a hash");
});
