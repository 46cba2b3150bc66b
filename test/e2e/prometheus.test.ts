import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { parse, stringify } from "yaml";
import type { RunningMonitor } from "../../monitor/monitor.js";
import { ProcessCluster } from "../../scripts/process-cluster.js";
import { freePort } from "../../scripts/redis-server.js";
import { getToken, upload } from "../helpers/api.js";
import { queries, readDashboards, substitute } from "../helpers/dashboards.js";
import { startTestMonitor } from "../helpers/monitor.js";

/**
 * Two real Prometheus processes (Debian's package) scraping a local cluster and its monitor:
 * `fast` evaluates prometheus/alerts.yml with 1 s scrape and evaluation intervals and every
 * `for:` rewritten to 3 s, so that the dashboards get data and firing is seen in seconds;
 * `shipped` evaluates alerts.yml as shipped at prometheus.yml's intervals (15 s), so that one
 * burst measures the delay of the real InvalidTokenSpike page.
 */
const root = new URL("../../../", import.meta.url).pathname;
const work = mkdtempSync(join(tmpdir(), "signing-prometheus-"));
let cluster: ProcessCluster;
let monitor: RunningMonitor;

interface Prometheus {
  url: string;
  process: ChildProcess;
  log: string;
}
let fast: Prometheus;
let shipped: Prometheus;
const shippedGlobal = (
  parse(readFileSync(join(root, "prometheus/prometheus.yml"), "utf8")) as {
    global: { scrape_interval: string; evaluation_interval: string };
  }
).global;

async function startPrometheus(
  name: string,
  global: { scrape_interval: string; evaluation_interval: string },
  rules: string,
): Promise<Prometheus> {
  const dir = join(work, name);
  mkdirSync(dir);
  writeFileSync(join(dir, "alerts.yml"), rules);
  const hostPort = (u: string) => u.replace(/^http:\/\//, "");
  writeFileSync(
    join(dir, "prometheus.yml"),
    stringify({
      global,
      rule_files: [join(dir, "alerts.yml")],
      scrape_configs: [
        { job_name: "signing-nodes", static_configs: [{ targets: cluster.urls.map(hostPort) }] },
        { job_name: "signing-monitor", static_configs: [{ targets: [hostPort(monitor.url)] }] },
      ],
    }),
  );
  const port = await freePort();
  const p: Prometheus = {
    url: `http://127.0.0.1:${port}`,
    process: spawn(
      "prometheus",
      [
        `--config.file=${join(dir, "prometheus.yml")}`,
        `--storage.tsdb.path=${join(dir, "data")}`,
        `--web.listen-address=127.0.0.1:${port}`,
        "--log.level=warn",
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    ),
    log: "",
  };
  p.process.stderr?.on("data", (d: Buffer) => {
    p.log += d;
  });
  await until(
    `Prometheus ${name} ready`,
    p,
    async () => (await fetch(`${p.url}/-/ready`).catch(() => undefined))?.ok === true,
    30_000,
  );
  return p;
}

before(async () => {
  // authenticode too: the dashboards' whole-file result panels read its series.
  cluster = await ProcessCluster.start({ nodes: 3, authenticode: true });
  monitor = await startTestMonitor({ redisUrl: cluster.redis.url, nodes: cluster.urls });
  const rules = readFileSync(join(root, "prometheus/alerts.yml"), "utf8");
  fast = await startPrometheus(
    "fast",
    { scrape_interval: "1s", evaluation_interval: "1s" },
    rules.replace(/^(\s+for:) \S+/gm, "$1 3s"),
  );
  shipped = await startPrometheus("shipped", shippedGlobal, rules);
});

after(async () => {
  for (const p of [fast, shipped]) {
    if (p && p.process.exitCode === null) {
      const exited = new Promise((r) => p.process.once("exit", r));
      p.process.kill("SIGTERM");
      await exited;
    }
  }
  await monitor?.close();
  await cluster?.stop();
  rmSync(work, { recursive: true, force: true });
});

async function until(
  what: string,
  p: Prometheus,
  ok: () => Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (p.process.exitCode !== null) throw new Error(`prometheus exited: ${p.log}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${p.log}`);
    await sleep(250);
  }
}

async function api<T>(p: Prometheus, path: string): Promise<T> {
  const res = await fetch(`${p.url}${path}`);
  const body = (await res.json()) as { status: string; data: T; error?: string };
  assert.equal(body.status, "success", `${path}: ${body.error}`);
  return body.data;
}

async function firing(p: Prometheus, alertname: string): Promise<boolean> {
  const data = await api<{ alerts: { labels: Record<string, string>; state: string }[] }>(
    p,
    "/api/v1/alerts",
  );
  return data.alerts.some((a) => a.labels.alertname === alertname && a.state === "firing");
}

test("Prometheus scrapes the cluster, InvalidTokenSpike fires on a burst (also as shipped), every dashboard query has data", async (t) => {
  for (const p of [fast, shipped]) {
    await until(
      "all four targets up",
      p,
      async () => {
        const data = await api<{ activeTargets: { health: string }[] }>(p, "/api/v1/targets");
        return data.activeTargets.length === 4 && data.activeTargets.every((x) => x.health === "up");
      },
      30_000,
    );
  }

  // Normal work first, so that histograms and counters have seen traffic.
  const auth = `Basic ${Buffer.from(`${cluster.state.issuer.user}:${cluster.state.issuer.password}`).toString("base64")}`;
  for (const url of cluster.urls) {
    const token = await getToken(url, auth);
    let nonce = "";
    for (let i = 0; i < 5; i++) {
      const res = await upload(url, { token, nonce, data: randomBytes(2000), wait: 10 });
      assert.equal(res.status, 202);
      nonce = res.headers["x-nonce"] as string;
    }
  }

  // Then a burst of forged tokens until both Prometheus processes say the alert fires.
  const started = Date.now();
  let fastAfter: number | undefined;
  let shippedAfter: number | undefined;
  const forged = `v1.dev1.${Buffer.from('{"id":"x"}').toString("base64url")}.${"A".repeat(43)}`;
  while (shippedAfter === undefined) {
    // The shipped rule pages 60-90 s into a burst at 15 s intervals, a little more when the
    // first scrape after the burst began saw only its first few checks.
    assert.ok(Date.now() - started < 120_000, `InvalidTokenSpike (as shipped) never fired\n${shipped.log}`);
    const statuses = await Promise.all(
      cluster.urls.map(
        async (url) => (await upload(url, { token: forged, nonce: "", data: randomBytes(16) })).status,
      ),
    );
    assert.deepEqual(statuses, [401, 401, 401], "forged tokens are rejected, not rate-limited");
    const elapsed = (Date.now() - started) / 1000;
    if (fastAfter === undefined && (await firing(fast, "InvalidTokenSpike"))) fastAfter = elapsed;
    if (await firing(shipped, "InvalidTokenSpike")) shippedAfter = elapsed;
    await sleep(100);
  }
  assert.ok(fastAfter !== undefined && fastAfter < 90, "InvalidTokenSpike (for: 3s) fired");
  t.diagnostic(
    `InvalidTokenSpike, every for: 3s, 1 s scrape and evaluation: firing ${fastAfter.toFixed(1)} s after the burst began`,
  );
  t.diagnostic(
    `InvalidTokenSpike as shipped (for: 1m), ${shippedGlobal.scrape_interval} scrape and ${shippedGlobal.evaluation_interval} evaluation: firing ${shippedAfter.toFixed(1)} s after the burst began`,
  );
  // Pending cannot begin before the burst does: firing sooner would mean for: is not 1m.
  assert.ok(shippedAfter >= 60, `the shipped rule fired after ${shippedAfter} s, before its for: of 1m`);

  const empty: string[] = [];
  for (const d of readDashboards()) {
    for (const q of queries(d)) {
      if (q.where.includes("annotation")) continue; // annotations mark events, which this run has none of
      const expr = substitute(d, q.expr).replaceAll("[5m]", "[1m]");
      const data = await api<{ result: unknown[] }>(fast, `/api/v1/query?query=${encodeURIComponent(expr)}`);
      if (data.result.length === 0) empty.push(`${q.where}: ${expr}`);
    }
  }
  assert.deepEqual(empty, [], "dashboard queries without data");
});
