import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { Alerter, type AlerterClock, type AlerterOptions, type AlertName } from "../../monitor/alerts.js";
import { buildMonitorConfig } from "../../monitor/config.js";
import { type Delivery, DeliveryQueue } from "../../monitor/delivery-queue.js";
import { MonitorMetrics } from "../../monitor/metrics.js";
import { SpikeDetector } from "../../monitor/spike.js";
import { ConfigError } from "../../src/config/load.js";
import { WebhookReceiver } from "../helpers/webhook.js";

const root = new URL("../../../", import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), "monitor-alerts-unit-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const base = { monitor: { stateDir: join(dir, "state") }, redis: { url: "redis://127.0.0.1:1" } };

function problems(raw: unknown, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    buildMonitorConfig(raw, "/", env);
    return [];
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.problems;
  }
}

describe("the monitor's alert destination", () => {
  test("none is refused, listed with the other problems, unless alerts.enabled is false", () => {
    const one = problems(base);
    assert.equal(one.length, 1, one.join("\n"));
    assert.match(one[0] as string, /^alerts: no alert destination/);
    const two = problems({ ...base, monitor: { ...base.monitor, port: -1 }, alerts: {} });
    assert.equal(two.length, 2, two.join("\n"));
    assert.match(two[0] as string, /^monitor\.port:/);
    assert.match(two[1] as string, /^alerts: no alert destination.*alerts\.webhookUrl.*enabled: false/);
    assert.equal((two[1] as string).includes("\n"), false, "one line");

    assert.deepEqual(problems({ ...base, alerts: { enabled: false } }), []);
    assert.deepEqual(problems({ ...base, alerts: { webhookUrl: "http://pager:8080/hook" } }), []);
    assert.deepEqual(problems({ ...base, alerts: { alertmanagerUrl: "http://alertmanager:9093" } }), []);
    assert.deepEqual(problems(base, { SIGNING_MONITOR__alerts__enabled: "false" }), []);
    assert.match(
      problems({ ...base, alerts: { enabled: false, webhookUrl: "http://pager:8080/hook" } })[0] ?? "",
      /enabled is false but alerts\.webhookUrl is set/,
    );
  });

  test("signing-monitor refuses to start without one: the problem on one line, exit 2", () => {
    const file = join(dir, "monitor.yaml");
    writeFileSync(file, `monitor: { stateDir: ${dir}/s, port: 0 }\nredis: { url: "redis://127.0.0.1:1" }\n`);
    const r = spawnSync(process.execPath, [join(root, "dist/monitor/bin.js"), "--config", file], {
      encoding: "utf8",
      timeout: 20_000,
    });
    assert.equal(r.status, 2, r.stderr);
    assert.match(
      r.stderr,
      /^ {2}- alerts: no alert destination, .* or alerts: \{ enabled: false \} to run without$/m,
    );
    assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
  });
});

function alerter(o: Partial<AlerterOptions> = {}): { alerter: Alerter; metrics: MonitorMetrics } {
  const metrics = new MonitorMetrics();
  const a = new Alerter({
    runbookBaseUrl: "https://runbooks.example",
    timeoutMs: 1000,
    retries: 1,
    monitorId: "m1",
    log: pino({ level: "silent" }),
    metrics,
    ...o,
  });
  return { alerter: a, metrics };
}

const value = async (metrics: MonitorMetrics, alert: string, kind = "notify") =>
  (await metrics.alertDeliveryFailures.get()).values.find(
    (v) => v.labels.alert === alert && v.labels.kind === kind,
  )?.value;

describe("delivery metrics", () => {
  test("a notification given up after every retry counts as a delivery failure, by alert", async () => {
    const hook = await WebhookReceiver.start();
    try {
      const { alerter: a, metrics } = alerter({ webhookUrl: hook.url });
      assert.equal((await metrics.alertDeliveryConfigured.get()).values[0]?.value, 1);
      for (const name of ["RedisUnreachable", "SnapshotStale", "InvalidTokenSpike"])
        assert.equal(await value(metrics, name), 0, `${name} starts at zero`);
      hook.failNext = 1; // one failure, then the retry gets through: no delivery failure
      a.fire("SnapshotStale", { summary: "s", description: "d" });
      await a.flush();
      assert.equal(await value(metrics, "SnapshotStale"), 0);
      hook.failNext = 2; // the try and its one retry fail
      a.fire("RedisUnreachable", { summary: "s", description: "d" });
      await a.flush();
      assert.equal(await value(metrics, "RedisUnreachable"), 1);
      assert.equal(await value(metrics, "SnapshotStale"), 0);
      assert.deepEqual(
        hook.alerts().map((x) => x.labels.alertname),
        ["SnapshotStale"],
      );
    } finally {
      await hook.close();
    }
  });

  test("a receiver that is not there counts too; no destination reads 0 configured", async () => {
    const { alerter: a, metrics } = alerter({ webhookUrl: "http://127.0.0.1:1/hook", retries: 0 });
    a.fire("RedisRestarted", { summary: "s", description: "d" });
    await a.flush();
    assert.equal(await value(metrics, "RedisRestarted"), 1);
    const none = alerter();
    assert.equal((await none.metrics.alertDeliveryConfigured.get()).values[0]?.value, 0);
  });
});

/** Records what is posted to /api/v2/alerts, as Alertmanager's API takes it. */
async function fakeAlertmanager(): Promise<{ url: string; posts: unknown[][]; close: () => void }> {
  const posts: unknown[][] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.method !== "POST" || req.url !== "/api/v2/alerts") {
        res.writeHead(404).end();
        return;
      }
      posts.push(JSON.parse(Buffer.concat(chunks).toString()));
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, posts, close: () => server.close() };
}

interface AmAlert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  startsAt: string;
  endsAt: string;
}

test("to Alertmanager's API: firing re-sent while it fires, with an end ahead; resolved ends now", async () => {
  const am = await fakeAlertmanager();
  const hook = await WebhookReceiver.start();
  const { alerter: a } = alerter({ alertmanagerUrl: `${am.url}/`, webhookUrl: hook.url, resendMs: 100 });
  try {
    a.fire("RedisUnreachable", { summary: "down", description: "d" });
    await sleep(350);
    a.resolve("RedisUnreachable");
    await a.flush();
    const sent = am.posts.map((p) => p[0] as AmAlert);
    assert.ok(sent.length >= 4, `firing, re-sent at least twice, resolved: ${sent.length}`);
    const [first, last] = [sent[0] as AmAlert, sent[sent.length - 1] as AmAlert];
    assert.deepEqual(first.labels, {
      alertname: "RedisUnreachable",
      severity: "page",
      service: "signing-cluster",
      monitor: "m1",
    });
    assert.equal(first.annotations.runbook_url, "https://runbooks.example/RedisUnreachable.md");
    assert.ok(Date.parse(first.endsAt) > Date.parse(first.startsAt) + 300, "valid for 4 re-sends");
    assert.ok(sent.every((x) => x.startsAt === first.startsAt && x.labels.monitor === "m1"));
    assert.ok(Date.parse(last.endsAt) <= Date.now(), "resolved: ended");
    const count = am.posts.length;
    await sleep(250);
    assert.equal(am.posts.length, count, "nothing re-sent once resolved");
    assert.deepEqual(
      hook.payloads.map((p) => p.status),
      ["firing", "resolved"],
      "the webhook is told once each",
    );
  } finally {
    a.close();
    am.close();
    await hook.close();
  }
});

describe("re-sends to a hanging Alertmanager", () => {
  test("the queue: changes first and in order, one re-send per alert, a change drops its re-send", async () => {
    const sent: string[] = [];
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const queue = new DeliveryQueue(async (d) => {
      await gate;
      sent.push(`${d.kind} ${d.name} ${d.body}`);
    });
    const d = (kind: Delivery["kind"], name: AlertName, body: string): Delivery => ({
      kind,
      name,
      status: "firing",
      url: "http://127.0.0.1:1",
      body,
    });
    queue.push(d("notify", "RedisUnreachable", "1")); // being sent
    for (let i = 2; i <= 11; i++) queue.push(d("resend", "RedisUnreachable", String(i)));
    queue.push(d("resend", "SnapshotStale", "12"));
    queue.push(d("resend", "InvalidTokenSpike", "13"));
    queue.push(d("notify", "RedisRestarted", "14"));
    queue.push(d("notify", "InvalidTokenSpike", "15"));
    assert.equal(queue.waiting, 4, "three changes and two re-sends wait");
    release();
    await queue.drained();
    assert.deepEqual(sent, [
      "notify RedisUnreachable 1",
      "notify RedisRestarted 14",
      "notify InvalidTokenSpike 15",
      "resend RedisUnreachable 11",
      "resend SnapshotStale 12",
    ]);
  });

  test("re-sends do not pile up, a new page goes first, and their failures count apart", async () => {
    const am = await WebhookReceiver.start();
    am.hang = true;
    const resendMs = 50;
    const { alerter: a, metrics } = alerter({
      alertmanagerUrl: am.url,
      resendMs,
      timeoutMs: 300,
      retries: 0,
    });
    try {
      a.fire("RedisUnreachable", { summary: "s", description: "d" });
      await sleep(20 * resendMs);
      assert.ok(a.queued() <= 1, `at most one re-send of the alert waits, not one per tick: ${a.queued()}`);
      const before = am.hung.length;
      a.fire("InvalidTokenSpike", { summary: "s", description: "d" });
      for (let i = 0; i < 60 && am.hung.length === before; i++) await sleep(50);
      const next = (am.hung[before] as AmAlert[] | undefined)?.[0];
      assert.equal(next?.labels.alertname, "InvalidTokenSpike", "the new page ahead of waiting re-sends");
      assert.equal(await value(metrics, "RedisUnreachable", "notify"), 1, "its firing reached nobody");
      const resends = (await value(metrics, "RedisUnreachable", "resend")) ?? 0;
      assert.ok(resends >= 1, "re-sends given up count as re-sends");
      const inARow = (await metrics.alertResendFailuresInARow.get()).values[0]?.value;
      assert.equal(inARow, resends, "every re-send failed, in a row");
    } finally {
      a.close();
      await am.close();
      await a.flush();
    }
  });
});

describe("the firing alerts, kept across restarts", () => {
  const text = { summary: "Redis down", description: "connect ECONNREFUSED" };

  test("alerts.json says the change before the receiver hears of it", async () => {
    const stateFile = join(dir, "alerts-before-send.json");
    const seen: string[][] = [];
    const server = createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        const kept = existsSync(stateFile) ? JSON.parse(readFileSync(stateFile, "utf8")).alerts : [];
        seen.push(kept.map((x: { name: string }) => x.name));
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const webhookUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
      const { alerter: a } = alerter({ webhookUrl, stateFile });
      a.fire("RedisUnreachable", text);
      await a.flush();
      a.resolve("RedisUnreachable");
      await a.flush();
      assert.deepEqual(seen, [["RedisUnreachable"], []], "firing: kept as firing; resolved: gone");
    } finally {
      server.close();
    }
  });

  test("written atomically (mode 0600) as alerts fire and resolve", async () => {
    const stateFile = join(dir, "alerts-a.json");
    const { alerter: a } = alerter({ stateFile });
    a.fire("RedisUnreachable", text);
    a.fire("SnapshotStale", { summary: "s", description: "d" });
    a.resolve("SnapshotStale");
    await a.flush();
    const kept = JSON.parse(readFileSync(stateFile, "utf8"));
    assert.deepEqual(
      kept.alerts.map((x: { name: string }) => x.name),
      ["RedisUnreachable"],
    );
    assert.equal(kept.alerts[0].labels.monitor, "m1");
    assert.equal(statSync(stateFile).mode & 0o777, 0o600);
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.endsWith(".tmp")),
      [],
    );
  });

  test("a new run resolves what no longer holds and fires again what does, with the first start", async () => {
    const hook = await WebhookReceiver.start();
    try {
      const stateFile = join(dir, "alerts-b.json");
      const first = alerter({ stateFile, webhookUrl: hook.url }).alerter;
      first.fire("RedisUnreachable", text);
      first.fire("InvalidTokenSpike", { summary: "spike", description: "d" });
      await first.flush();
      const fired = hook.alerts("RedisUnreachable", "firing")[0];
      // The next run: another monitor id would be another alert at the receiver; the kept
      // labels are used.
      const { alerter: next } = alerter({ stateFile, webhookUrl: hook.url, monitorId: "m1-restarted" });
      const inherited = await next.restore();
      assert.deepEqual(inherited.map((x) => x.name).sort(), ["InvalidTokenSpike", "RedisUnreachable"]);
      assert.ok(next.isFiring("RedisUnreachable"));
      assert.equal(next.reconcile("RedisUnreachable", false), true);
      assert.equal(next.reconcile("RedisUnreachable", false), false, "decided once");
      assert.equal(next.reconcile("InvalidTokenSpike", true), true);
      await next.flush();
      const resolved = hook.alerts("RedisUnreachable", "resolved")[0];
      assert.ok(resolved, JSON.stringify(hook.alerts()));
      assert.equal(resolved.startsAt, fired?.startsAt);
      assert.deepEqual(resolved.labels, fired?.labels);
      const spikes = hook.alerts("InvalidTokenSpike", "firing");
      assert.equal(spikes.length, 2, "fired again");
      assert.equal(spikes[1]?.startsAt, spikes[0]?.startsAt);
      assert.deepEqual(
        JSON.parse(readFileSync(stateFile, "utf8")).alerts.map((x: { name: string }) => x.name),
        ["InvalidTokenSpike"],
      );
    } finally {
      await hook.close();
    }
  });

  test("an unreadable file is logged and read as nothing firing", async () => {
    const stateFile = join(dir, "alerts-c.json");
    writeFileSync(stateFile, '{"version":1,"alerts":[{"name":"RedisUnreachable"}]}');
    const lines: string[] = [];
    const log = pino({ level: "info" }, { write: (l: string) => void lines.push(l) });
    const { alerter: a } = alerter({ stateFile, log });
    assert.deepEqual(await a.restore(), []);
    const line = lines.map((l) => JSON.parse(l)).find((l) => l.event === "alert_state_unreadable");
    assert.match(line?.reason ?? "", /labels/);
  });
});

test("a spike the previous run fired resolves at the first reading below the condition", () => {
  const d = new SpikeDetector({ ratio: 0.25, minChecksPerSecond: 0.1, forMs: 60_000 });
  const node = (valid: number, expired: number) =>
    new Map([
      [
        "a",
        new Map([
          ["valid", valid],
          ["expired", expired],
        ]),
      ],
    ]);
  d.update(0, node(0, 0));
  const above = d.update(1000, node(1, 1));
  assert.deepEqual([above.above, above.change], [true, undefined]);
  d.resumeFiring(1000);
  assert.equal(d.update(2000, node(2, 2)).change, undefined, "still firing, not fired again");
  const below = d.update(3000, node(12, 2));
  assert.deepEqual([below.above, below.change], [false, "resolve"]);
});

/** A clock the test moves: timers run when it passes their time, never on their own. */
class ManualClock implements AlerterClock {
  private timers: { at: number; fn: () => void; id: number }[] = [];
  private ids = 0;
  constructor(public t: number) {}
  now = () => this.t;
  setTimeout = (fn: () => void, ms: number) => {
    const id = ++this.ids;
    this.timers.push({ at: this.t + ms, fn, id });
    return id;
  };
  clearTimeout = (id: unknown) => {
    this.timers = this.timers.filter((x) => x.id !== id);
  };
  advance(ms: number): void {
    this.t += ms;
    const due = this.timers.filter((x) => x.at <= this.t);
    this.timers = this.timers.filter((x) => x.at > this.t);
    for (const x of due) x.fn();
  }
}

describe("a fired alert stays firing for alerts.minFiringSeconds", () => {
  const text = { summary: "spike", description: "d" };
  const statuses = (hook: WebhookReceiver) => hook.alerts("InvalidTokenSpike").map((x) => x.status);

  test("a condition that clears at once is resolved only when the minimum is over, at its end", async () => {
    const hook = await WebhookReceiver.start();
    const clock = new ManualClock(Date.parse("2026-12-06T20:00:00Z"));
    const { alerter: a } = alerter({ webhookUrl: hook.url, minFiringMs: 45_000, clock });
    try {
      a.fire("InvalidTokenSpike", text);
      clock.advance(30_000);
      a.resolve("InvalidTokenSpike");
      a.resolve("InvalidTokenSpike"); // said again on the next check: still one resolve held
      await a.flush();
      assert.deepEqual(statuses(hook), ["firing"], "still firing when Alertmanager's group_wait is over");
      assert.ok(a.isFiring("InvalidTokenSpike") && a.isResolveHeld("InvalidTokenSpike"));
      clock.advance(14_999);
      await a.flush();
      assert.deepEqual(statuses(hook), ["firing"]);
      clock.advance(1);
      await a.flush();
      assert.deepEqual(statuses(hook), ["firing", "resolved"]);
      const resolved = hook.alerts("InvalidTokenSpike", "resolved")[0];
      assert.equal(resolved?.endsAt, "2026-12-06T20:00:45.000Z", "ends when the minimum is over");
      assert.equal(resolved?.startsAt, "2026-12-06T20:00:00.000Z");
      assert.equal(a.isFiring("InvalidTokenSpike"), false);
    } finally {
      a.close();
      await hook.close();
    }
  });

  test("firing again while the resolve is held keeps it firing: one alert, resolved once it clears", async () => {
    const hook = await WebhookReceiver.start();
    const clock = new ManualClock(Date.parse("2026-12-06T20:00:00Z"));
    const { alerter: a } = alerter({ webhookUrl: hook.url, minFiringMs: 45_000, clock });
    try {
      a.fire("InvalidTokenSpike", text);
      clock.advance(10_000);
      a.resolve("InvalidTokenSpike");
      clock.advance(10_000);
      a.fire("InvalidTokenSpike", text);
      assert.equal(a.isResolveHeld("InvalidTokenSpike"), false);
      clock.advance(60_000);
      await a.flush();
      assert.deepEqual(statuses(hook), ["firing"], "the condition held again: no resolve");
      a.resolve("InvalidTokenSpike"); // past the minimum: at once
      await a.flush();
      assert.deepEqual(statuses(hook), ["firing", "resolved"]);
    } finally {
      a.close();
      await hook.close();
    }
  });

  test("0 resolves at once; an event fired anew is resolved and fired at once, whatever its age", async () => {
    const hook = await WebhookReceiver.start();
    const clock = new ManualClock(Date.parse("2026-12-06T20:00:00Z"));
    const { alerter: a } = alerter({ webhookUrl: hook.url, minFiringMs: 0, clock });
    const held = alerter({ webhookUrl: hook.url, minFiringMs: 45_000, clock }).alerter;
    try {
      a.fire("InvalidTokenSpike", text);
      a.resolve("InvalidTokenSpike");
      held.fire("RedisRestarted", text);
      clock.advance(1000);
      held.refire("RedisRestarted", { summary: "again", description: "d" });
      await Promise.all([a.flush(), held.flush()]);
      assert.deepEqual(statuses(hook), ["firing", "resolved"]);
      assert.deepEqual(
        hook.alerts("RedisRestarted").map((x) => `${x.status} ${x.annotations.summary}`),
        ["firing spike", "resolved spike", "firing again"],
      );
    } finally {
      a.close();
      held.close();
      await hook.close();
    }
  });
});
