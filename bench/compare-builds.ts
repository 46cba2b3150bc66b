/**
 * Compare builds: what a change to the node costs, measured against this tree's build in one
 * run. Each build (this tree, then every tree in BENCH_BUILDS, each built with `npm run build`)
 * runs one node process in turn, round after round, under the same load: steady signatures/s
 * and node CPU per signature once warm, then the same after every Redis connection is dropped
 * (`CLIENT KILL TYPE normal`: the client reconnects, data stays) twice. Not in `npm run bench`:
 * it needs the other trees. docs/performance.md ("Patched dependency internals") shows its use.
 *
 *   BENCH_BUILDS=no-patch=/tmp/tree-without-it node dist/bench/compare-builds.js
 *   BENCH_ROUNDS=2  BENCH_CLIENTS=16  BENCH_SECONDS=5
 */
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Redis } from "ioredis";
import { ProcessCluster } from "../scripts/process-cluster.js";
import {
  basicAuth,
  benchNodeEnv,
  clientDir,
  cpuMs,
  issueTokens,
  main,
  printTable,
  ROOT,
  ratio,
  sleep,
  WARM_SIGNATURES_PER_NODE,
  writeResult,
} from "./lib.js";
import { WorkerLoad } from "./load-worker.js";

const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 2));
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 16);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
/** Seconds from one dropped connection to the next: the first second after each is skipped. */
const RECONNECT_SPACING_S = SECONDS + 3;

interface Build {
  label: string;
  root: string;
}

function builds(): Build[] {
  const others = (process.env.BENCH_BUILDS ?? "").split(",").filter(Boolean);
  if (others.length === 0) throw new Error("BENCH_BUILDS=label=/path/to/built/tree,… is required");
  return [
    { label: "this tree", root: ROOT },
    ...others.map((spec) => {
      const [label, root] = spec.split("=");
      if (!label || !root) throw new Error(`BENCH_BUILDS: "${spec}" is not label=/path`);
      return { label, root };
    }),
  ];
}

/** Signed per second and node CPU ms per signature over one window. */
interface Window {
  sigsPerSec: number;
  nodeCpuMsPerSig: number;
}

interface RoundResult {
  build: string;
  round: number;
  steady: Window;
  afterFirstReconnect: Window;
  afterSecondReconnect: Window;
  failed: number;
}

async function measure(load: WorkerLoad, pid: number, seconds: number): Promise<Window> {
  const signed0 = load.signed;
  const cpu0 = cpuMs(pid);
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const signed = load.signed - signed0;
  return {
    sigsPerSec: signed / ((performance.now() - t0) / 1000),
    nodeCpuMsPerSig: (cpuMs(pid) - cpu0) / Math.max(1, signed),
  };
}

/** Drops every client connection of Redis (the node's among them); the data stays. */
async function dropConnections(url: string): Promise<void> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0 });
  try {
    await r.connect();
    await r.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes");
  } finally {
    r.disconnect();
  }
}

async function afterReconnect(load: WorkerLoad, pid: number, redisUrl: string): Promise<Window> {
  await dropConnections(redisUrl);
  await sleep(1000);
  const w = await measure(load, pid, SECONDS);
  await sleep((RECONNECT_SPACING_S - 1 - SECONDS) * 1000);
  return w;
}

async function runRound(build: Build, round: number): Promise<RoundResult> {
  const cluster = await ProcessCluster.start({ nodes: 1, env: benchNodeEnv(), root: build.root });
  const dir = clientDir("compare-builds");
  try {
    const node = cluster.nodes[0];
    const pid = node?.child.pid;
    if (!node || !pid) throw new Error("no node");
    const auth = basicAuth(cluster.state.issuer.user, cluster.state.issuer.password);
    const tokens = await issueTokens(node.url, auth, CLIENTS);
    const clients = tokens.map((t, i) => {
      writeFileSync(join(dir, `token-${i}`), t);
      return { tokenFile: join(dir, `token-${i}`), nonceFile: join(dir, `nonce-${i}`) };
    });
    const load = WorkerLoad.start({ dir, nodes: [node.url], clients });
    const warmUntil = Date.now() + 120_000;
    while (load.signed < WARM_SIGNATURES_PER_NODE && Date.now() < warmUntil) await sleep(100);
    const steady = await measure(load, pid, SECONDS);
    const afterFirstReconnect = await afterReconnect(load, pid, cluster.redis.url);
    const afterSecondReconnect = await afterReconnect(load, pid, cluster.redis.url);
    const { failed } = await load.stop();
    console.log(
      `  ${build.label}, round ${round}: ${steady.sigsPerSec.toFixed(0)}/s, ${steady.nodeCpuMsPerSig.toFixed(2)} ms/sig steady`,
    );
    return { build: build.label, round, steady, afterFirstReconnect, afterSecondReconnect, failed };
  } finally {
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

function summary(all: RoundResult[], label: string) {
  const rs = all.filter((r) => r.build === label);
  const avg = (pick: (r: RoundResult) => Window): Window => ({
    sigsPerSec: mean(rs.map((r) => pick(r).sigsPerSec)),
    nodeCpuMsPerSig: mean(rs.map((r) => pick(r).nodeCpuMsPerSig)),
  });
  return {
    build: label,
    steady: avg((r) => r.steady),
    afterFirstReconnect: avg((r) => r.afterFirstReconnect),
    afterSecondReconnect: avg((r) => r.afterSecondReconnect),
    failed: rs.reduce((a, r) => a + r.failed, 0),
  };
}

main(async () => {
  const list = builds();
  const rounds: RoundResult[] = [];
  // Builds take turns within each round, so the machine's drift over minutes falls on all alike.
  for (let round = 1; round <= ROUNDS; round++) {
    for (const build of round % 2 ? list : [...list].reverse()) rounds.push(await runRound(build, round));
  }
  const sums = list.map((b) => summary(rounds, b.label));
  const ref = sums[0] as ReturnType<typeof summary>;
  printTable(
    `Builds compared: one node, ${CLIENTS} clients, means of ${ROUNDS} rounds (× = against this tree)`,
    [
      "build",
      "steady sigs/s",
      "× sigs/s",
      "steady node CPU ms/sig",
      "× CPU/sig",
      "after 1st reconnect sigs/s",
      "× sigs/s",
      "node CPU ms/sig",
      "× CPU/sig",
      "after 2nd reconnect sigs/s",
      "node CPU ms/sig",
      "failed",
    ],
    sums.map((s) => [
      s.build,
      s.steady.sigsPerSec,
      ratio(s.steady.sigsPerSec, ref.steady.sigsPerSec),
      s.steady.nodeCpuMsPerSig,
      ratio(s.steady.nodeCpuMsPerSig, ref.steady.nodeCpuMsPerSig),
      s.afterFirstReconnect.sigsPerSec,
      ratio(s.afterFirstReconnect.sigsPerSec, ref.afterFirstReconnect.sigsPerSec),
      s.afterFirstReconnect.nodeCpuMsPerSig,
      ratio(s.afterFirstReconnect.nodeCpuMsPerSig, ref.afterFirstReconnect.nodeCpuMsPerSig),
      s.afterSecondReconnect.sigsPerSec,
      s.afterSecondReconnect.nodeCpuMsPerSig,
      s.failed,
    ]),
  );
  writeResult("compare-builds", {
    settings: { builds: list, rounds: ROUNDS, clients: CLIENTS, seconds: SECONDS },
    rounds,
    summary: sums,
  });
});
