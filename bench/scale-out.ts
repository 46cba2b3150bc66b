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

async function run(nodes: number): Promise<ScaleResult> {
  const dir = clientDir(`scale-${nodes}`);
  const cluster = await ProcessCluster.start({
    nodes,
    env: benchNodeEnv(),
  });
  try {
    const auth = basicAuth(cluster.state.issuer.user, cluster.state.issuer.password);
    const tokens = await issueTokens(cluster.urls[0] as string, auth, CLIENTS);
    const clients = tokens.map((t, i) => {
      writeFileSync(join(dir, `token-${i}`), t);
      return new SigningClient({
        nodes: cluster.urls,
        tokenFile: join(dir, `token-${i}`),
        nonceFile: join(dir, `nonce-${i}`),
        maxTimeMs: 60_000,
        requestTimeoutMs: 30_000,
      });
    });
    // Fresh nodes, untimed, until each has signed its share (lib.ts, WARM_SIGNATURES_PER_NODE).
    const warmInput = premadeInputs(dir, `w${nodes}`, CLIENTS, (WARM_SIGNATURES_PER_NODE * nodes) / 2000);
    const warm = await warmUp(CLIENTS, WARM_SIGNATURES_PER_NODE * nodes, (w, n) =>
      (clients[w] as SigningClient).sign(warmInput(w, n), "gpg"),
    );
    const pids = cluster.nodes.map((n) => n.child.pid ?? 0);
    const jobs: { end: number; ms: number }[] = [];
    const errors: string[] = [];
    let failed = 0;
    let retries = 0;
    let running = true;
    const inputFile = premadeInputs(dir, `n${nodes}`, CLIENTS, SECONDS + WARM_MS / 1000);
    const loops = clients.map(async (client, i) => {
      for (let n = 0; running; n++) {
        const file = inputFile(i, n);
        const t0 = performance.now();
        try {
          const r = await client.sign(file, "gpg");
          jobs.push({ end: performance.now(), ms: performance.now() - t0 });
          retries += r.retries;
        } catch (err) {
          failed++;
          if (errors.length < 5) errors.push((err as Error).message);
        }
      }
    });
    await sleep(WARM_MS);
    const from = performance.now();
    const cpu0 = pids.map(cpuMs);
    await sleep(SECONDS * 1000);
    const to = performance.now();
    const cpu = pids.map((p, i) => cpuMs(p) - (cpu0[i] ?? 0));
    running = false;
    await Promise.all(loops);
    const inWindow = jobs.filter((j) => j.end >= from && j.end < to);
    const s = summarize(inWindow.map((j) => j.ms));
    const total = cpu.reduce((a, b) => a + b, 0);
    return {
      nodes,
      signed: inWindow.length,
      failed,
      retries,
      sigsPerSec: inWindow.length / ((to - from) / 1000),
      p50Ms: s.p50,
      p99Ms: s.p99,
      nodeCpuMsPerSig: total / Math.max(1, inWindow.length),
      cpuShare: cpu.map((c) => c / Math.max(1, total)),
      warmUp: warm,
      errors,
    };
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
