/**
 * Bursts on one node (issue 31 item 3): 32 and 128 closed-loop clients signing 1 KiB files
 * through one node process, once with `signing.admissionWaitMs: 0` (beyond `maxPending` an
 * upload is bounced with 503 OVERLOADED, Retry-After 1: the node before the queue) and once
 * with the default wait in line. Retries, p50/p99, signatures/s, and what the node saw
 * (OVERLOADED answers, its admission waits), each node warm first, in one run.
 *
 *   node dist/bench/admission.js   BENCH_SECONDS=5 BENCH_ROUNDS=2 BENCH_LEVELS=32,128 BENCH_WAITS_MS=0,default
 */
import { readdirSync, rmSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { ProcessCluster } from "../scripts/process-cluster.js";
import { SigningClient } from "../src/client/signing-client.js";
import {
  basicAuth,
  benchNodeEnv,
  clientDir,
  cpuMs,
  fmt,
  issueTokens,
  main,
  premadeInputs,
  printTable,
  ratio,
  sleep,
  summarize,
  WARM_SIGNATURES_PER_NODE,
  warmUp,
  writeResult,
} from "./lib.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const LEVELS = (process.env.BENCH_LEVELS ?? "32,128").split(",").map(Number);
/** `default` leaves signing.admissionWaitMs at the schema's default. */
const WAITS = (process.env.BENCH_WAITS_MS ?? "0,default").split(",");
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const WARM_MS = 1000;

interface Level {
  round: number;
  admissionWaitMs: string;
  clients: number;
  signed: number;
  failed: number;
  retries: number;
  sigsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  nodeCpuMsPerSig: number;
  /** 503 OVERLOADED answers the node gave in the measured window. */
  overloaded: number;
  /** Admissions the node decided in the window, and their mean wait. */
  admissions: number;
  meanAdmissionWaitMs: number;
  loadAverageAtStart: number[];
  errors: string[];
}

/** The node's own counts of what admission did. */
async function admissionCounts(url: string): Promise<{ overloaded: number; waits: number; waitSum: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const value = (re: RegExp) => Number(re.exec(text)?.[1] ?? 0);
  return {
    overloaded: value(/^signing_requests_total\{[^}]*outcome="overloaded"[^}]*\} (\S+)$/m),
    waits: value(/^signing_admission_wait_seconds_count (\S+)$/m),
    waitSum: value(/^signing_admission_wait_seconds_sum (\S+)$/m),
  };
}

/** `clients` closed loops for WARM_MS, then SECONDS measured: what signs in that window. */
async function measureLevel(
  url: string,
  nodePid: number,
  clients: SigningClient[],
  inputFile: (client: number, n: number) => string,
): Promise<Omit<Level, "round" | "admissionWaitMs" | "clients">> {
  const jobs: { end: number; ms: number; retries: number }[] = [];
  const errors: string[] = [];
  let failed = 0;
  let running = true;
  const loops = clients.map(async (client, i) => {
    for (let n = 0; running; n++) {
      const t0 = performance.now();
      try {
        const r = await client.sign(inputFile(i, n), "gpg");
        const t1 = performance.now();
        jobs.push({ end: t1, ms: t1 - t0, retries: r.retries });
      } catch (err) {
        failed++;
        if (errors.length < 5) errors.push((err as Error).message);
      }
    }
  });
  await sleep(WARM_MS);
  const loadAverageAtStart = loadavg();
  const from = performance.now();
  const cpu0 = cpuMs(nodePid);
  const node0 = await admissionCounts(url);
  await sleep(SECONDS * 1000);
  const to = performance.now();
  const cpu1 = cpuMs(nodePid);
  const node1 = await admissionCounts(url);
  running = false;
  await Promise.all(loops);
  const inWindow = jobs.filter((j) => j.end >= from && j.end < to);
  const s = summarize(inWindow.map((j) => j.ms));
  const admissions = node1.waits - node0.waits;
  return {
    signed: inWindow.length,
    failed,
    retries: inWindow.reduce((a, j) => a + j.retries, 0),
    sigsPerSec: inWindow.length / ((to - from) / 1000),
    ...{ p50Ms: s.p50, p99Ms: s.p99, maxMs: s.max },
    nodeCpuMsPerSig: (cpu1 - cpu0) / Math.max(1, inWindow.length),
    overloaded: node1.overloaded - node0.overloaded,
    admissions,
    meanAdmissionWaitMs: admissions > 0 ? ((node1.waitSum - node0.waitSum) / admissions) * 1000 : 0,
    loadAverageAtStart,
    errors,
  };
}

/** Deletes one level's input files (premadeInputs names them `<prefix>-c<client>-<n>.txt`). */
function removeInputs(dir: string, prefix: string): void {
  for (const f of readdirSync(dir)) if (f.startsWith(`${prefix}-c`)) rmSync(join(dir, f), { force: true });
}

/** A node process with one admission wait, warm, and clients that sign through it. */
interface BenchNode {
  wait: string;
  cluster: ProcessCluster;
  url: string;
  pid: number;
  clientsFor(c: number): SigningClient[];
}

/** Starts a node with this admission wait, issues its tokens and warms it. */
async function startBenchNode(wait: string, dir: string): Promise<BenchNode> {
  const extra: Record<string, string> = {};
  if (wait !== "default") extra.SIGNING__signing__admissionWaitMs = wait;
  const cluster = await ProcessCluster.start({ nodes: 1, env: benchNodeEnv(extra) });
  const node = cluster.nodes[0];
  if (!node?.child.pid) throw new Error("no node");
  const auth = basicAuth(cluster.state.issuer.user, cluster.state.issuer.password);
  const tokens = await issueTokens(node.url, auth, Math.max(...LEVELS));
  tokens.forEach((t, i) => {
    writeFileSync(join(dir, `token-${wait}-${i}`), t);
  });
  const clientsFor = (c: number) =>
    Array.from(
      { length: c },
      (_, i) =>
        new SigningClient({
          nodes: [node.url],
          tokenFile: join(dir, `token-${wait}-${i}`),
          nonceFile: join(dir, `nonce-${wait}-${i}`),
          maxTimeMs: 60_000,
          requestTimeoutMs: 30_000,
        }),
    );
  const warmers = clientsFor(32);
  const warmInput = premadeInputs(dir, `warm-${wait}`, 32, WARM_SIGNATURES_PER_NODE / 2000);
  const warm = await warmUp(32, WARM_SIGNATURES_PER_NODE, (w, n) =>
    (warmers[w] as SigningClient).sign(warmInput(w, n), "gpg"),
  );
  console.log(`admissionWaitMs ${wait}: warm-up ${warm.signatures} signatures in ${fmt(warm.seconds)} s`);
  return { wait, cluster, url: node.url, pid: node.child.pid, clientsFor };
}

/**
 * Every level on every node, ROUNDS times, the nodes taking turns level by level: the shared
 * machine's speed drifts over minutes, so a before and an after measured minutes apart would
 * compare the drift.
 */
async function measureRounds(nodes: BenchNode[], dir: string): Promise<Level[]> {
  const levels: Level[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    for (const c of LEVELS) {
      for (const node of nodes) {
        const input = premadeInputs(dir, `r${round}-l${c}-${node.wait}`, c, SECONDS + WARM_MS / 1000);
        const measured = await measureLevel(node.url, node.pid, node.clientsFor(c), input);
        const level = { round, admissionWaitMs: node.wait, clients: c, ...measured };
        console.log(
          `  round ${round}, admissionWaitMs ${node.wait}, ${c} clients: ${fmt(level.sigsPerSec)} sigs/s, p99 ${fmt(level.p99Ms)} ms, ${level.retries} retries`,
        );
        levels.push(level);
        removeInputs(dir, `r${round}-l${c}-${node.wait}`);
      }
    }
  }
  return levels;
}

function printLevels(levels: Level[]): void {
  printTable(
    "Bursts on one node: 1 KiB files, bounced at maxPending (admissionWaitMs 0) or waiting in line",
    [
      "round",
      "admissionWaitMs",
      "clients",
      "signed",
      "sigs/s",
      "p50 ms",
      "p99 ms",
      "max ms",
      "retries",
      "failed",
      "OVERLOADED",
      "mean wait ms",
      "node CPU ms/sig",
      "load avg",
    ],
    levels.map((l) => [
      l.round,
      l.admissionWaitMs,
      l.clients,
      l.signed,
      l.sigsPerSec,
      l.p50Ms,
      l.p99Ms,
      l.maxMs,
      l.retries,
      l.failed,
      l.overloaded,
      l.meanAdmissionWaitMs,
      l.nodeCpuMsPerSig,
      fmt(l.loadAverageAtStart[0]),
    ]),
  );
}

/** The issue's goals, read on the node that waits in line; writes bench/results/admission.json. */
function reportTargets(levels: Level[]): void {
  // Worst round of the node that waits in line; each ratio within one round.
  const rows = (c: number) => levels.filter((l) => l.admissionWaitMs === "default" && l.clients === c);
  const at128 = rows(128);
  const ratios = at128.flatMap((l) => {
    const same = rows(32).find((r) => r.round === l.round);
    return same ? [ratio(l.sigsPerSec, same.sigsPerSec)] : [];
  });
  const targets = {
    retriesAt128: { target: 0, value: at128.length ? at128.reduce((a, l) => a + l.retries, 0) : null },
    p99At128Ms: { target: "<= 150", value: at128.length ? Math.max(...at128.map((l) => l.p99Ms)) : null },
    rate128Vs32: { target: ">= 0.95", value: ratios.length ? Math.min(...ratios) : null },
  };
  const met = {
    retriesAt128: targets.retriesAt128.value === 0,
    p99At128Ms: (targets.p99At128Ms.value ?? Number.POSITIVE_INFINITY) <= 150,
    rate128Vs32: (targets.rate128Vs32.value ?? 0) >= 0.95,
  };
  printTable(
    "Bursts: targets (waiting in line, default admissionWaitMs; the worst round)",
    ["target", "wanted", "measured", "met"],
    [
      ["retries at 128 clients", "0", String(targets.retriesAt128.value), met.retriesAt128 ? "yes" : "NO"],
      [
        "p99 at 128 clients",
        "≤ 150 ms",
        `${fmt(targets.p99At128Ms.value ?? Number.NaN)} ms`,
        met.p99At128Ms ? "yes" : "NO",
      ],
      [
        "sigs/s at 128 vs 32 clients",
        "≥ 0.95×",
        `${fmt(targets.rate128Vs32.value ?? Number.NaN)}×`,
        met.rate128Vs32 ? "yes" : "NO",
      ],
    ],
  );
  writeResult("admission", {
    settings: {
      seconds: SECONDS,
      warmMs: WARM_MS,
      rounds: ROUNDS,
      levels: LEVELS,
      waits: WAITS,
      fileBytes: 1024,
    },
    levels,
    targets,
    met,
  });
}

main(async () => {
  const dir = clientDir("admission");
  const nodes: BenchNode[] = [];
  let levels: Level[];
  try {
    for (const wait of WAITS) nodes.push(await startBenchNode(wait, dir));
    levels = await measureRounds(nodes, dir);
  } finally {
    for (const n of nodes) await n.cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  printLevels(levels);
  reportTargets(levels);
});
