import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Redis } from "ioredis";
import request from "supertest";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { setEpochState } from "../../src/store/epoch.js";
import { StoreKeys } from "../../src/store/keys.js";
import { getToken, upload } from "../helpers/api.js";
import { sample } from "../helpers/metrics.js";
import { TestRedis, waitForReplica } from "../helpers/redis.js";

/**
 * Revocations are answered only once a replica has them, with the default timeouts; an
 * invalidation covers tokens Redis still holds; Redis that may evict keys is reported; two
 * uploads racing with one nonce cannot both pass.
 */
const keys = new StoreKeys("signing:");
let primary: TestRedis;
let replica: TestRedis;
let cluster: TestCluster;
let redis: Redis;
let url: string;

before(async () => {
  primary = await TestRedis.start();
  replica = await TestRedis.start(["--replicaof", "127.0.0.1", String(primary.port)]);
  await waitForReplica(primary.url);
  // The defaults: commandTimeoutMs 500, replicaAckTimeoutMs 1000.
  cluster = await TestCluster.start({ nodes: 1, redis: primary });
  url = cluster.node(0).url;
  redis = new Redis(primary.url);
});
after(async () => {
  redis?.disconnect();
  replica?.resume();
  await cluster?.stop();
  await replica?.stop();
});

const revoke = (token: string) =>
  request(url).post("/token").set("Authorization", cluster.basicAuth).type("form").send({ expire: token });

describe("revocations wait for a replica", () => {
  test("acknowledged with a replica in sync; a stopped replica gets 503s that say so, and nothing opens", async () => {
    const token = await getToken(url, cluster.basicAuth);
    assert.equal((await revoke(token)).status, 200);
    assert.equal(
      (await upload(url, { token, nonce: "", data: randomBytes(8) })).body.error.code,
      "TOKEN_REVOKED",
    );
    replica.pause();
    try {
      for (let i = 0; i < 4; i++) {
        const started = Date.now();
        const res = await revoke(await getToken(url, cluster.basicAuth));
        assert.equal(res.status, 503, res.text);
        assert.equal(res.body.error.code, "STORE_UNAVAILABLE");
        assert.match(res.body.error.message, /no replica confirmed it in time, so it is not done: retry/);
        assert.ok(Date.now() - started >= 900, "it waited replicaAckTimeoutMs");
      }
      // A replica slow to acknowledge is not the primary failing: tokens are issued and checked.
      const fresh = await getToken(url, cluster.basicAuth);
      assert.equal((await upload(url, { token: fresh, nonce: "", data: randomBytes(8) })).status, 202);
      const text = (await request(url).get("/metrics")).text;
      for (const breaker of ["token_reads", "token_writes", "jobs"])
        assert.equal(sample(text, "signing_store_breaker_state", { breaker }), 0, breaker);
    } finally {
      replica.resume();
    }
  });
});

describe("invalidations and races", () => {
  test("an invalidation refuses tokens Redis still holds, atomically with the check", async () => {
    const token = await getToken(url, cluster.basicAuth);
    assert.equal((await upload(url, { token, nonce: "", data: randomBytes(8) })).status, 202);
    const id = (await redis.hget(keys.epoch(), "id")) as string;
    const iat = JSON.parse(Buffer.from(token.split(".")[2] as string, "base64url").toString()).iat as number;
    assert.equal(
      await setEpochState(redis, keys, { id, state: "invalidated", minIatMs: (iat + 1) * 1000 }),
      true,
    );
    try {
      const res = await upload(url, { token, nonce: "", data: randomBytes(8) });
      assert.equal(res.status, 401, res.text);
      assert.equal(res.body.error.code, "TOKEN_INVALIDATED");
    } finally {
      await setEpochState(redis, keys, { id, state: "fresh", minIatMs: 0 });
    }
  });

  test("two uploads racing with one nonce and different files: exactly one passes", async () => {
    for (let round = 0; round < 5; round++) {
      const token = await getToken(url, cluster.basicAuth);
      const answers = await Promise.all(
        [0, 1, 2].map(() => upload(url, { token, nonce: "", data: randomBytes(64) })),
      );
      const statuses = answers.map((a) => a.status).sort();
      assert.deepEqual(statuses, [202, 403, 403], `round ${round}: ${statuses}`);
    }
  });
});

describe("a Redis that may evict keys", () => {
  test("is reported by readiness (degraded, still serving), and clears when set to noeviction", async () => {
    await redis.config("SET", "maxmemory", String(512 * 1024 * 1024));
    await redis.config("SET", "maxmemory-policy", "allkeys-lru");
    try {
      const ready = await request(url).get("/readyz");
      assert.equal(ready.status, 200);
      assert.equal(ready.body.status, "degraded");
      assert.match(ready.body.checks.eviction.detail, /allkeys-lru.*may evict revocation markers/);
    } finally {
      await redis.config("SET", "maxmemory-policy", "noeviction");
      await redis.config("SET", "maxmemory", "0");
    }
    assert.equal((await request(url).get("/readyz")).body.status, "ok");
  });
});
