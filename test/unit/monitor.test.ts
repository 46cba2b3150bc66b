import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { pino } from "pino";
import { Alerter } from "../../monitor/alerts.js";
import { classify, type Observation, parseInfoServer } from "../../monitor/detect.js";
import { MonitorMetrics } from "../../monitor/metrics.js";
import { rejectedCounts, SpikeDetector } from "../../monitor/spike.js";
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
  test("rejected results only, rate across nodes, fire after the hold time, resolve below", () => {
    const text = [
      'signing_token_checks_total{result="valid"} 100',
      'signing_token_checks_total{result="bad_signature"} 7',
      'signing_token_checks_total{result="recovering"} 50',
    ].join("\n");
    assert.deepEqual([...rejectedCounts(text)], [["bad_signature", 7]]);

    const d = new SpikeDetector(5, 2000);
    const at = (n: Record<string, number>) =>
      new Map(Object.entries(n).map(([node, v]) => [node, new Map([["expired", v]])]));
    assert.equal(d.update(0, at({ a: 0, b: 0 })).change, undefined);
    const r1 = d.update(1000, at({ a: 4, b: 4 }));
    assert.equal(r1.rate, 8);
    assert.equal(r1.change, undefined, "above, but not for long enough");
    assert.equal(d.update(2000, at({ a: 8, b: 8 })).change, undefined);
    assert.equal(d.update(3000, at({ a: 12, b: 12 })).change, "fire");
    assert.equal(d.update(4000, at({ a: 16, b: 16 })).change, undefined, "fires once");
    // Node b restarted (counter reset): counted from zero, not as a negative rate.
    assert.equal(d.update(5000, at({ a: 16, b: 1 })).rate, 1);
    assert.equal(d.update(5000 + 1, at({ a: 16, b: 1 })).change, undefined);
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
    buildMonitorConfig({ monitor: { port: 0, stateDir }, redis: { url: redis.url } }, "/", {}),
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
