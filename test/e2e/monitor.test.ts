import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import request from "supertest";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { encodeToken, type TokenSecret } from "../../src/tokens/codec.js";
import { getToken, upload } from "../helpers/api.js";
import { startTestMonitor } from "../helpers/monitor.js";
import { TestRedis } from "../helpers/redis.js";
import { WebhookReceiver } from "../helpers/webhook.js";

const webhook = await WebhookReceiver.start();
after(() => webhook.close());

describe("the monitor against a Redis with persistence", () => {
  test("a restart that keeps its data (AOF) is a no-loss restart: no re-seed, RedisRestarted", async () => {
    const redis = await TestRedis.start(["--appendonly", "yes", "--appendfsync", "always"]);
    const cluster = await TestCluster.start({ nodes: 1, redis });
    const monitor = await startTestMonitor({ redisUrl: redis.url, webhookUrl: webhook.url });
    try {
      const url = cluster.node(0).url;
      const token = await getToken(url, cluster.basicAuth);
      assert.equal((await upload(url, { token, nonce: "", data: randomBytes(10) })).status, 202);
      const seen = await request(monitor.url).get("/readyz");
      assert.equal(seen.body.checks.redis.ok, true, "the monitor has seen this Redis before it restarts");
      const client = new Redis(redis.url);
      const epochBefore = await client.hget("signing:epoch", "id");
      client.disconnect();

      await redis.restart("SIGTERM");
      await webhook.waitFor("RedisRestarted", "firing");
      const restarts = (await monitor.metrics.restarts.get()).values;
      assert.equal(restarts.find((v) => v.labels.kind === "restart")?.value, 1);
      assert.equal(restarts.find((v) => v.labels.kind === "data_loss")?.value, 0);
      assert.equal((await monitor.metrics.reseeded.get()).values[0]?.value ?? 0, 0);
      const after = new Redis(redis.url);
      assert.equal(await after.hget("signing:epoch", "id"), epochBefore, "same epoch: nothing was lost");
      assert.equal(await after.hget("signing:epoch", "state"), "fresh", "no re-seed marked it restored");
      after.disconnect();
      assert.equal(webhook.alerts("RedisRestartedWithDataLoss").length, 0);
    } finally {
      await monitor.close();
      await cluster.stop();
    }
  });
});

describe("the monitor's other alerts", () => {
  test("RedisUnreachable fires while Redis is down and resolves when it is back", async () => {
    const redis = await TestRedis.start();
    const monitor = await startTestMonitor({
      redisUrl: redis.url,
      webhookUrl: webhook.url,
      monitor: { unreachableForSeconds: 1 },
    });
    try {
      await redis.kill();
      const firing = await webhook.waitFor("RedisUnreachable", "firing");
      assert.match(firing.annotations.summary ?? "", /unreachable/);
      assert.equal((await monitor.metrics.redisUp.get()).values[0]?.value, 0);
      await redis.restart();
      const resolved = await webhook.waitFor("RedisUnreachable", "resolved");
      assert.notEqual(resolved.endsAt, "0001-01-01T00:00:00Z");
      assert.equal(webhook.alerts("RedisUnreachable", "firing").length, 1, "not re-sent while firing");
    } finally {
      await monitor.close();
      await redis.stop();
    }
  });

  test("the monitor shows Redis down as soon as its connection drops, not at its next scheduled look", async () => {
    const redis = await TestRedis.start();
    // Scheduled looks once a year: only the connection's own events can move the gauge.
    const monitor = await startTestMonitor({ redisUrl: redis.url, monitor: { detectCron: "0 0 0 1 1 *" } });
    const up = async () => (await monitor.metrics.redisUp.get()).values[0]?.value;
    const becomes = async (value: number) => {
      for (let i = 0; i < 50 && (await up()) !== value; i++) await sleep(100);
      return up();
    };
    try {
      assert.equal(await becomes(1), 1, "up once connected");
      await redis.kill();
      assert.equal(await becomes(0), 0, "down within 5 s of the kill");
      await redis.restart();
      assert.equal(await becomes(1), 1, "up again once reconnected");
    } finally {
      await monitor.close();
      await redis.stop();
    }
  });

  test("a burst of forged and expired tokens fires InvalidTokenSpike, which resolves after the burst", async () => {
    const cluster = await TestCluster.start({ nodes: 2 });
    const monitor = await startTestMonitor({
      redisUrl: cluster.redis.url,
      nodes: cluster.nodes.map((n) => n.url),
      webhookUrl: webhook.url,
    });
    try {
      const urls = cluster.nodes.map((n) => n.url);
      const token = await getToken(urls[0] as string, cluster.basicAuth);
      const forged = `${token.slice(0, -4)}AAAA`;
      const claims = JSON.parse(Buffer.from(token.split(".")[2] as string, "base64url").toString());
      const now = Math.floor(Date.now() / 1000);
      const expired = encodeToken(
        { ...claims, iat: now - 100, exp: now - 10 },
        cluster.loaded.tokenSecrets[0] as TokenSecret,
      );
      let burst = true;
      const attackers = urls.map(async (url) => {
        while (burst) {
          await Promise.all([
            upload(url, { token: forged, nonce: "", data: randomBytes(16) }),
            upload(url, { token: "v1.x.y.z", nonce: "", data: randomBytes(16) }),
            upload(url, { token: expired, nonce: "", data: randomBytes(16) }),
          ]);
        }
      });
      const firing = await webhook.waitFor("InvalidTokenSpike", "firing", 20_000);
      assert.match(firing.annotations.description ?? "", /bad_signature/);
      assert.match(firing.annotations.description ?? "", /malformed/);
      assert.match(firing.annotations.description ?? "", /expired/);
      burst = false;
      await Promise.all(attackers);
      const resolved = await webhook.waitFor("InvalidTokenSpike", "resolved", 20_000);
      assert.ok(resolved);
      const metrics = (await request(monitor.url).get("/metrics")).text;
      assert.match(metrics, /signing_monitor_alerts_sent_total\{alert="InvalidTokenSpike"\} 2/);
    } finally {
      await monitor.close();
      await cluster.stop();
    }
  });
});

test("the monitor serves /readyz and its DESIGN.md §8 metrics", async () => {
  const redis = await TestRedis.start();
  const monitor = await startTestMonitor({ redisUrl: redis.url });
  try {
    await sleep(1200);
    const ready = await request(monitor.url).get("/readyz");
    assert.equal(ready.status, 200, ready.text);
    assert.equal(ready.body.checks.redis.ok, true);
    const text = (await request(monitor.url).get("/metrics")).text;
    for (const name of [
      "signing_monitor_redis_up",
      "signing_monitor_redis_restarts_total",
      "signing_monitor_tokens_reseeded_total",
      "signing_monitor_tokens_invalidated_total",
      "signing_monitor_snapshot_age_seconds",
      "signing_monitor_snapshot_tokens",
      "signing_monitor_alerts_sent_total",
    ]) {
      assert.match(text, new RegExp(`^# TYPE ${name.replace(/_total$/, "")}(_total)? `, "m"), name);
    }
  } finally {
    await monitor.close();
    await redis.stop();
  }
});

test("the monitor's /readyz says what fails and since when while Redis is down, and the state only when ok", async () => {
  const redis = await TestRedis.start();
  const monitor = await startTestMonitor({ redisUrl: redis.url });
  const check = async () => (await request(monitor.url).get("/readyz")).body.checks.redis;
  try {
    assert.match((await check()).detail, /^run_id [0-9a-f]{8}, epoch [0-9a-f]+ fresh$/);
    const killedAt = Date.now();
    await redis.kill();
    let down = await check();
    for (let i = 0; i < 50 && down.ok; i++) {
      await sleep(100);
      down = await check();
    }
    assert.equal(down.ok, false, JSON.stringify(down));
    await sleep(2100);
    down = await check();
    assert.equal(down.error, `connect ECONNREFUSED 127.0.0.1:${redis.port}`, JSON.stringify(down));
    const since = Date.parse(down.since);
    assert.ok(since >= killedAt - 1000 && since <= killedAt + 5000, `since ${down.since}`);
    assert.ok(down.sinceSeconds >= 2, `sinceSeconds ${down.sinceSeconds}`);
    assert.equal(down.detail, `unreachable since ${down.since} (${down.sinceSeconds}s): ${down.error}`);
    assert.doesNotMatch(down.detail, /run_id|epoch/, "not the last good state");
    await redis.restart();
    let up = await check();
    for (let i = 0; i < 50 && !up.ok; i++) {
      await sleep(100);
      up = await check();
    }
    assert.equal(up.ok, true);
    assert.match(up.detail, /^run_id /);
    assert.equal(up.error, undefined);
  } finally {
    await monitor.close();
    await redis.stop();
  }
});

test("Redis stopped: the monitor's event, alert and /readyz name the connection's own error, not the refused command's", async () => {
  const redis = await TestRedis.start();
  const hook = await WebhookReceiver.start(); // its own: the shared one saw other outages
  const monitor = await startTestMonitor({
    redisUrl: redis.url,
    webhookUrl: hook.url,
    monitor: { unreachableForSeconds: 1 },
  });
  const refused = `connect ECONNREFUSED 127.0.0.1:${redis.port}`;
  const unreachableEvent = async () =>
    (await request(monitor.url).get("/status")).body.events.find(
      (e: { kind: string }) => e.kind === "RedisUnreachable",
    );
  try {
    await sleep(1200);
    await redis.stop();
    let event = await unreachableEvent();
    for (let i = 0; i < 50 && !event?.summary.includes(refused); i++) {
      await sleep(100);
      event = await unreachableEvent();
    }
    assert.equal(
      event?.summary,
      `the monitor cannot reach the Redis master: ${refused}`,
      JSON.stringify(event),
    );
    const ready = (await request(monitor.url).get("/readyz")).body.checks.redis;
    assert.equal(ready.error, refused, JSON.stringify(ready));
    assert.match(ready.detail, new RegExp(`: ${refused}$`));
    const alert = await hook.waitFor("RedisUnreachable", "firing");
    assert.match(alert.annotations.description ?? "", new RegExp(`: ${refused}\\. `));
    const said = JSON.stringify([event, ready, alert.annotations]);
    assert.doesNotMatch(said, /Stream isn't writeable|enableOfflineQueue/);
  } finally {
    await monitor.close();
    await hook.close();
    await redis.stop();
  }
});

/** A monitor that detects and snapshots only when told to, on a Redis of its own. */
async function withManualMonitor(
  fn: (monitor: Awaited<ReturnType<typeof startTestMonitor>>, client: Redis) => Promise<void>,
): Promise<void> {
  const redis = await TestRedis.start();
  const monitor = await startTestMonitor({
    redisUrl: redis.url,
    monitor: { detectCron: "0 0 1 1 *", snapshotCron: "0 0 1 1 *" },
  });
  const client = new Redis(redis.url);
  try {
    await fn(monitor, client);
  } finally {
    client.disconnect();
    await monitor.close();
    await redis.stop();
  }
}

test("a re-seed that fails half-way is taken up again on the next tick", () =>
  withManualMonitor(async (monitor, client) => {
    await monitor.detectNow();
    const exp = Date.now() + 600_000;
    await client.set("signing:token:{t1}", '{"claims":{}}', "PXAT", exp);
    await client.hset("signing:nonce:{t1}", { n: "3", d: "x", r: "0" });
    await client.pexpireat("signing:nonce:{t1}", exp);
    assert.ok(await monitor.snapshotNow());
    await client.flushall();
    // The restore cannot write the nonce chain over a key of the wrong type: it fails.
    await client.set("signing:nonce:{t1}", "not a hash");
    await assert.rejects(monitor.detectNow(), /WRONGTYPE/);
    assert.equal(await client.hget("signing:epoch", "state"), "fresh");
    await client.del("signing:nonce:{t1}");
    await monitor.detectNow();
    assert.equal(await client.hget("signing:epoch", "state"), "restored");
    assert.equal(await client.hget("signing:nonce:{t1}", "n"), "3");
    assert.equal(
      (await monitor.metrics.restarts.get()).values.find((v) => v.labels.kind === "data_loss")?.value,
      1,
    );
  }));

test("an epoch record without an id is repaired by the monitor as a data loss: re-seeded, not left corrupt", () =>
  withManualMonitor(async (monitor, client) => {
    await monitor.detectNow();
    const exp = Date.now() + 600_000;
    await client.set("signing:token:{t1}", '{"claims":{}}', "PXAT", exp);
    assert.ok(await monitor.snapshotNow());
    const before = await client.hget("signing:epoch", "id");
    await client.hdel("signing:epoch", "id");
    await monitor.detectNow();
    const epoch = await client.hgetall("signing:epoch");
    assert.match(epoch.id ?? "", /^[0-9a-f]{16}$/, "a fresh, valid epoch");
    assert.notEqual(epoch.id, before);
    assert.equal(epoch.state, "restored", "handled as a data loss: re-seeded from the snapshot");
    assert.equal(
      (await monitor.metrics.restarts.get()).values.find((v) => v.labels.kind === "data_loss")?.value,
      1,
    );
  }));

test("closing during a re-seed waits for it: the epoch lock is given back and nothing is sent after close", async () => {
  const redis = await TestRedis.start();
  const hook = await WebhookReceiver.start();
  const manual = { detectCron: "0 0 1 1 *", snapshotCron: "0 0 1 1 *" };
  const monitor = await startTestMonitor({ redisUrl: redis.url, webhookUrl: hook.url, monitor: manual });
  const client = new Redis(redis.url);
  try {
    await monitor.detectNow();
    const exp = Date.now() + 600_000;
    await client.set("signing:token:{t1}", '{"claims":{}}', "PXAT", exp);
    assert.ok(await monitor.snapshotNow());
    await client.flushall();
    const pass = monitor.detectNow();
    await monitor.close();
    await pass;
    assert.equal(await client.hget("signing:epoch", "state"), "restored", "the pass was let finish");
    assert.deepEqual(await client.keys("signing:monitor:lock:*"), [], "no epoch lock left behind");
    assert.equal(hook.alerts("RedisRestartedWithDataLoss", "firing").length, 1, "told before close returned");
    const sent = hook.payloads.length;
    // Past the event's 5 s hold (test helper), whose resolve a closed monitor must not send.
    await sleep(6000);
    assert.equal(hook.payloads.length, sent, "nothing sent after close");
  } finally {
    client.disconnect();
    await monitor.close();
    await hook.close();
    await redis.stop();
  }
});

test("/readyz allows a detection pass every 10 s when monitor.detectCron says so", async () => {
  const redis = await TestRedis.start();
  const monitor = await startTestMonitor({ redisUrl: redis.url, monitor: { detectCron: "*/10 * * * * *" } });
  try {
    let longest = 0;
    // Within 25 s the 10 s schedule leaves a gap of more than the old fixed 5 s.
    for (const end = Date.now() + 25_000; Date.now() < end && longest <= 5500; ) {
      const r = await request(monitor.url).get("/readyz");
      assert.equal(r.status, 200, JSON.stringify(r.body));
      longest = Math.max(longest, Number(/last detection (\d+) ms ago/.exec(r.body.checks.loop.detail)?.[1]));
      await sleep(200);
    }
    assert.ok(longest > 5500, `ready with the last pass ${longest} ms ago, more than 5 s`);
  } finally {
    await monitor.close();
    await redis.stop();
  }
});
