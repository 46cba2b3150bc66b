import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { prepareDevState } from "../../scripts/dev-state.js";
import { NodeProcess, PortInUseError } from "../../scripts/node-process.js";
import { freePort, RedisServer } from "../../scripts/redis-server.js";
import {
  alive,
  childrenOf,
  redisLeftovers,
  spawnLocalCluster,
  threeFreePorts,
} from "../helpers/local-cluster.js";

const work = mkdtempSync(join(tmpdir(), "signing-local-cluster-"));
const clusters: ChildProcess[] = [];
/** Children of the clusters above: a failed test must not leave them running either. */
const childPids: number[] = [];

after(() => {
  for (const c of clusters) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  for (const pid of childPids.filter(alive)) process.kill(pid, "SIGKILL");
  rmSync(work, { recursive: true, force: true });
});

/** Another cluster's node, as far as a readiness check can tell: 200 on every path. */
async function impostor(port: number): Promise<Server> {
  const server = createServer((_req, res) => res.end('{"ready":true}'));
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return server;
}

function exited(child: ChildProcess, timeoutMs: number): Promise<number | string> {
  if (child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve(child.exitCode ?? (child.signalCode as string));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`still running after ${timeoutMs} ms`)), timeoutMs);
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      resolve(code ?? (signal as string));
    });
  });
}

/** Starts `npm start`'s program and returns it with its children once cluster.json is written. */
async function startedCluster(name: string) {
  const stateDir = join(work, name);
  const { cluster, output } = spawnLocalCluster(stateDir, await threeFreePorts());
  clusters.push(cluster);
  for (let i = 0; i < 300 && !existsSync(join(stateDir, "cluster.json")); i++) {
    assert.equal(cluster.exitCode, null, output());
    await sleep(100);
  }
  assert.ok(existsSync(join(stateDir, "cluster.json")), output());
  const children = childrenOf(cluster.pid as number);
  childPids.push(...children.map((c) => c.pid));
  // Its redis-server, three nodes and the monitor.
  assert.deepEqual(children.map((c) => c.comm).sort(), ["node", "node", "node", "node", "redis-server"]);
  const redis = children.find((c) => c.comm === "redis-server") as { pid: number };
  const cleanUp = redisLeftovers(cluster.pid as number, redis.pid, stateDir);
  return { cluster, pids: children.map((c) => c.pid), cleanUp };
}

test("npm start refuses in one line when one of its ports is taken, and writes no cluster.json", async () => {
  const base = await threeFreePorts();
  const taken = await impostor(base + 1);
  try {
    const stateDir = join(work, "taken");
    const { cluster, output } = spawnLocalCluster(stateDir, base);
    clusters.push(cluster);
    const code = await exited(cluster, 10_000);
    assert.notEqual(code, 0);
    const lines = output().trim().split("\n");
    assert.equal(lines.length, 1, output());
    assert.match(lines[0] as string, new RegExp(`port ${base + 1} is already in use`));
    assert.match(lines[0] as string, /SIGNING_BASE_PORT/);
    assert.equal(existsSync(join(stateDir, "cluster.json")), false);
  } finally {
    taken.close();
  }
});

test("a node whose port another server answers on is never taken for ready", async () => {
  const port = await freePort();
  const taken = await impostor(port);
  const redis = await RedisServer.start();
  const state = await prepareDevState(join(work, "impostor"), redis.url);
  const node = new NodeProcess({ configFile: state.configFile, port, id: "impostor-victim" });
  try {
    await assert.rejects(node.ready(10_000), (err) => err instanceof PortInUseError && err.port === port);
  } finally {
    await node.stop("SIGKILL");
    await redis.stop();
    taken.close();
  }
});

test("SIGTERM of npm start's cluster leaves none of its children running", async () => {
  const { cluster, pids } = await startedCluster("sigterm");
  cluster.kill("SIGTERM");
  assert.equal(await exited(cluster, 30_000), 0);
  assert.deepEqual(
    pids.filter((pid) => alive(pid)),
    [],
  );
});

test("SIGKILL of npm start's cluster: its nodes, monitor and redis-server stop within seconds", async () => {
  const { cluster, pids, cleanUp } = await startedCluster("sigkill");
  cluster.kill("SIGKILL");
  try {
    await exited(cluster, 5_000);
    for (let i = 0; i < 100 && pids.some((pid) => alive(pid)); i++) await sleep(100);
    assert.deepEqual(
      pids.filter((pid) => alive(pid)),
      [],
    );
  } finally {
    cleanUp();
  }
});
