/**
 * The signing worker pool (issue 31 item 2): one node process per scenario, 32 clients signing
 * 1 KiB files through the full HTTP path (gpg), and the node's event-loop delay p99 over the
 * timed window (`perf_hooks.monitorEventLoopDelay`, read through prom-client's
 * `nodejs_eventloop_lag_p99_seconds`, which resets at every scrape: one scrape before the
 * window, one after; less the 10 ms sampling interval Node's histogram counts in). Scenarios, in one run: Ed25519 file key without a pool (signing.workers
 * 0: the code path before the pool) and with the default pool; Ed25519 in SoftHSM2; RSA-3072
 * file key inline (workers 0) and in the pool. Beside them, single-thread in-process rates.
 *
 * Scenarios run in rounds, in alternating order; ratios are of the medians.
 *
 *   node dist/bench/signing-pool.js   BENCH_SECONDS=5 BENCH_CLIENTS=32 BENCH_POOL_WARM=1000 BENCH_ROUNDS=2
 */
import { generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import * as openpgp from "openpgp";
import type { DevKeyBackend } from "../scripts/dev-state.js";
import { ProcessCluster } from "../scripts/process-cluster.js";
import { SoftHsmToken } from "../scripts/softhsm.js";
import { SigningClient } from "../src/client/signing-client.js";
import { openPkcs11Key } from "../src/keys/pkcs11/key.js";
import { SigningPool } from "../src/keys/pool.js";
import { rsaPkcs1Sign } from "../src/keys/rsa.js";
import { EVENT_LOOP_SAMPLING_MS } from "../src/metrics/node-metrics.js";
import {
  basicAuth,
  benchNodeEnv,
  clientDir,
  cpuMs,
  fmt,
  issueTokens,
  machine,
  main,
  premadeInputs,
  printTable,
  ratio,
  sleep,
  summarize,
  warmUp,
  writeResult,
} from "./lib.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 32);
const WARM = Number(process.env.BENCH_POOL_WARM ?? 1000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);

interface Scenario {
  name: string;
  keys: DevKeyBackend;
  rsa?: true;
  workers?: number;
}

const SCENARIOS: Scenario[] = [
  { name: "Ed25519 file key, no pool (workers 0: the path before the pool)", keys: "file", workers: 0 },
  { name: "Ed25519 file key, pool (default size)", keys: "file" },
  { name: "Ed25519 SoftHSM2 key, pool (default size)", keys: "softhsm" },
  { name: "RSA-3072 file key, inline (workers 0)", keys: "file", rsa: true, workers: 0 },
  { name: "RSA-3072 file key, pool (default size)", keys: "file", rsa: true },
];

interface ScenarioResult {
  round?: number;
  name: string;
  workers: string;
  signed: number;
  failed: number;
  sigsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  /** The same delay measured on the warm node, idle, for 2 s just before the load: the floor. */
  idleEventLoopP99Ms: number;
  eventLoopP99Ms: number;
  eventLoopMaxMs: number;
  nodeCpuMsPerSig: number;
  loadAverage: number[];
}

/** An RSA-3072 OpenPGP key file protected by a passphrase file of its own. */
async function rsaGpgKey(dir: string): Promise<Record<string, string>> {
  const passphrase = randomBytes(18).toString("base64url");
  const { privateKey } = await openpgp.generateKey({
    type: "rsa",
    rsaBits: 3072,
    userIDs: [{ email: "rsa3072@bench.invalid" }],
    passphrase,
    format: "armored",
  });
  const keyFile = join(dir, "rsa3072.asc");
  const passphraseFile = join(dir, "rsa3072-passphrase");
  writeFileSync(keyFile, privateKey, { mode: 0o600 });
  writeFileSync(passphraseFile, passphrase, { mode: 0o600 });
  return {
    SIGNING__signing__formats__gpg__keyFile: keyFile,
    SIGNING__signing__formats__gpg__passphrase: JSON.stringify({ file: passphraseFile }),
  };
}

/**
 * The node's event-loop delay p99 and max since the last scrape, ms: the exported percentiles
 * less the sampling interval they include (EVENT_LOOP_SAMPLING_MS; an idle node reads ~10 ms).
 */
async function eventLoop(url: string): Promise<{ p99: number; max: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const read = (name: string) =>
    Math.max(0, Number(new RegExp(`^${name} (\\S+)`, "m").exec(text)?.[1]) * 1000 - EVENT_LOOP_SAMPLING_MS);
  return { p99: read("nodejs_eventloop_lag_p99_seconds"), max: read("nodejs_eventloop_lag_max_seconds") };
}

type Inputs = (client: number, n: number) => string;
let runId = 0;

/** A SigningClient for each of CLIENTS fresh tokens, with token and nonce files of this run's own. */
async function scenarioClients(
  cluster: ProcessCluster,
  url: string,
  s: Scenario,
  dir: string,
): Promise<SigningClient[]> {
  const tokens = await issueTokens(
    url,
    basicAuth(cluster.state.issuer.user, cluster.state.issuer.password),
    CLIENTS,
  );
  // Each run's own token and nonce files: a nonce of an earlier run's Redis is a replay here.
  const work = join(dir, `${s.name.replace(/\W+/g, "-")}-${runId++}`);
  return tokens.map((t, i) => {
    writeFileSync(`${work}-token-${i}`, t);
    return new SigningClient({
      nodes: [url],
      tokenFile: `${work}-token-${i}`,
      nonceFile: `${work}-nonce-${i}`,
      maxTimeMs: 60_000,
      requestTimeoutMs: 30_000,
    });
  });
}

/** The timed window: every client signs back to back for SECONDS, numbering its files from WARM on. */
async function signForSeconds(
  clients: number,
  signAs: (c: number, n: number) => Promise<unknown>,
): Promise<{ latencies: number[]; failed: number; elapsedSeconds: number }> {
  const latencies: number[] = [];
  let failed = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let n = WARM; performance.now() - start < SECONDS * 1000; n++) {
        const t0 = performance.now();
        try {
          await signAs(c, n);
          latencies.push(performance.now() - t0);
        } catch {
          failed++;
        }
      }
    }),
  );
  return { latencies, failed, elapsedSeconds: (performance.now() - start) / 1000 };
}

/**
 * One scenario on a node of its own: warmed up, then 2 s idle for the event-loop delay's floor,
 * then the timed window with the node's CPU and event-loop delay over it.
 */
async function runScenario(
  s: Scenario,
  dir: string,
  rsaEnv: Record<string, string>,
  input: Inputs,
): Promise<ScenarioResult> {
  const env = benchNodeEnv({
    ...(s.workers !== undefined ? { SIGNING__signing__workers: String(s.workers) } : {}),
    ...(s.rsa ? rsaEnv : {}),
  });
  const cluster = await ProcessCluster.start({ nodes: 1, env, keys: s.keys });
  try {
    const node = cluster.nodes[0];
    const pid = node?.child.pid;
    if (!node || !pid) throw new Error("no node");
    const url = node.url;
    const clients = await scenarioClients(cluster, url, s, dir);
    const signAs = (c: number, n: number) => (clients[c] as SigningClient).sign(input(c, n), "gpg");
    await warmUp(CLIENTS, WARM, signAs);
    await eventLoop(url);
    await sleep(2000);
    const idle = await eventLoop(url);
    const cpuBefore = cpuMs(pid);
    const { latencies, failed, elapsedSeconds } = await signForSeconds(clients.length, signAs);
    const loop = await eventLoop(url);
    const cpu = cpuMs(pid) - cpuBefore;
    const lat = summarize(latencies);
    return {
      name: s.name,
      workers: s.workers === undefined ? "default" : String(s.workers),
      signed: latencies.length,
      failed,
      sigsPerSec: latencies.length / elapsedSeconds,
      p50Ms: lat.p50,
      p99Ms: lat.p99,
      idleEventLoopP99Ms: idle.p99,
      eventLoopP99Ms: loop.p99,
      eventLoopMaxMs: loop.max,
      nodeCpuMsPerSig: cpu / Math.max(1, latencies.length),
      loadAverage: machine().loadAverage as number[],
    };
  } finally {
    await cluster.stop();
  }
}

/** SoftHSM2 Ed25519 signatures/s through a pool of the default size, 32 in flight, no HTTP. */
async function softHsmPoolRate(dir: string): Promise<{ perSec: number; cpuMsPerSig: number }> {
  const token = SoftHsmToken.create(join(dir, "softhsm"), {
    keys: [{ label: "k", id: "01", type: "EC:edwards25519" }],
  });
  const conf = process.env.SOFTHSM2_CONF;
  process.env.SOFTHSM2_CONF = token.conf;
  const pool = new SigningPool(availableParallelism());
  try {
    const pin = readFileSync(token.pinFile, "utf8").trim();
    const o = { module: token.module, tokenLabel: token.label, keyLabel: "k", pin, timeoutMs: 10_000 };
    const key = await openPkcs11Key(o, pool);
    const message = randomBytes(32);
    const batch = () => Promise.all(Array.from({ length: 32 }, () => key.sign(message)));
    await batch();
    const cpu = process.cpuUsage();
    const start = performance.now();
    let n = 0;
    for (; performance.now() - start < 2000; n += 32) await batch();
    const used = process.cpuUsage(cpu);
    const perSec = n / ((performance.now() - start) / 1000);
    await key.close();
    return { perSec, cpuMsPerSig: (used.user + used.system) / 1000 / n };
  } finally {
    await pool.close();
    token.destroy();
    if (conf === undefined) delete process.env.SOFTHSM2_CONF;
    else process.env.SOFTHSM2_CONF = conf;
  }
}

/**
 * Ed25519 signatures/s handed to worker threads (as many as the pool's default size, 32 in
 * flight), no HTTP: what moving Ed25519 file keys into the pool would cost, next to signing
 * them on this thread.
 */
async function ed25519ViaThreads(): Promise<{ perSec: number; cpuMsPerSig: number }> {
  const code = `
    const { parentPort } = require("node:worker_threads");
    const { generateKeyPairSync, sign } = require("node:crypto");
    const { privateKey } = generateKeyPairSync("ed25519");
    parentPort.on("message", (m) => parentPort.postMessage({ id: m.id, sig: sign(null, m.input, privateKey) }));`;
  const threads = Array.from({ length: availableParallelism() }, () => new Worker(code, { eval: true }));
  const waiting = new Map<number, () => void>();
  for (const t of threads) t.on("message", (m: { id: number }) => waiting.get(m.id)?.());
  let next = 0;
  const one = (input: Buffer) =>
    new Promise<void>((resolve) => {
      const id = next++;
      waiting.set(id, () => {
        waiting.delete(id);
        resolve();
      });
      (threads[id % threads.length] as Worker).postMessage({ id, input });
    });
  const input = randomBytes(32);
  const batch = () => Promise.all(Array.from({ length: 32 }, () => one(input)));
  try {
    for (let i = 0; i < 50; i++) await batch();
    const cpu = process.cpuUsage();
    const start = performance.now();
    let n = 0;
    for (; performance.now() - start < 2000; n += 32) await batch();
    const used = process.cpuUsage(cpu);
    return {
      perSec: n / ((performance.now() - start) / 1000),
      cpuMsPerSig: (used.user + used.system) / 1000 / n,
    };
  } finally {
    await Promise.all(threads.map((t) => t.terminate()));
  }
}

/** Signatures/s of one key on this thread, no HTTP: the single-thread baseline. */
function inProcessRate(signOnce: () => void, ms = 2000): { perSec: number; cpuMsPerSig: number } {
  for (let i = 0; i < 50; i++) signOnce();
  let n = 0;
  const cpu = process.cpuUsage();
  const start = performance.now();
  while (performance.now() - start < ms) {
    signOnce();
    n++;
  }
  const used = process.cpuUsage(cpu);
  return {
    perSec: n / ((performance.now() - start) / 1000),
    cpuMsPerSig: (used.user + used.system) / 1000 / n,
  };
}

function printScenarios(results: ScenarioResult[]): void {
  printTable(
    `Signing pool: gpg, 1 KiB files, ${CLIENTS} clients, one node`,
    [
      "round",
      "scenario",
      "workers",
      "sigs/s",
      "p50 ms",
      "p99 ms",
      "loop delay p99 ms, idle",
      "loop delay p99 ms",
      "max ms",
      "node CPU ms/sig",
      "failed",
      "load avg",
    ],
    results.map((r) => [
      r.round,
      r.name,
      r.workers,
      fmt(r.sigsPerSec),
      fmt(r.p50Ms),
      fmt(r.p99Ms),
      fmt(r.idleEventLoopP99Ms),
      fmt(r.eventLoopP99Ms),
      fmt(r.eventLoopMaxMs),
      fmt(r.nodeCpuMsPerSig, 2),
      r.failed,
      r.loadAverage.map((l) => l.toFixed(1)).join(" "),
    ]),
  );
}

/** Each scenario's median over the rounds of one figure. */
function medians(results: ScenarioResult[], figure: (r: ScenarioResult) => number): number[] {
  return SCENARIOS.map((s) => summarize(results.filter((r) => r.name === s.name).map(figure)).p50);
}

/** A scenario's figure out of a list in SCENARIOS' order. */
const at = (xs: number[], i: number) => xs[i] as number;

interface Rate {
  perSec: number;
  cpuMsPerSig: number;
}

interface Baselines {
  rsa3072InProcess: Rate;
  ed25519InProcess: Rate;
  ed25519ViaThreads: Rate;
  softHsmEd25519PoolInProcess: Rate;
}

/** The rates without HTTP the scenarios are set against: one thread, worker threads, SoftHSM2. */
async function inProcessBaselines(dir: string): Promise<Baselines> {
  const rsa = generateKeyPairSync("rsa", { modulusLength: 3072 }).privateKey;
  const ed = generateKeyPairSync("ed25519").privateKey;
  const digest = randomBytes(32);
  return {
    rsa3072InProcess: inProcessRate(() => rsaPkcs1Sign(rsa, digest)),
    ed25519InProcess: inProcessRate(() => sign(null, digest, ed)),
    ed25519ViaThreads: await ed25519ViaThreads(),
    softHsmEd25519PoolInProcess: await softHsmPoolRate(dir),
  };
}

/** Every scenario once a round, ROUNDS rounds, each on a fresh node; one line per scenario as it ends. */
async function runRounds(
  dir: string,
  rsaEnv: Record<string, string>,
  input: Inputs,
): Promise<ScenarioResult[]> {
  const results: ScenarioResult[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    // Alternating order: the shared machine's drift does not favour the scenarios run first.
    for (const s of round % 2 ? SCENARIOS : [...SCENARIOS].reverse()) {
      const r = { ...(await runScenario(s, dir, rsaEnv, input)), round };
      results.push(r);
      console.log(`  ${round} ${r.name}: ${fmt(r.sigsPerSec)}/s, event loop p99 ${fmt(r.eventLoopP99Ms)} ms`);
    }
  }
  return results;
}

/** The issue's questions, as ratios of the scenarios' median rates (and of one baseline). */
function poolRatios(rate: number[], baselines: Baselines) {
  return {
    ed25519PoolVsNoPool: ratio(at(rate, 1), at(rate, 0)),
    softhsmVsFileEd25519: ratio(at(rate, 2), at(rate, 1)),
    rsaPoolVsInProcessSingleThread: ratio(at(rate, 4), baselines.rsa3072InProcess.perSec),
    rsaPoolVsInline: ratio(at(rate, 4), at(rate, 3)),
  };
}

function printMedians(rate: number[], loopP99: number[]): void {
  printTable(
    "Medians over the rounds",
    ["scenario", "sigs/s", "event-loop delay p99 ms (goal ≤ 10)"],
    SCENARIOS.map((s, i) => [s.name, fmt(at(rate, i)), fmt(at(loopP99, i))]),
  );
}

/** A baseline's cell: its rate, then its CPU per signature. */
const rateCell = (r: Rate) => `${fmt(r.perSec)}; ${fmt(r.cpuMsPerSig, 3)}`;

function printBaselinesAndRatios(baselines: Baselines, ratios: ReturnType<typeof poolRatios>): void {
  printTable(
    "Baselines and ratios (of the medians)",
    ["figure", "value"],
    [
      ["RSA-3072 in-process, 1 thread, sigs/s; CPU ms/sig", rateCell(baselines.rsa3072InProcess)],
      ["Ed25519 in-process, 1 thread, sigs/s; CPU ms/sig", rateCell(baselines.ed25519InProcess)],
      [
        "Ed25519 handed to worker threads in-process (32 in flight), sigs/s; CPU ms/sig",
        rateCell(baselines.ed25519ViaThreads),
      ],
      [
        "SoftHSM2 Ed25519 via the pool in-process (32 in flight), sigs/s; CPU ms/sig",
        rateCell(baselines.softHsmEd25519PoolInProcess),
      ],
      ["Ed25519 file key: pool / no pool (goal ≥ 0.90)", fmt(ratios.ed25519PoolVsNoPool, 2)],
      ["SoftHSM2 Ed25519 / file Ed25519 (goal ≥ 0.60)", fmt(ratios.softhsmVsFileEd25519, 2)],
      ["RSA-3072 pool / in-process single thread", fmt(ratios.rsaPoolVsInProcessSingleThread, 2)],
      ["RSA-3072 pool / inline", fmt(ratios.rsaPoolVsInline, 2)],
    ],
  );
}

main(async () => {
  const dir = clientDir("pool");
  const rsaEnv = await rsaGpgKey(dir);
  // Every scenario has a fresh Redis, so the same files are signed afresh in each.
  const input = premadeInputs(dir, "in", CLIENTS, WARM / 2000 + SECONDS);
  const baselines = await inProcessBaselines(dir);
  console.log(
    `${CLIENTS} clients, ${SECONDS} s per scenario after ${WARM} warm-up signatures, ${ROUNDS} rounds`,
  );
  const results = await runRounds(dir, rsaEnv, input);
  printScenarios(results);
  const rate = medians(results, (r) => r.sigsPerSec);
  const loopP99 = medians(results, (r) => r.eventLoopP99Ms);
  const ratios = poolRatios(rate, baselines);
  printMedians(rate, loopP99);
  printBaselinesAndRatios(baselines, ratios);
  writeResult("signing-pool", {
    settings: {
      seconds: SECONDS,
      clients: CLIENTS,
      warmSignatures: WARM,
      rounds: ROUNDS,
      format: "gpg",
      fileBytes: 1024,
    },
    command: `BENCH_SECONDS=${SECONDS} BENCH_CLIENTS=${CLIENTS} BENCH_POOL_WARM=${WARM} BENCH_ROUNDS=${ROUNDS} node dist/bench/signing-pool.js`,
    baselines,
    scenarios: results,
    medians: SCENARIOS.map((s, i) => ({
      name: s.name,
      sigsPerSec: at(rate, i),
      eventLoopP99Ms: at(loopP99, i),
    })),
    ratios,
  });
});
