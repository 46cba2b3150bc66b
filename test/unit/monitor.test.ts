import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { pino } from "pino";
import { Alerter } from "../../monitor/alerts.js";
import { classify, type Observation, parseInfoServer } from "../../monitor/detect.js";
import { MonitorMetrics } from "../../monitor/metrics.js";
import { checkCounts, SpikeDetector } from "../../monitor/spike.js";
import {
  readSnapshot,
  type Snapshot,
  SnapshotCorruptError,
  writeSnapshot,
} from "../../src/recovery/snapshot.js";
import { WebhookReceiver } from "../helpers/webhook.js";

const dir = mkdtempSync(join(tmpdir(), "monitor-unit-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const obs = (o: Partial<Observation> & { epochId?: string }): Observation => ({
  at: o.at ?? 10_000,
  runId: o.runId ?? "run-a",
  uptimeSeconds: o.uptimeSeconds ?? 100,
  role: "master",
  epoch: { id: o.epochId ?? "e1", createdAt: 0, state: "fresh", minIat: 0 },
});

describe("classifying what happened to Redis", () => {
  test("same, first, data loss, restart without loss, failover", () => {
    assert.deepEqual(classify(undefined, obs({}), undefined), { kind: "first" });
    assert.deepEqual(classify(obs({}), obs({ at: 11_000 }), "e1"), { kind: "same" });
    assert.deepEqual(
      classify(obs({}), obs({ at: 11_000, runId: "run-b", epochId: "e2", uptimeSeconds: 0 }), "e1"),
      {
        kind: "data_loss",
        previousEpochId: "e1",
      },
    );
    assert.deepEqual(classify(obs({}), obs({ at: 12_000, runId: "run-b", uptimeSeconds: 1 }), "e1"), {
      kind: "restart",
    });
    assert.deepEqual(classify(obs({}), obs({ at: 12_000, runId: "run-b", uptimeSeconds: 86_400 }), "e1"), {
      kind: "failover",
    });
    // The monitor was down during the loss: its snapshot's epoch is the one it knew.
    assert.deepEqual(classify(undefined, obs({ epochId: "e9" }), "e1"), {
      kind: "data_loss",
      previousEpochId: "e1",
    });
  });

  test("INFO server parsing", () => {
    const info = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\nuptime_in_seconds:42\r\n";
    assert.deepEqual(parseInfoServer(info), { runId: "abc123", uptimeSeconds: 42 });
    assert.throws(() => parseInfoServer("# Server\r\n"), /run_id/);
  });
});

describe("spike detection", () => {
  const condition = { ratio: 0.25, minChecksPerSecond: 0.1, forMs: 2000 };
  /** One node's counters: `valid` accepted checks and `expired` rejected ones. */
  const node = (valid: number, expired: number) =>
    new Map([
      ["valid", valid],
      ["expired", expired],
    ]);
  const nodes = (n: Record<string, [number, number]>) =>
    new Map(Object.entries(n).map(([name, [valid, expired]]) => [name, node(valid, expired)]));

  test("every result is read from /metrics: the share needs the accepted checks too", () => {
    const text = [
      "# TYPE signing_token_checks_total counter",
      'signing_token_checks_total{result="valid"} 100',
      'signing_token_checks_total{result="bad_signature"} 7',
      'signing_token_checks_total{result="recovering"} 50',
      'signing_tokens_issued_total{result="valid"} 9',
    ].join("\n");
    assert.deepEqual(Object.fromEntries(checkCounts(text)), { valid: 100, bad_signature: 7, recovering: 50 });
  });

  test("the share across nodes counts rejected results only, every result in the total", () => {
    const d = new SpikeDetector(condition);
    const counts = (recovering: number, malformed: number) =>
      new Map([
        ["valid", 0],
        ["recovering", recovering],
        ["malformed", malformed],
      ]);
    d.update(0, new Map([["a", counts(0, 0)]]));
    const r = d.update(1000, new Map([["a", counts(3, 1)]]));
    assert.equal(r.checksPerSecond, 4);
    assert.equal(r.rejectedPerSecond, 1, "recovering is our outage, not a rejected token");
    assert.equal(r.ratio, 0.25);
    assert.deepEqual(Object.fromEntries(r.byResult), { malformed: 1 });
  });

  test("a high rejected rate that is a small share of the checks does not fire", () => {
    const d = new SpikeDetector(condition);
    for (let s = 0; s <= 10; s++) {
      // 50 rejected checks/s, far above any absolute threshold, but 1 in 21 of 1050 checks/s.
      const r = d.update(s * 1000, nodes({ a: [500 * s, 25 * s], b: [500 * s, 25 * s] }));
      if (s > 0) assert.equal(r.rejectedPerSecond, 50);
      assert.equal(r.change, undefined, `second ${s}`);
    }
  });

  test("a high share below the minimum check rate does not fire", () => {
    const d = new SpikeDetector(condition);
    for (let s = 0; s <= 100; s += 10) {
      // Every check is rejected, but there is one check each 20 s: 0.05/s.
      const r = d.update(s * 1000, nodes({ a: [0, s / 20] }));
      if (s > 0) assert.equal(r.ratio, 1);
      assert.equal(r.change, undefined, `second ${s}`);
    }
  });

  test("a high share above the minimum fires after forMs, once, and resolves when it drops", () => {
    const d = new SpikeDetector(condition);
    // 2 valid + 2 expired checks/s on each of two nodes: half are rejected, 8 checks/s.
    const burst = (s: number) => nodes({ a: [2 * s, 2 * s], b: [2 * s, 2 * s] });
    assert.equal(d.update(0, burst(0)).change, undefined);
    const first = d.update(1000, burst(1));
    assert.deepEqual([first.ratio, first.checksPerSecond, first.change], [0.5, 8, undefined]);
    assert.equal(d.update(2000, burst(2)).change, undefined, "above, but not for long enough");
    assert.equal(d.update(3000, burst(3)).change, "fire");
    assert.equal(d.update(4000, burst(4)).change, undefined, "fires once");
    // Node b restarted (counter reset): counted from zero, not as a negative rate.
    const reset = d.update(5000, nodes({ a: [10, 10], b: [1, 1] }));
    assert.deepEqual([reset.checksPerSecond, reset.ratio, reset.change], [6, 0.5, undefined]);
    // The burst ends: 20 valid checks/s, 1 rejected, a share of 1/21 — below 25%.
    const calm = d.update(6000, nodes({ a: [30, 11], b: [1, 1] }));
    assert.equal(calm.change, "resolve");
    assert.equal(d.update(7000, nodes({ a: [50, 12], b: [1, 1] })).change, undefined, "resolves once");
  });

  test("the share at exactly the threshold is not above it, as in the rule's `>`", () => {
    const d = new SpikeDetector({ ...condition, forMs: 0 });
    d.update(0, nodes({ a: [0, 0] }));
    assert.equal(d.update(1000, nodes({ a: [3, 1] })).change, undefined);
    assert.equal(d.update(2000, nodes({ a: [5, 3] })).change, "fire");
  });
});

describe("the snapshot file", () => {
  const snap = (n: number): Snapshot => ({
    format: "signing-snapshot/1",
    takenAt: Date.now(),
    epochId: "e1",
    tokens: Array.from({ length: n }, (_, i) => ({
      id: `t${i}`,
      value: `{"i":${i}}`,
      expiresAt: Date.now() + 60_000,
    })),
    revoked: [{ id: "r1", reason: "revoked by issuer", expiresAt: Date.now() + 60_000 }],
    nonces: [{ id: "t0", n: 3, d: "ab", r: "0", expiresAt: Date.now() + 60_000 }],
  });

  test("written atomically with mode 0600, replaced whole, read back identical", async () => {
    const file = join(dir, "snapshot.json");
    await writeSnapshot(file, snap(3));
    await writeSnapshot(file, snap(5));
    const back = await readSnapshot(file);
    assert.equal(back?.tokens.length, 5);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.endsWith(".tmp")),
      [],
    );
    assert.equal(await readSnapshot(join(dir, "none.json")), undefined);
  });

  test("truncated, tampered or foreign files are refused with a clear reason", async () => {
    const file = join(dir, "bad.json");
    await writeSnapshot(file, snap(2));
    const good = readFileSync(file, "utf8");
    writeFileSync(file, good.slice(0, good.length / 2));
    await assert.rejects(
      readSnapshot(file),
      (e: Error) => e instanceof SnapshotCorruptError && /not JSON/.test(e.message),
    );
    writeFileSync(file, good.replace('"t1"', '"tX"'));
    await assert.rejects(readSnapshot(file), /checksum does not match/);
    writeFileSync(file, JSON.stringify({ snapshot: { hello: 1 } }));
    await assert.rejects(readSnapshot(file), SnapshotCorruptError);
  });
});

describe("alert delivery", () => {
  test("Alertmanager v4 payloads, sent once while firing, retried on failure, resolved once", async () => {
    const hook = await WebhookReceiver.start();
    try {
      const metrics = new MonitorMetrics();
      const alerter = new Alerter({
        webhookUrl: hook.url,
        runbookBaseUrl: "https://runbooks.example/runbooks",
        timeoutMs: 2000,
        retries: 3,
        monitorId: "m1",
        log: pino({ level: "silent" }),
        metrics,
      });
      hook.failNext = 2;
      alerter.fire("SnapshotStale", { summary: "stale", description: "old" });
      alerter.fire("SnapshotStale", { summary: "stale", description: "old" });
      alerter.resolve("SnapshotStale");
      alerter.resolve("SnapshotStale");
      await alerter.flush();
      assert.deepEqual(
        hook.payloads.map((p) => p.status),
        ["firing", "resolved"],
      );
      const p = hook.payloads[0];
      assert.equal(p?.version, "4");
      const a = p?.alerts[0];
      assert.equal(a?.labels.alertname, "SnapshotStale");
      assert.equal(a?.labels.severity, "ticket");
      assert.equal(a?.annotations.runbook_url, "https://runbooks.example/runbooks/SnapshotStale.md");
      assert.equal(a?.annotations.summary, "stale");
      assert.ok(a?.startsAt && !Number.isNaN(Date.parse(a.startsAt)));
      assert.equal(
        (await metrics.alertsSent.get()).values.find((v) => v.labels.alert === "SnapshotStale")?.value,
        2,
      );
    } finally {
      await hook.close();
    }
  });
});

test("a corrupt snapshot at start-up is set aside with a clear error, and the monitor starts", async () => {
  const { TestRedis } = await import("../helpers/redis.js");
  const stateDir = mkdtempSync(join(dir, "state-"));
  writeFileSync(join(stateDir, "snapshot.json"), "{ not json");
  const redis = await TestRedis.start();
  const lines: string[] = [];
  const { buildMonitorConfig } = await import("../../monitor/config.js");
  const { startMonitor } = await import("../../monitor/monitor.js");
  const monitor = await startMonitor(
    buildMonitorConfig(
      { monitor: { port: 0, stateDir }, redis: { url: redis.url }, alerts: { enabled: false } },
      "/",
      {},
    ),
    {
      log: pino({ level: "info" }, { write: (l: string) => void lines.push(l) }),
    },
  );
  try {
    const corrupt = lines.map((l) => JSON.parse(l)).find((l) => l.event === "snapshot_corrupt");
    assert.ok(corrupt, lines.join(""));
    assert.match(corrupt.reason, /snapshot .*snapshot\.json is unusable: not JSON/);
    assert.ok(existsSync(corrupt.movedTo));
    assert.equal(existsSync(join(stateDir, "snapshot.json")), false);
  } finally {
    await monitor.close();
    await redis.stop();
  }
});

describe("/readyz follows monitor.detectCron", () => {
  test("a pass is due within twice the schedule's longest gap plus 3 s: 5 s at every second", async () => {
    const { loopFreshnessMs } = await import("../../monitor/schedule.js");
    assert.equal(loopFreshnessMs("* * * * * *"), 5000);
    assert.equal(loopFreshnessMs("*/10 * * * * *"), 23_000);
    assert.equal(loopFreshnessMs("0,5 * * * * *"), 2 * 55_000 + 3000, "the longest gap, not the first");
  });
});
