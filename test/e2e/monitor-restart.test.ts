import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { writeAlertState } from "../../monitor/alert-state.js";
import { readSnapshot, writeSnapshot } from "../../src/recovery/snapshot.js";
import { startTestMonitor } from "../helpers/monitor.js";
import { TestRedis } from "../helpers/redis.js";
import { WebhookReceiver } from "../helpers/webhook.js";

/**
 * A monitor stopped while an alert fires (killed, or closed: neither resolves) tells its
 * receivers when it starts again on the same state dir: resolved if the condition is over,
 * firing again (same start) if not.
 */
const work = mkdtempSync(join(tmpdir(), "signing-monitor-restart-"));
after(() => rmSync(work, { recursive: true, force: true }));

/** The state file is written after the receivers were told: give the write a moment. */
async function settledFiring(stateDir: string): Promise<string[]> {
  for (let i = 0; i < 40 && firingNames(stateDir).length; i++) await new Promise((r) => setTimeout(r, 50));
  return firingNames(stateDir);
}

const firingNames = (stateDir: string): string[] =>
  JSON.parse(readFileSync(join(stateDir, "alerts.json"), "utf8")).alerts.map((a: { name: string }) => a.name);

async function monitorWhileRedisDown(stateDir: string, redis: TestRedis, webhook: WebhookReceiver) {
  const options = {
    redisUrl: redis.url,
    webhookUrl: webhook.url,
    stateDir,
    monitor: { unreachableForSeconds: 1 },
  };
  const first = await startTestMonitor(options);
  await redis.kill();
  const fired = await webhook.waitFor("RedisUnreachable", "firing");
  await first.close();
  assert.deepEqual(firingNames(stateDir), ["RedisUnreachable"], "kept as firing");
  return { fired, options };
}

test("RedisUnreachable left firing by a stopped monitor is resolved by the next one once Redis is back", async () => {
  const redis = await TestRedis.start();
  const webhook = await WebhookReceiver.start();
  const stateDir = join(work, "back");
  try {
    const { fired, options } = await monitorWhileRedisDown(stateDir, redis, webhook);
    await redis.restart();
    await sleep(1500);
    assert.equal(webhook.alerts("RedisUnreachable", "resolved").length, 0, "nobody resolved it meanwhile");
    const next = await startTestMonitor(options);
    try {
      const resolved = await webhook.waitFor("RedisUnreachable", "resolved", 5000);
      assert.equal(resolved.startsAt, fired.startsAt, "the alert that was sent, not another");
      assert.deepEqual(resolved.labels, fired.labels);
      await sleep(500);
      assert.equal(webhook.alerts("RedisUnreachable", "firing").length, 1, "not fired again");
      assert.deepEqual(await settledFiring(stateDir), []);
    } finally {
      await next.close();
    }
  } finally {
    await webhook.close();
    await redis.stop();
  }
});

test("RedisUnreachable still true when the next monitor starts is fired again, then resolved once", async () => {
  const redis = await TestRedis.start();
  const webhook = await WebhookReceiver.start();
  const stateDir = join(work, "still-down");
  try {
    const { fired, options } = await monitorWhileRedisDown(stateDir, redis, webhook);
    // Long enough that the new run would not fire it itself before it reconciles.
    const next = await startTestMonitor({ ...options, monitor: { unreachableForSeconds: 60 } });
    try {
      await sleep(500);
      const again = webhook.alerts("RedisUnreachable", "firing");
      assert.equal(again.length, 2, "fired again at start-up");
      assert.equal(again[1]?.startsAt, fired.startsAt);
      assert.equal(webhook.alerts("RedisUnreachable", "resolved").length, 0);
      await redis.restart();
      const resolved = await webhook.waitFor("RedisUnreachable", "resolved", 10_000);
      assert.equal(resolved.startsAt, fired.startsAt);
    } finally {
      await next.close();
    }
  } finally {
    await webhook.close();
    await redis.stop();
  }
});

test("restart alerts left firing resolve when their hold is over, at once or when the rest of it has passed", async () => {
  const redis = await TestRedis.start();
  const webhook = await WebhookReceiver.start();
  const stateDir = join(work, "events");
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const kept = (name: string, agoMs: number) => ({
    name,
    labels: { alertname: name, severity: "page", service: "signing-cluster", monitor: "before" },
    startsAt: new Date(Date.now() - agoMs).toISOString(),
    summary: `${name} summary`,
    description: "kept",
  });
  await writeAlertState(join(stateDir, "alerts.json"), [
    kept("RedisRestarted", 3_600_000),
    kept("RedisRestartedWithDataLoss", 2000),
    kept("InvalidTokenSpike", 60_000), // no nodes to scrape: cannot hold
  ]);
  // eventHoldSeconds 5: the data loss alert has about 3 s of its hold left.
  const monitor = await startTestMonitor({ redisUrl: redis.url, webhookUrl: webhook.url, stateDir });
  try {
    await webhook.waitFor("RedisRestarted", "resolved", 2000);
    await webhook.waitFor("InvalidTokenSpike", "resolved", 2000);
    const again = await webhook.waitFor("RedisRestartedWithDataLoss", "firing", 2000);
    assert.equal(again.labels.monitor, "before", "the labels it was sent with");
    assert.equal(webhook.alerts("RedisRestartedWithDataLoss", "resolved").length, 0, "hold not over yet");
    const resolved = await webhook.waitFor("RedisRestartedWithDataLoss", "resolved", 6000);
    assert.equal(resolved.startsAt, again.startsAt);
    assert.deepEqual(await settledFiring(stateDir), []);
  } finally {
    await monitor.close();
    await webhook.close();
    await redis.stop();
  }
});

/** The snapshot a first run wrote in stateDir, made `agoMs` older, as a monitor down that long leaves it. */
async function agedSnapshot(stateDir: string, redisUrl: string, agoMs: number): Promise<void> {
  const first = await startTestMonitor({ redisUrl, stateDir });
  const snap = (await first.snapshotNow()) ?? assert.fail("the first run takes a snapshot");
  await first.close();
  await writeSnapshot(join(stateDir, "snapshot.json"), { ...snap, takenAt: Date.now() - agoMs });
}

test("a monitor restarted after two minutes down does not call the last run's snapshot stale; one that takes none does", async () => {
  const redis = await TestRedis.start();
  const webhook = await WebhookReceiver.start();
  try {
    const stateDir = join(work, "aged-snapshot");
    await agedSnapshot(stateDir, redis.url, 120_000);
    const options = { redisUrl: redis.url, webhookUrl: webhook.url, stateDir };
    const next = await startTestMonitor({ ...options, monitor: { snapshotMaxAgeSeconds: 60 } });
    try {
      await sleep(2500);
      assert.deepEqual(webhook.alerts("SnapshotStale"), [], "not stale: this run takes its own");
    } finally {
      await next.close();
    }
    // Snapshots not taken (a schedule that does not come round in the test): stale after 1 s.
    const file = join(stateDir, "snapshot.json");
    const taken = (await readSnapshot(file)) ?? assert.fail("the second run took one");
    await writeSnapshot(file, { ...taken, takenAt: Date.now() - 120_000 });
    const stuck = await startTestMonitor({
      ...options,
      monitor: { snapshotMaxAgeSeconds: 1, snapshotCron: "0 0 0 1 1 *" },
    });
    try {
      const stale = await webhook.waitFor("SnapshotStale", "firing", 5000);
      assert.match(stale.annotations.description ?? "", /since start-up.*earlier run left is 12\ds old/);
    } finally {
      await stuck.close();
    }
  } finally {
    await webhook.close();
    await redis.stop();
  }
});
