/**
 * Clients in closed loops against one warm node, through the full HTTP path (SigningClient:
 * token, nonce, upload, sign, fetch), and the per-file baselines beside them: what small-files
 * and formats both measure.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ProcessCluster } from "../scripts/process-cluster.js";
import { SigningClient } from "../src/client/signing-client.js";
import {
  basicAuth,
  CLIENT_PARENT_DIR,
  closedLoop,
  cpuMs,
  endedChildrenCpuMs,
  fmt,
  issueTokens,
  minorFaults,
  premadeInputs,
  type Summary,
  sleep,
  summarize,
  WARM_SIGNATURES_PER_NODE,
  type WarmUp,
  warmUp,
} from "./lib.js";

/** What every level measures against: the node's and Redis' processes and the clients' files (tokens in `dir`). */
export interface Rig {
  url: string;
  nodePid: number;
  redisPid: number;
  dir: string;
}

export interface LevelResult {
  clients: number;
  signed: number;
  failed: number;
  retries: number;
  sigsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  nodeCpuMsPerSig: number;
  /** The CPU of the tools the node ran and waited for (osslsigncode), per signature; 0 for in-process signers. */
  nodeToolCpuMsPerSig: number;
  benchCpuMsPerSig: number;
  /** Redis' CPU per signature: what one primary's capacity is divided by (docs/operations.md). */
  redisCpuMsPerSig: number;
  /** Fresh pages (minor faults) per signature: what `machine`'s fresh-page cost multiplies. */
  nodeFaultsPerSig: number;
  benchFaultsPerSig: number;
  errors: string[];
}

/** One level: how many clients, which format, for how long, on which files. */
export interface LevelOptions {
  clients: number;
  format: string;
  /** Measured seconds, after `warmMs` of the same load untimed. */
  seconds: number;
  warmMs: number;
  /** Client `i`'s `n`th input file. */
  input: (client: number, n: number) => string;
  /** Where a client writes the output of `file` (default: SigningClient's, the file and the format's suffix). */
  output?: (file: string) => string;
}

/** A signed output and the input it was made from: what the real tool checks. */
export interface Sample {
  output: string;
  file: string;
}

/** The cluster's one node as a rig, with `clients` tokens (token-0 … in `dir`). */
async function oneNodeRig(cluster: ProcessCluster, dir: string, clients: number): Promise<Rig> {
  const node = cluster.nodes[0];
  const redisPid = cluster.redis.proc?.pid;
  if (!node?.child.pid || !redisPid) throw new Error("no node or no redis-server");
  const auth = basicAuth(cluster.state.issuer.user, cluster.state.issuer.password);
  (await issueTokens(node.url, auth, clients)).forEach((t, i) => {
    writeFileSync(join(dir, `token-${i}`), t);
  });
  return { url: node.url, nodePid: node.child.pid, redisPid, dir };
}

/** The fresh node's first gpg signatures, untimed, from up to 32 clients (lib.ts, WARM_SIGNATURES_PER_NODE). */
async function warmNode(rig: Rig, maxClients: number): Promise<WarmUp> {
  const warmers = clientsFor(rig, Math.min(32, maxClients));
  const warmInput = premadeInputs(rig.dir, "warm", warmers.length, WARM_SIGNATURES_PER_NODE / 2000);
  const warm = await warmUp(warmers.length, WARM_SIGNATURES_PER_NODE, (w, n) =>
    (warmers[w] as SigningClient).sign(warmInput(w, n), "gpg"),
  );
  console.log(
    `  warm-up: ${warm.signatures} signatures in ${fmt(warm.seconds)} s, ${warm.firstSecondPerSec}/s in its first second, ${warm.lastSecondPerSec}/s in its last${warm.failed ? `, ${warm.failed} failed` : ""}`,
  );
  return warm;
}

/**
 * The cluster's one node as a rig for up to `maxClients` clients, warmed up, with the run's
 * settings printed: how small-files and formats begin.
 */
export async function warmOneNodeRig(
  cluster: ProcessCluster,
  dir: string,
  maxClients: number,
  timing: { seconds: number; warmMs: number },
): Promise<{ rig: Rig; warm: WarmUp }> {
  const rig = await oneNodeRig(cluster, dir, maxClients);
  console.log(
    `one node at ${rig.url}; ${timing.seconds} s per level after ${timing.warmMs} ms warm-up; clients' files in ${CLIENT_PARENT_DIR}`,
  );
  return { rig, warm: await warmNode(rig, maxClients) };
}

/** `c` clients of the node, the i-th with token file `token-i` in rig.dir (its own nonce file). */
export function clientsFor(rig: Rig, c: number): SigningClient[] {
  return Array.from(
    { length: c },
    (_, i) =>
      new SigningClient({
        nodes: [rig.url],
        tokenFile: join(rig.dir, `token-${i}`),
        nonceFile: join(rig.dir, `nonce-${i}`),
        maxTimeMs: 60_000,
        requestTimeoutMs: 30_000,
      }),
  );
}

/** The CPU and fresh pages of the node, Redis and this process so far. */
function counters(rig: Rig) {
  return {
    at: performance.now(),
    node: cpuMs(rig.nodePid),
    nodeTools: endedChildrenCpuMs(rig.nodePid),
    redis: cpuMs(rig.redisPid),
    nodeFaults: minorFaults(rig.nodePid),
    bench: process.cpuUsage(),
    benchFaults: process.resourceUsage().minorPageFault,
  };
}

/**
 * `o.clients` clients in closed loops; the figures of the `o.seconds` after `o.warmMs`, and the
 * last output of up to three clients, for the real tool to check.
 */
export async function measureLevel(
  rig: Rig,
  o: LevelOptions,
): Promise<{ level: LevelResult; samples: Sample[] }> {
  const clients = clientsFor(rig, o.clients);
  const jobs: { end: number; ms: number }[] = [];
  const errors: string[] = [];
  let failed = 0;
  let retries = 0;
  let running = true;
  const lastOf: (Sample | undefined)[] = [];
  const loops = clients.map(async (client, i) => {
    for (let n = 0; running; n++) {
      const file = o.input(i, n);
      const t0 = performance.now();
      try {
        const r = await client.sign(file, o.format, ...(o.output ? [o.output(file)] : []));
        const t1 = performance.now();
        jobs.push({ end: t1, ms: t1 - t0 });
        retries += r.retries;
        lastOf[i] = { output: r.output, file };
      } catch (err) {
        failed++;
        if (errors.length < 5) errors.push((err as Error).message);
      }
    }
  });
  await sleep(o.warmMs);
  const a = counters(rig);
  await sleep(o.seconds * 1000);
  const b = counters(rig);
  running = false;
  await Promise.all(loops);
  const inWindow = jobs.filter((j) => j.end >= a.at && j.end < b.at);
  const s: Summary = summarize(inWindow.map((j) => j.ms));
  const n = Math.max(1, inWindow.length);
  const bench = process.cpuUsage(a.bench);
  const level: LevelResult = {
    clients: o.clients,
    signed: inWindow.length,
    failed,
    retries,
    sigsPerSec: inWindow.length / ((b.at - a.at) / 1000),
    p50Ms: s.p50,
    p99Ms: s.p99,
    maxMs: s.max,
    nodeCpuMsPerSig: (b.node - a.node) / n,
    nodeToolCpuMsPerSig: (b.nodeTools - a.nodeTools) / n,
    benchCpuMsPerSig: (bench.user + bench.system) / 1000 / n,
    redisCpuMsPerSig: (b.redis - a.redis) / n,
    nodeFaultsPerSig: (b.nodeFaults - a.nodeFaults) / n,
    benchFaultsPerSig: (b.benchFaults - a.benchFaults) / n,
    errors,
  };
  console.log(`  ${o.format}, ${o.clients} clients: ${fmt(level.sigsPerSec)} sigs/s, p99 ${fmt(s.p99)} ms`);
  const samples = lastOf.filter((x): x is Sample => x !== undefined).slice(0, 3);
  return { level, samples };
}

/** A per-file baseline (a tool, or a signer in-process) at one concurrency. */
export interface BaselineResult {
  name: string;
  concurrency: number;
  signed: number;
  sigsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  /** CPU per signature: this process's for the in-process signers; the tool's processes' (and gpg-agent's) for tools. */
  cpuMsPerSig: number;
}

export function baselineResult(
  name: string,
  concurrency: number,
  r: { count: number; latencies: number[]; elapsedMs: number },
  cpuMs: number,
): BaselineResult {
  const s = summarize(r.latencies);
  return {
    name,
    concurrency,
    signed: r.count,
    sigsPerSec: r.count / (r.elapsedMs / 1000),
    p50Ms: s.p50,
    p99Ms: s.p99,
    cpuMsPerSig: cpuMs / Math.max(1, r.count),
  };
}

/**
 * A tool run one process per file, `sign(worker, n)` from 1 and more loops at a time (one
 * result per concurrency), for `seconds` each; `cpuMs()` reads the CPU its processes have used
 * so far (ended children, and gpg-agent for gpg).
 */
export async function perFileBaselines(
  name: string,
  seconds: number,
  concurrencies: readonly number[],
  sign: (worker: number, n: number) => Promise<unknown>,
  cpuMs: () => number,
): Promise<BaselineResult[]> {
  const out: BaselineResult[] = [];
  for (const conc of concurrencies) {
    const cpu0 = cpuMs();
    const r = await closedLoop(conc, seconds * 1000, async (w, n) => {
      await sign(w, n);
    });
    out.push(baselineResult(name, conc, r, cpuMs() - cpu0));
  }
  return out;
}
