/**
 * Scale-out: the same load (32 signtool clients, 1 KiB files, every client given every node
 * and starting at a random one, as signtool does) against 1, 2 and 3 signing nodes, each node
 * a real process with one worker thread, all sharing one Redis.
 *
 *   node dist/bench/scale-out.js        BENCH_SECONDS=5 BENCH_CLIENTS=32 BENCH_NODES=1,2,3
 */
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ProcessCluster } from "../scripts/process-cluster.js";
import { SigningClient } from "../src/client/signing-client.js";
import {
  basicAuth,
  benchNodeEnv,
  CLIENT_PARENT_DIR,
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
  type WarmUp,
  warmUp,
  writeResult,
} from "./lib.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 32);
const NODES = (process.env.BENCH_NODES ?? "1,2,3").split(",").map(Number);
const WARM_MS = 1000;

interface ScaleResult {
  nodes: number;
  signed: number;
  failed: number;
  retries: number;
  sigsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  nodeCpuMsPerSig: number;
  /** Share of the signatures each node's CPU went into (from /proc CPU time). */
  cpuShare: number[];
  warmUp: WarmUp;
  errors: string[];
}

/** The timed loops' signed jobs (when each ended, how long it took) and what went wrong. */
interface Signing {
  jobs: { end: number; ms: number }[];
  errors: string[];
  failed: number;
  retries: number;
}

/** One signtool client per token, each given every node, with its token and nonce files in `dir`. */
function makeClients(urls: string[], tokens: string[], dir: string): SigningClient[] {
  return tokens.map((t, i) => {
    writeFileSync(join(dir, `token-${i}`), t);
    return new SigningClient({
      nodes: urls,
      tokenFile: join(dir, `token-${i}`),
      nonceFile: join(dir, `nonce-${i}`),
      maxTimeMs: 60_000,
      requestTimeoutMs: 30_000,
    });
  });
}

/**
 * Every client signing in a loop until `stop` is called; `stop` resolves once each loop has
 * finished its last job.
 */
function startSigning(
  clients: SigningClient[],
  inputFile: (client: number, n: number) => string,
): { signing: Signing; stop: () => Promise<void> } {
  const signing: Signing = { jobs: [], errors: [], failed: 0, retries: 0 };
  let running = true;
  const loops = clients.map(async (client, i) => {
    for (let n = 0; running; n++) {
      const file = inputFile(i, n);
      const t0 = performance.now();
      try {
        const r = await client.sign(file, "gpg");
        signing.jobs.push({ end: performance.now(), ms: performance.now() - t0 });
        signing.retries += r.retries;
      } catch (err) {
        signing.failed++;
        if (signing.errors.length < 5) signing.errors.push((err as Error).message);
      }
    }
  });
  return {
    signing,
    stop: async () => {
      running = false;
      await Promise.all(loops);
    },
  };
}

/** The clients against a warm cluster: WARM_MS untimed, then SECONDS timed, with each node's CPU. */
async function timedRun(
  nodes: number,
  clients: SigningClient[],
  pids: number[],
  dir: string,
  warm: WarmUp,
): Promise<ScaleResult> {
  const inputFile = premadeInputs(dir, `n${nodes}`, CLIENTS, SECONDS + WARM_MS / 1000);
  const { signing, stop } = startSigning(clients, inputFile);
  await sleep(WARM_MS);
  const from = performance.now();
  const cpu0 = pids.map(cpuMs);
  await sleep(SECONDS * 1000);
  const to = performance.now();
  const cpu = pids.map((p, i) => cpuMs(p) - (cpu0[i] ?? 0));
  await stop();
  const inWindow = signing.jobs.filter((j) => j.end >= from && j.end < to);
  const s = summarize(inWindow.map((j) => j.ms));
  const total = cpu.reduce((a, b) => a + b, 0);
  return {
    nodes,
    signed: inWindow.length,
    failed: signing.failed,
    retries: signing.retries,
    sigsPerSec: inWindow.length / ((to - from) / 1000),
    p50Ms: s.p50,
    p99Ms: s.p99,
    nodeCpuMsPerSig: total / Math.max(1, inWindow.length),
    cpuShare: cpu.map((c) => c / Math.max(1, total)),
    warmUp: warm,
    errors: signing.errors,
  };
}

async function run(nodes: number): Promise<ScaleResult> {
  const dir = clientDir(`scale-${nodes}`);
  const cluster = await ProcessCluster.start({
    nodes,
    env: benchNodeEnv(),
  });
  try {
    const auth = basicAuth(cluster.state.issuer.user, cluster.state.issuer.password);
    const tokens = await issueTokens(cluster.urls[0] as string, auth, CLIENTS);
    const clients = makeClients(cluster.urls, tokens, dir);
    // Fresh nodes, untimed, until each has signed its share (lib.ts, WARM_SIGNATURES_PER_NODE).
    const warmInput = premadeInputs(dir, `w${nodes}`, CLIENTS, (WARM_SIGNATURES_PER_NODE * nodes) / 2000);
    const warm = await warmUp(CLIENTS, WARM_SIGNATURES_PER_NODE * nodes, (w, n) =>
      (clients[w] as SigningClient).sign(warmInput(w, n), "gpg"),
    );
    const pids = cluster.nodes.map((n) => n.child.pid ?? 0);
    return await timedRun(nodes, clients, pids, dir, warm);
  } finally {
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main(async () => {
  const results: ScaleResult[] = [];
  for (const n of NODES) {
    const r = await run(n);
    console.log(`  ${n} node(s): ${fmt(r.sigsPerSec)} sigs/s`);
    results.push(r);
  }
  const one = results.find((r) => r.nodes === 1)?.sigsPerSec ?? Number.NaN;
  printTable(
    `Scale-out: ${CLIENTS} clients rotating over N nodes, ${SECONDS} s each`,
    [
      "nodes",
      "signed",
      "sigs/s",
      "× 1 node",
      "p50 ms",
      "p99 ms",
      "failed",
      "retries",
      "node CPU ms/sig",
      "CPU share per node",
      "warm-up: sigs/s first → last second",
    ],
    results.map((r) => [
      r.nodes,
      r.signed,
      r.sigsPerSec,
      ratio(r.sigsPerSec, one),
      r.p50Ms,
      r.p99Ms,
      r.failed,
      r.retries,
      r.nodeCpuMsPerSig,
      r.cpuShare.map((c) => `${Math.round(c * 100)}%`).join(" / "),
      `${r.warmUp.firstSecondPerSec} → ${r.warmUp.lastSecondPerSec} (${fmt(r.warmUp.seconds)} s)`,
    ]),
  );
  for (const r of results.filter((x) => x.errors.length))
    console.log(`${r.nodes} nodes errors: ${r.errors.join(" | ")}`);
  writeResult("scale-out", {
    settings: {
      seconds: SECONDS,
      clients: CLIENTS,
      nodes: NODES,
      clientDir: CLIENT_PARENT_DIR,
      warmSignaturesPerNode: WARM_SIGNATURES_PER_NODE,
    },
    results,
  });
});
