import assert from "node:assert/strict";
import { type ChildProcess, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { ProcessInfo } from "../../scripts/local-control.js";
import {
  alive,
  childrenOf,
  redisLeftovers,
  spawnLocalCluster,
  threeFreePorts,
} from "../helpers/local-cluster.js";

/**
 * `node dist/scripts/local-ctl.js` against npm start's cluster: restart a node and the monitor
 * on their ports, stop and start one, and whatever it started still stops with the cluster.
 */

const root = new URL("../../../", import.meta.url).pathname;
const ctl = join(root, "dist/scripts/local-ctl.js");
const work = mkdtempSync(join(tmpdir(), "signing-local-ctl-"));
const clusters: ChildProcess[] = [];
const pids = new Set<number>();

after(() => {
  for (const c of clusters) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  for (const pid of [...pids].filter(alive)) process.kill(pid, "SIGKILL");
  rmSync(work, { recursive: true, force: true });
});

function localCtl(stateDir: string, ...args: string[]) {
  const r = spawnSync(process.execPath, [ctl, ...args], {
    encoding: "utf8",
    env: { ...process.env, SIGNING_STATE_DIR: stateDir },
    timeout: 60_000,
  });
  return { status: r.status, out: r.stdout, err: r.stderr };
}

function processes(stateDir: string): ProcessInfo[] {
  const r = localCtl(stateDir, "ps", "--json");
  assert.equal(r.status, 0, r.err);
  const list = JSON.parse(r.out) as ProcessInfo[];
  for (const p of list) if (p.pid) pids.add(p.pid);
  return list;
}

const byId = (list: ProcessInfo[], id: string) => list.find((p) => p.id === id) as ProcessInfo;

async function readyz(url: string): Promise<number> {
  try {
    return (await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(5000) })).status;
  } catch {
    return 0;
  }
}

function exited(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`still running after ${timeoutMs} ms`)), timeoutMs);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

async function started(name: string) {
  const stateDir = join(work, name);
  const { cluster, output } = spawnLocalCluster(stateDir, await threeFreePorts());
  clusters.push(cluster);
  for (let i = 0; i < 300 && !existsSync(join(stateDir, "cluster.json")); i++) {
    assert.equal(cluster.exitCode, null, output());
    await sleep(100);
  }
  assert.ok(existsSync(join(stateDir, "cluster.json")), output());
  return { stateDir, cluster, output };
}

test("local-ctl restarts a node and the monitor on their ports, stops and starts one, and SIGTERM of the cluster leaves nothing", async () => {
  const { stateDir, cluster, output } = await started("restart");
  const info = JSON.parse(readFileSync(join(stateDir, "cluster.json"), "utf8"));
  assert.equal(statSync(info.control.tokenFile).mode & 0o777, 0o600);
  const before = processes(stateDir);
  assert.deepEqual(
    before.map((p) => `${p.id} ${p.kind} ${p.running}`),
    [
      "local-0 node true",
      "local-1 node true",
      "local-2 node true",
      "local-monitor monitor true",
      "redis redis true",
    ],
  );
  assert.deepEqual(info.processes, before, "cluster.json lists the same processes");
  assert.equal(byId(before, "local-1").log, join(stateDir, "node-1.log"));

  // A node: a new process on the same port, same id, linked to the cluster, its log appended.
  const node1 = byId(before, "local-1");
  const r1 = localCtl(stateDir, "restart", "local-1");
  assert.equal(r1.status, 0, r1.err);
  assert.match(r1.out, /^local-1 \(node\) restarted, ready in \d+ ms: http:\/\/127\.0\.0\.1:\d+, pid \d+/);
  const after1 = byId(processes(stateDir), "local-1");
  assert.notEqual(after1.pid, node1.pid);
  assert.equal(alive(node1.pid as number), false);
  assert.equal(after1.url, node1.url);
  assert.equal(await readyz(node1.url), 200);
  const version = (await (await fetch(`${node1.url}/__version__`)).json()) as { node?: string };
  assert.equal(version.node, "local-1");
  const started1 = readFileSync(join(stateDir, "node-1.log"), "utf8").match(/"event":"node_started"/g);
  assert.equal(started1?.length, 2, "the restarted node appends to the same log");
  assert.ok(
    childrenOf(cluster.pid as number).some((c) => c.pid === after1.pid),
    "the new node is the cluster's child",
  );

  // The monitor: same port, ready again.
  const monitor = byId(before, "local-monitor");
  const rm = localCtl(stateDir, "restart", "local-monitor");
  assert.equal(rm.status, 0, rm.err);
  const afterM = byId(processes(stateDir), "local-monitor");
  assert.notEqual(afterM.pid, monitor.pid);
  assert.equal(afterM.url, monitor.url);
  assert.equal(await readyz(monitor.url), 200);

  // stop --kill leaves it stopped (port closed, cluster.json says so), start brings it back.
  const node2 = byId(before, "local-2");
  const rs = localCtl(stateDir, "stop", "local-2", "--kill");
  assert.equal(rs.status, 0, rs.err);
  assert.match(rs.out, /stopped \(SIGKILL\)/);
  assert.equal(alive(node2.pid as number), false);
  assert.equal(await readyz(node2.url), 0);
  const listed = byId(JSON.parse(readFileSync(join(stateDir, "cluster.json"), "utf8")).processes, "local-2");
  assert.deepEqual([listed.running, listed.pid], [false, null]);
  const rst = localCtl(stateDir, "start", "local-2");
  assert.equal(rst.status, 0, rst.err);
  assert.equal(await readyz(node2.url), 200);
  assert.match(localCtl(stateDir, "start", "local-2").out, /already running/);
  assert.doesNotMatch(output(), /exited/, "a process local-ctl stopped is not reported as a crash");

  // Mistakes: exit 2, one line.
  const unknown = localCtl(stateDir, "restart", "local-9");
  assert.equal(unknown.status, 2);
  assert.match(unknown.err, /no process local-9 in this cluster \(there are local-0, /);

  const all = processes(stateDir).map((p) => p.pid as number);
  cluster.kill("SIGTERM");
  await exited(cluster, 30_000);
  assert.deepEqual(
    all.filter((pid) => alive(pid)),
    [],
  );
  const gone = localCtl(stateDir, "ps");
  assert.equal(gone.status, 2);
  assert.match(gone.err, /does not answer .*is npm start still running/);
});

test("what local-ctl restarted still dies with a SIGKILLed cluster", async () => {
  const { stateDir, cluster } = await started("sigkill");
  assert.equal(localCtl(stateDir, "restart", "local-0").status, 0);
  assert.equal(localCtl(stateDir, "restart", "local-monitor").status, 0);
  assert.equal(localCtl(stateDir, "stop", "local-2").status, 0);
  const list = processes(stateDir);
  const cleanUp = redisLeftovers(cluster.pid as number, byId(list, "redis").pid as number, stateDir);
  const running = list.filter((p) => p.running).map((p) => p.pid as number);
  assert.equal(running.length, 4);
  cluster.kill("SIGKILL");
  try {
    await exited(cluster, 5_000);
    for (let i = 0; i < 100 && running.some((pid) => alive(pid)); i++) await sleep(100);
    assert.deepEqual(
      running.filter((pid) => alive(pid)),
      [],
    );
  } finally {
    cleanUp();
  }
});
