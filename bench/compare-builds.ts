/**
 * Compare builds: what a change to the node costs, measured against this tree's build. One
 * node from this tree and one from every tree in BENCH_BUILDS (each built with `npm run build`)
 * run side by side on one Redis, under one load, the clients spread evenly over them; each
 * node's CPU per signature and signatures/s are read over the same windows, so a busy or
 * drifting machine weighs on every build alike. The windows: steady once every node is warm,
 * then after Redis drops every client connection (`CLIENT KILL TYPE normal`: the clients
 * reconnect, data stays), twice. Fresh nodes every round. Not in `npm run bench`: it needs the
 * other trees. docs/performance.md ("Patched dependency internals") shows its use.
 *
 * The nodes sign one format, BENCH_FORMAT (gpg or sshsig), and their config holds only that
 * one, so a build from before a format was added accepts it too.
 *
 *   BENCH_BUILDS=no-patch=/tmp/tree-without-it node dist/bench/compare-builds.js
 *   BENCH_ROUNDS=3  BENCH_CLIENTS=6 (per node)  BENCH_SECONDS=8  BENCH_FORMAT=gpg
 */
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Redis } from "ioredis";
import { NodeProcess } from "../scripts/node-process.js";
import { ProcessCluster } from "../scripts/process-cluster.js";
import { freePort } from "../scripts/redis-server.js";
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

const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
const CLIENTS_PER_NODE = Number(process.env.BENCH_CLIENTS ?? 6);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const FORMAT = process.env.BENCH_FORMAT ?? "gpg";
/** Seconds from one dropped connection to the next: the first second after each is skipped. */
const RECONNECT_SPACING_S = SECONDS + 3;
/** The wait before the last window, after the second reconnect's. */
const LATER_S = 20;

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
  /** Long after the second: whether what a reconnect changed lasts. */
  later: Window;
}

/** The node's `signing_jobs_total{result="signed"}`, from its /metrics. */
async function signedBy(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  let total = 0;
  for (const m of text.matchAll(/^signing_jobs_total\{[^}]*result="signed"[^}]*\} (\S+)$/gm))
    total += Number(m[1]);
  return total;
}

/** Each node's signed per second and CPU ms per signature over the same `seconds`. */
async function measure(nodes: NodeProcess[], seconds: number): Promise<Window[]> {
  const read = () =>
    Promise.all(nodes.map(async (n) => ({ signed: await signedBy(n.url), cpu: cpuMs(n.child.pid ?? 0) })));
  const before = await read();
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const after = await read();
  const elapsed = (performance.now() - t0) / 1000;
  return after.map((a, i) => {
    const b = before[i] as { signed: number; cpu: number };
    const signed = a.signed - b.signed;
    return { sigsPerSec: signed / elapsed, nodeCpuMsPerSig: (a.cpu - b.cpu) / Math.max(1, signed) };
  });
}

/** Drops every client connection of Redis (the nodes' among them); the data stays. */
async function dropConnections(url: string): Promise<void> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0 });
  try {
    await r.connect();
    await r.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes");
  } finally {
    r.disconnect();
  }
}

async function afterReconnect(nodes: NodeProcess[], redisUrl: string): Promise<Window[]> {
  await dropConnections(redisUrl);
  await sleep(1000);
  const w = await measure(nodes, SECONDS);
  await sleep((RECONNECT_SPACING_S - 1 - SECONDS) * 1000);
  return w;
}

/** One node per build, on this tree's cluster (its Redis, config and keys). */
async function startNodes(cluster: ProcessCluster, others: Build[]): Promise<NodeProcess[]> {
  const started: NodeProcess[] = [];
  for (const build of others) {
    started.push(
      new NodeProcess({
        configFile: cluster.state.configFile,
        port: await freePort(),
        id: `node-${build.label}`,
        env: benchNodeEnv(),
        root: build.root,
      }),
    );
  }
  await Promise.all(started.map((n) => n.ready()));
  return started;
}

async function warm(nodes: NodeProcess[]): Promise<void> {
  const until = Date.now() + 180_000;
  while (Date.now() < until) {
    const counts = await Promise.all(nodes.map((n) => signedBy(n.url)));
    if (counts.every((c) => c >= WARM_SIGNATURES_PER_NODE)) return;
    await sleep(500);
  }
}

async function runRound(list: Build[], round: number): Promise<RoundResult[]> {
  const [self, ...others] = list as [Build, ...Build[]];
  const cluster = await ProcessCluster.start({
    nodes: 1,
    env: benchNodeEnv(),
    root: self.root,
    formats: [FORMAT],
  });
  const extra: NodeProcess[] = [];
  const dir = clientDir("compare-builds");
  try {
    extra.push(...(await startNodes(cluster, others)));
    const nodes = [...cluster.nodes, ...extra];
    const auth = basicAuth(cluster.state.issuer.user, cluster.state.issuer.password);
    const tokens = await issueTokens(nodes[0]?.url as string, auth, CLIENTS_PER_NODE * nodes.length);
    const clients = tokens.map((t, i) => {
      writeFileSync(join(dir, `token-${i}`), t);
      return { tokenFile: join(dir, `token-${i}`), nonceFile: join(dir, `nonce-${i}`) };
    });
    // Client i starts at node i mod N (load-worker.ts): the same share of clients on each.
    const load = WorkerLoad.start({ dir, nodes: nodes.map((n) => n.url), clients, format: FORMAT });
    await warm(nodes);
    const steady = await measure(nodes, SECONDS);
    const first = await afterReconnect(nodes, cluster.redis.url);
    const second = await afterReconnect(nodes, cluster.redis.url);
    await sleep(LATER_S * 1000);
    const later = await measure(nodes, SECONDS);
    await load.stop();
    return list.map((b, i) => {
      const r = {
        build: b.label,
        round,
        steady: steady[i] as Window,
        afterFirstReconnect: first[i] as Window,
        afterSecondReconnect: second[i] as Window,
        later: later[i] as Window,
      };
      console.log(
        `  round ${round}, ${b.label}: ${r.steady.sigsPerSec.toFixed(0)}/s, ${r.steady.nodeCpuMsPerSig.toFixed(2)} ms/sig steady`,
      );
      return r;
    });
  } finally {
    await Promise.all(extra.map((n) => n.stop("SIGKILL")));
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

const WINDOWS = {
  steady: "steady",
  afterFirstReconnect: "after 1st reconnect",
  afterSecondReconnect: "after 2nd reconnect",
  later: `${LATER_S} s later`,
} as const;
type WindowName = keyof typeof WINDOWS;

/** A build's mean of each window over the rounds. */
function summary(all: RoundResult[], label: string): { build: string } & Record<WindowName, Window> {
  const rs = all.filter((r) => r.build === label);
  const avg = (w: WindowName): Window => ({
    sigsPerSec: mean(rs.map((r) => r[w].sigsPerSec)),
    nodeCpuMsPerSig: mean(rs.map((r) => r[w].nodeCpuMsPerSig)),
  });
  return {
    build: label,
    steady: avg("steady"),
    afterFirstReconnect: avg("afterFirstReconnect"),
    afterSecondReconnect: avg("afterSecondReconnect"),
    later: avg("later"),
  };
}

main(async () => {
  const list = builds();
  const rounds: RoundResult[] = [];
  for (let round = 1; round <= ROUNDS; round++) rounds.push(...(await runRound(list, round)));
  const sums = list.map((b) => summary(rounds, b.label));
  const ref = sums[0] as ReturnType<typeof summary>;
  const names = Object.keys(WINDOWS) as WindowName[];
  const cell = (v: number, r: number, digits: number) => `${v.toFixed(digits)} (${r.toFixed(2)}×)`;
  printTable(
    `Builds compared: one node each signing ${FORMAT}, side by side, ${CLIENTS_PER_NODE} clients each, means of ${ROUNDS} rounds (× = against this tree)`,
    ["build", ...names.flatMap((w) => [`${WINDOWS[w]}: node CPU ms/sig`, "sigs/s"])],
    sums.map((s) => [
      s.build,
      ...names.flatMap((w) => [
        cell(s[w].nodeCpuMsPerSig, ratio(s[w].nodeCpuMsPerSig, ref[w].nodeCpuMsPerSig), 2),
        cell(s[w].sigsPerSec, ratio(s[w].sigsPerSec, ref[w].sigsPerSec), 0),
      ]),
    ]),
  );
  writeResult("compare-builds", {
    settings: {
      builds: list,
      format: FORMAT,
      rounds: ROUNDS,
      clientsPerNode: CLIENTS_PER_NODE,
      seconds: SECONDS,
      laterS: LATER_S,
    },
    rounds,
    summary: sums,
  });
});
