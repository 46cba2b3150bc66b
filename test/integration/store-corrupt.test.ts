import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, beforeEach, describe, test } from "node:test";
import { Redis } from "ioredis";
import request from "supertest";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { StoreKeys } from "../../src/store/keys.js";
import { fetchSignature, getToken, sha1, sha256, upload } from "../helpers/api.js";
import { jsonLogSink } from "../helpers/log-sink.js";
import { sample } from "../helpers/metrics.js";

/**
 * Issue 27 item 1: data in Redis that we did not write fails closed (503 STORE_CORRUPT), is
 * counted and logged with its key, never turns into a degraded (hmac) acceptance, and never
 * opens a breaker.
 */
const keys = new StoreKeys("signing:");
const logLines: Record<string, unknown>[] = [];
let cluster: TestCluster;
let redis: Redis;
let url: string;

before(async () => {
  const logTo = jsonLogSink(logLines);
  // downPolicy hmac (the default) is what a corrupt record used to fall through to.
  cluster = await TestCluster.start({ nodes: 1, logTo, overrides: { store: { downPolicy: "hmac" } } });
  url = cluster.node(0).url;
  redis = new Redis(cluster.redis.url);
});
after(async () => {
  redis?.disconnect();
  await cluster?.stop();
});
beforeEach(() => {
  logLines.length = 0;
});

const idOf = (token: string) =>
  (JSON.parse(Buffer.from(token.split(".")[2] as string, "base64url").toString()) as { id: string }).id;

function assertCorrupt(res: request.Response): void {
  const body = Buffer.isBuffer(res.body) ? JSON.parse(res.body.toString()) : res.body;
  assert.equal(res.status, 503, JSON.stringify(body));
  assert.equal(body.error.code, "STORE_CORRUPT", JSON.stringify(body));
  assert.equal(body.error.retryable, true);
}

async function metrics(): Promise<string> {
  return (await request(url).get("/metrics")).text;
}

describe("a token's keys of the wrong type", () => {
  test("a token record replaced by a list: 503 STORE_CORRUPT, never 202, logged with the key only", async () => {
    const token = await getToken(url, cluster.basicAuth);
    const key = keys.token(idOf(token));
    await redis.del(key);
    await redis.rpush(key, "not", "a", "record");
    const before = sample(await metrics(), "signing_store_corrupt_total", { op: "token_check" }) ?? 0;
    assertCorrupt(await upload(url, { token, nonce: "", data: randomBytes(16) }));
    const text = await metrics();
    assert.equal(sample(text, "signing_store_corrupt_total", { op: "token_check" }), before + 1);
    assert.equal(sample(text, "signing_token_checks_total", { result: "degraded" }), 0);
    const logged = logLines.find((l) => l.event === "store_corrupt");
    assert.ok(logged, "a store_corrupt log line");
    assert.equal(logged.key, key);
    assert.ok(!JSON.stringify(logLines).includes(token), "the raw token is never logged");
    assert.ok(!JSON.stringify(logLines).includes('"stack"'), "no stack trace for it");
  });

  test("a revocation marker or a nonce chain of the wrong type is refused too", async () => {
    const revoked = await getToken(url, cluster.basicAuth);
    await redis.hset(keys.revoked(idOf(revoked)), { reason: "a hash, not a string" });
    assertCorrupt(await upload(url, { token: revoked, nonce: "", data: randomBytes(16) }));
    const chained = await getToken(url, cluster.basicAuth);
    await redis.set(keys.nonce(idOf(chained)), "not a chain");
    assertCorrupt(await upload(url, { token: chained, nonce: "", data: randomBytes(16) }));
    const counterless = await getToken(url, cluster.basicAuth);
    await redis.hset(keys.nonce(idOf(counterless)), { l: "x" });
    assertCorrupt(await upload(url, { token: counterless, nonce: "", data: randomBytes(16) }));
  });

  test("many corrupt answers do not open a breaker: healthy tokens keep their full checks", async () => {
    const bad = await getToken(url, cluster.basicAuth);
    await redis.del(keys.token(idOf(bad)));
    await redis.sadd(keys.token(idOf(bad)), "x");
    for (let i = 0; i < 30; i++)
      assertCorrupt(await upload(url, { token: bad, nonce: "", data: randomBytes(8) }));
    const text = await metrics();
    for (const breaker of ["token_reads", "token_writes", "jobs"])
      assert.equal(sample(text, "signing_store_breaker_state", { breaker }), 0, breaker);
    const good = await getToken(url, cluster.basicAuth);
    const res = await upload(url, { token: good, nonce: "", data: randomBytes(8) });
    assert.equal(res.status, 202, res.text);
    assert.equal((await request(url).get("/readyz")).status, 200);
  });
});

describe("records that do not parse", () => {
  test("an epoch record without an id: token checks and issues answer 503 STORE_CORRUPT", async () => {
    const token = await getToken(url, cluster.basicAuth);
    const saved = await redis.hgetall(keys.epoch());
    try {
      await redis.hdel(keys.epoch(), "id");
      // The token's record is gone too, so the check must consult the epoch.
      await redis.del(keys.token(idOf(token)));
      assertCorrupt(await upload(url, { token, nonce: "", data: randomBytes(16) }));
      const issue = await request(url)
        .post("/token")
        .set("Authorization", cluster.basicAuth)
        .type("form")
        .send({ slave_ip: "127.0.0.1", duration: "60" });
      assertCorrupt(issue);
    } finally {
      await redis.del(keys.epoch());
      await redis.hset(keys.epoch(), saved);
    }
  });

  test("a job record that is not JSON, or a result of the wrong type: 503 STORE_CORRUPT on GET and upload", async () => {
    const data = randomBytes(32);
    await redis.set(keys.job("gpg", sha256(data)), "{not json", "PX", 60_000);
    assertCorrupt(await fetchSignature(url, "gpg", sha256(data)));
    const token = await getToken(url, cluster.basicAuth);
    assertCorrupt(await upload(url, { token, nonce: "", data }));
    await redis.del(keys.job("gpg", sha256(data)));
    const other = randomBytes(32);
    await redis.rpush(keys.result("gpg", sha256(other)), "x");
    assertCorrupt(await fetchSignature(url, "gpg", sha256(other)));
    await redis.set(keys.sha1Alias("gpg", sha1(other)), "not a digest");
    assertCorrupt(await fetchSignature(url, "gpg", sha1(other)));
  });
});
