import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { stringify } from "yaml";
import type { RunningMonitor } from "../../monitor/monitor.js";
import { freePort } from "../../scripts/redis-server.js";
import { getToken, upload } from "../helpers/api.js";
import { queries, readDashboards, substitute } from "../helpers/dashboards.js";
import { startTestMonitor } from "../helpers/monitor.js";
import { ProcessCluster } from "../helpers/process-cluster.js";

/**
 * The real Prometheus (Debian's package) with 1 s scrape and evaluation intervals, scraping a
 * local cluster and its monitor, evaluating prometheus/alerts.yml as shipped except that every
 * `for:` is 3 s so the run stays short.
 */
const root = new URL("../../../", import.meta.url).pathname;
const work = mkdtempSync(join(tmpdir(), "signing-prometheus-"));
let cluster: ProcessCluster;
let monitor: RunningMonitor;
let prometheus: ChildProcess | undefined;
let prom: string;
let promLog = "";

before(async () => {
  cluster = await ProcessCluster.start({ nodes: 3 });
  monitor = await startTestMonitor({ redisUrl: cluster.redis.url, nodes: cluster.urls });
  const rules = readFileSync(join(root, "prometheus/alerts.yml"), "utf8").replace(
    /^(\s+for:) \S+/gm,
    "$1 3s",
  );
  writeFileSync(join(work, "alerts.yml"), rules);
  const hostPort = (u: string) => u.replace(/^http:\/\//, "");
  writeFileSync(
    join(work, "prometheus.yml"),
    stringify({
      global: { scrape_interval: "1s", evaluation_interval: "1s" },
      rule_files: [join(work, "alerts.yml")],
      scrape_configs: [
        { job_name: "signing-nodes", static_configs: [{ targets: cluster.urls.map(hostPort) }] },
        { job_name: "signing-monitor", static_configs: [{ targets: [hostPort(monitor.url)] }] },
      ],
    }),
  );
  const port = await freePort();
  prom = `http://127.0.0.1:${port}`;
  prometheus = spawn(
    "prometheus",
    [
      `--config.file=${join(work, "prometheus.yml")}`,
      `--storage.tsdb.path=${join(work, "data")}`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--log.level=warn",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  prometheus.stderr?.on("data", (d: Buffer) => {
    promLog += d;
  });
  await until(
    "Prometheus ready",
    async () => (await fetch(`${prom}/-/ready`).catch(() => undefined))?.ok === true,
    30_000,
  );
});

after(async () => {
  if (prometheus && prometheus.exitCode === null) {
    const exited = new Promise((r) => prometheus?.once("exit", r));
    prometheus.kill("SIGTERM");
    await exited;
  }
  await monitor?.close();
  await cluster?.stop();
  rmSync(work, { recursive: true, force: true });
});

async function until(what: string, ok: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (prometheus?.exitCode !== null && prometheus?.exitCode !== undefined)
      throw new Error(`prometheus exited: ${promLog}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${promLog}`);
    await sleep(250);
  }
}

async function api<T>(path: string): Promise<T> {
  const res = await fetch(`${prom}${path}`);
  const body = (await res.json()) as { status: string; data: T; error?: string };
  assert.equal(body.status, "success", `${path}: ${body.error}`);
  return body.data;
}

test("Prometheus scrapes the cluster, InvalidTokenSpike fires on a burst, every dashboard query has data", async (t) => {
  await until(
    "all four targets up",
    async () => {
      const data = await api<{ activeTargets: { health: string }[] }>("/api/v1/targets");
      return data.activeTargets.length === 4 && data.activeTargets.every((x) => x.health === "up");
    },
    30_000,
  );

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

  // Then a burst of forged tokens until Prometheus says the alert fires.
  const started = Date.now();
  let firing = false;
  const forged = `v1.dev1.${Buffer.from('{"id":"x"}').toString("base64url")}.${"A".repeat(43)}`;
  while (!firing) {
    assert.ok(Date.now() - started < 90_000, `InvalidTokenSpike never fired\n${promLog}`);
    await Promise.all(
      cluster.urls.map((url) => upload(url, { token: forged, nonce: "", data: randomBytes(16) })),
    );
    const alerts = await api<{ alerts: { labels: Record<string, string>; state: string }[] }>(
      "/api/v1/alerts",
    );
    firing = alerts.alerts.some((a) => a.labels.alertname === "InvalidTokenSpike" && a.state === "firing");
    await sleep(100);
  }
  t.diagnostic(
    `InvalidTokenSpike firing in Prometheus ${((Date.now() - started) / 1000).toFixed(1)} s after the burst began`,
  );

  const empty: string[] = [];
  for (const d of readDashboards()) {
    for (const q of queries(d)) {
      if (q.where.includes("annotation")) continue; // annotations mark events, which this run has none of
      const expr = substitute(d, q.expr).replaceAll("[5m]", "[1m]");
      const data = await api<{ result: unknown[] }>(`/api/v1/query?query=${encodeURIComponent(expr)}`);
      if (data.result.length === 0) empty.push(`${q.where}: ${expr}`);
    }
  }
  assert.deepEqual(empty, [], "dashboard queries without data");
});
