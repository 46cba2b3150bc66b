import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { parse } from "yaml";
import { findAlertmanager } from "../../scripts/alertmanager.js";
import { alive, childrenOf, spawnLocalCluster, threeFreePorts } from "../helpers/local-cluster.js";

/**
 * npm start makes the monitor's pages visible to a newcomer: printed as they arrive and kept in
 * alerts.log, straight from the monitor (no Alertmanager) or through a local Alertmanager.
 */
const work = mkdtempSync(join(tmpdir(), "signing-local-alerts-"));
const clusters: ChildProcess[] = [];
const childPids: number[] = [];

after(async () => {
  const running = clusters.filter((c) => c.exitCode === null && c.signalCode === null);
  await Promise.all(
    running.map((c) => {
      const exited = new Promise((r) => c.once("exit", r));
      c.kill("SIGTERM");
      return exited;
    }),
  );
  for (const pid of childPids.filter(alive)) process.kill(pid, "SIGKILL");
  rmSync(work, { recursive: true, force: true });
});

async function until(what: string, ok: () => boolean, output: () => string, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    assert.ok(Date.now() < deadline, `${what}, not within ${timeoutMs} ms:\n${output()}`);
    await sleep(100);
  }
}

/** Starts npm start's program, kills its Redis, and waits for the page to be printed. */
async function pageOnRedisDown(name: string, env: Record<string, string>) {
  const stateDir = join(work, name);
  const { cluster, output } = spawnLocalCluster(stateDir, await threeFreePorts(), env);
  clusters.push(cluster);
  const clusterJson = join(stateDir, "cluster.json");
  await until("cluster.json written", () => existsSync(clusterJson) || cluster.exitCode !== null, output);
  const info = JSON.parse(readFileSync(clusterJson, "utf8"));
  const monitorConfig = parse(readFileSync(join(stateDir, "monitor.yaml"), "utf8"));
  const children = childrenOf(cluster.pid as number);
  childPids.push(...children.map((c) => c.pid));
  const redis = children.find((c) => c.comm === "redis-server");
  assert.ok(redis, JSON.stringify(children));
  process.kill(redis.pid, "SIGKILL");
  const page =
    /^alert \[page\] FIRING RedisUnreachable via (\S+): The signing cluster's Redis is unreachable \(runbook: \S+RedisUnreachable\.md\)$/m;
  await until("the page printed", () => page.test(output()), output);
  const logged = readFileSync(info.alerts.log, "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  assert.ok(
    logged.some((a) => a.status === "firing" && a.labels.alertname === "RedisUnreachable"),
    JSON.stringify(logged),
  );
  return { cluster, info, monitorConfig, children, via: page.exec(output())?.[1], output };
}

test("without Alertmanager, the monitor pages the local receiver: printed and in alerts.log", async () => {
  const r = await pageOnRedisDown("receiver", { SIGNING_ALERTMANAGER: "none" });
  assert.deepEqual(r.monitorConfig.alerts, { webhookUrl: r.info.alerts.receiver });
  assert.equal(r.info.alerts.alertmanager, undefined);
  assert.equal(r.via, "signing-monitor", "straight from the monitor");
  assert.match(r.output(), /straight from the monitor/);
});

const program = findAlertmanager({ ...process.env, SIGNING_ALERTMANAGER: "" });

test("with Alertmanager installed, pages go through it, routed as prometheus/alertmanager.yml says", {
  skip: program ? false : "no alertmanager or prometheus-alertmanager on PATH",
}, async () => {
  const r = await pageOnRedisDown("alertmanager", { SIGNING_ALERTMANAGER: "" });
  assert.deepEqual(r.monitorConfig.alerts, { alertmanagerUrl: r.info.alerts.alertmanager });
  assert.equal(r.via, "signing-pager", "severity page took the pager route");
  const am = r.children.find((c) => c.comm !== "node" && c.comm !== "redis-server");
  assert.ok(am, JSON.stringify(r.children));
  const exited = new Promise((resolve) => r.cluster.once("exit", resolve));
  r.cluster.kill("SIGTERM");
  await exited;
  await until("Alertmanager stopped with the cluster", () => !alive(am.pid), r.output, 5000);
});
