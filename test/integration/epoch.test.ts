import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import request from "supertest";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { setEpochState } from "../../src/store/epoch.js";
import { StoreKeys } from "../../src/store/keys.js";
import { getToken, upload } from "../helpers/api.js";

const GRACE_MS = 1500;
let cluster: TestCluster;
let redis: Redis;
const keys = new StoreKeys("signing:");

before(async () => {
  cluster = await TestCluster.start({
    nodes: 2,
    overrides: { store: { recoveryGraceMs: GRACE_MS, orphanPolicy: "heal" } },
  });
  redis = new Redis(cluster.redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
});
after(async () => {
  redis?.disconnect();
  await cluster?.stop();
});

function tokenId(token: string): string {
  const payload = token.split(".")[2] as string;
  return (JSON.parse(Buffer.from(payload, "base64url").toString()) as { id: string }).id;
}

async function waitReady(url: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    // "ok", not "degraded": Redis reachable again and every breaker closed.
    if ((await request(url).get("/readyz")).body.status === "ok") return;
    await sleep(50);
  }
  throw new Error(`${url} never became ready`);
}

test("the epoch table decides what happens to tokens Redis lost", async () => {
  const [a, b] = [cluster.node(0).url, cluster.node(1).url];

  // Before the restart: a token in use, one deleted on purpose, spares for each later case.
  const inUse = await getToken(a, cluster.basicAuth);
  const first = await upload(a, { token: inUse, nonce: "", data: randomBytes(32) });
  assert.equal(first.status, 202);
  const nonceBefore = first.headers["x-nonce"] as string;
  // A record lost without its epoch (an unreplicated write before a failover, eviction) is our
  // loss: it heals; only the revocation marker makes a token revoked.
  const lost = await getToken(a, cluster.basicAuth);
  await redis.del(keys.token(tokenId(lost)));
  const lostRes = await upload(b, { token: lost, nonce: "", data: randomBytes(32) });
  assert.equal(lostRes.status, 202, `lost in the same epoch, not revoked = healed: ${lostRes.text}`);
  assert.equal(await redis.exists(keys.token(tokenId(lost))), 1, "the record is back");
  const revoked = await getToken(a, cluster.basicAuth);
  const expire = request(a).post("/token").set("Authorization", cluster.basicAuth).type("form");
  assert.equal((await expire.send({ expire: revoked })).status, 200);
  await redis.del(keys.token(tokenId(revoked)));
  const revokedRes = await upload(b, { token: revoked, nonce: "", data: randomBytes(32) });
  assert.equal(revokedRes.status, 401, "the marker revokes, with or without the record");
  assert.equal(revokedRes.body.error.code, "TOKEN_REVOKED");
  const forInvalidation = await getToken(a, cluster.basicAuth);
  const forRestore = await getToken(b, cluster.basicAuth);

  // Redis restarts empty: no persistence, every token, nonce and the epoch are gone.
  await cluster.redis.restart();
  redis.disconnect();
  redis = new Redis(cluster.redis.url, { maxRetriesPerRequest: 1 });
  await waitReady(a);
  await waitReady(b);

  // Inside the grace period the monitor may still restore it: retry later, never "invalid".
  const recovering = await upload(b, { token: inUse, nonce: nonceBefore, data: randomBytes(32) });
  assert.equal(recovering.status, 503, recovering.text);
  assert.equal(recovering.body.error.code, "STORE_RECOVERING");
  assert.ok(Number(recovering.headers["retry-after"]) >= 1);
  assert.equal(recovering.headers["x-nonce"], nonceBefore, "a refused upload keeps the client's nonce");

  // After the grace period, orphanPolicy=heal re-inserts it, and the nonce record is re-seeded.
  const epoch = await redis.hgetall(keys.epoch());
  const graceLeft = Number(epoch.createdAt) + GRACE_MS - Date.now();
  if (graceLeft > 0) await sleep(graceLeft + 50);
  const healed = await upload(b, { token: inUse, nonce: nonceBefore, data: randomBytes(32) });
  assert.equal(healed.status, 202, healed.text);
  assert.equal(await redis.exists(keys.token(tokenId(inUse))), 1, "healed token is back in Redis");
  const nonceAfter = healed.headers["x-nonce"] as string;
  const replay = await upload(a, { token: inUse, nonce: nonceBefore, data: randomBytes(32) });
  assert.equal(replay.status, 403, "the re-seeded chain is enforced again");
  assert.equal((await upload(a, { token: inUse, nonce: nonceAfter, data: randomBytes(32) })).status, 202);

  // The monitor restored what it had: a token issued after its last snapshot heals at once.
  const current = (await redis.hget(keys.epoch(), "id")) as string;
  assert.equal(await setEpochState(redis, keys, { id: current, state: "restored" }), true);
  const restored = await upload(a, { token: forRestore, nonce: "", data: randomBytes(32) });
  assert.equal(restored.status, 202, restored.text);

  // The monitor invalidated the lost tokens: clients are told to fetch a new one.
  assert.equal(
    await setEpochState(redis, keys, { id: current, state: "invalidated", minIatMs: Date.now() }),
    true,
  );
  const invalidated = await upload(a, { token: forInvalidation, nonce: "", data: randomBytes(32) });
  assert.equal(invalidated.status, 401);
  assert.equal(invalidated.body.error.code, "TOKEN_INVALIDATED");
  assert.match(invalidated.body.error.message, /new token/);

  // A token issued in the new epoch works as usual.
  const fresh = await getToken(b, cluster.basicAuth);
  assert.equal((await upload(a, { token: fresh, nonce: "", data: randomBytes(32) })).status, 202);
});
