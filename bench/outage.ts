/**
 * Outage: sustained signing load (signtool clients, tokens issued before the fault) through a
 * 3-node cluster of real processes while Redis restarts empty (data loss), and while Sentinel
 * fails over after the primary is killed. Each fault runs twice: the product (monitor running,
 * orphanPolicy heal) and the classic behaviour (no monitor, orphanPolicy reject, no grace).
 * Prints throughput per second, failed jobs, time to detect and to recover; writes SVG charts.
 *
 *   node dist/bench/outage.js        BENCH_CLIENTS=8 BENCH_WARM_S=5 BENCH_AFTER_S=10 BENCH_CLIENT_DIR=/dev/shm
 *   BENCH_FAULTS=data-loss           only one of data-loss,failover
 */
import { rmSync } from "node:fs";
import { ChaosRig } from "../scripts/chaos-rig.js";
import type { LoadResult } from "../scripts/signing-load.js";
import {
  benchNodeEnv,
  CLIENT_PARENT_DIR,
  clientDir,
  cpuMs,
  fmt,
  main,
  printTable,
  type Series,
  sleep,
  svgLineChart,
  WARM_SIGNATURES_PER_NODE,
  type WarmUp,
  warmUpFigures,
  writeResult,
  writeSvg,
} from "./lib.js";
import { warmRigLoad } from "./rig-load.js";

type Fault = "data-loss" | "failover";
type Mode = "product" | "classic";

const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 8);
// Steady seconds after the nodes' warm-up (lib.ts, WARM_SIGNATURES_PER_NODE) and before the
// fault; the last 3 are the baseline "back to 90 %" is measured against.
const WARM_MS = Number(process.env.BENCH_WARM_S ?? 5) * 1000;
const NODES = 3;
const AFTER_MS = Number(process.env.BENCH_AFTER_S ?? 10) * 1000;
const FAULTS = (process.env.BENCH_FAULTS ?? "data-loss,failover").split(",") as Fault[];

interface RunResult {
  fault: Fault;
  mode: Mode;
  signed: number;
  failed: number;
  /** First failed job, ms after the fault. */
  firstFailureMs: number | null;
  retries: number;
  baselinePerSec: number;
  /** When the monitor first reported Redis down (`signing_monitor_redis_up` 0), ms after the fault. */
  downSeenMs: number | null;
  detectMs: number | null;
  recoveryMs: number | null;
  dipped: boolean;
  /** Seconds relative to the fault (bucket start) → signed / failed in that second. */
  perSecond: { t: number; signed: number; failed: number }[];
  warmUp: WarmUp;
  /** Each node's share of the nodes' CPU in the steady seconds before the fault. */
  cpuShare: number[];
  errors: string[];
}

/**
 * When (ms after the fault) a 1 s trailing window is back to ≥ 90% of the pre-fault rate and the
 * `HOLD_MS` after it average ≥ 90% too: a dip that recovers before the failures start (the
 * classic run signs for ~0.8 s after a data loss) is not a recovery. Every 1 s window of the
 * hold need not be at 90%: with no fault at all this rig's rate wanders from one second to the
 * next on a shared VM, and that criterion would measure the wandering.
 * 0 without a dip; null: never.
 */
const HOLD_MS = 3000;
function recovery(
  ends: number[],
  faultAt: number,
  untilMs: number,
  baseline: number,
): { dipped: boolean; recoveryMs: number | null } {
  const count = (from: number, to: number) => ends.filter((e) => e > from && e <= to).length;
  let dipped = false;
  for (let t = faultAt + 100; t + HOLD_MS <= faultAt + untilMs; t += 100) {
    if (count(t - 1000, t) < 0.9 * baseline) dipped = true;
    else if (!dipped) continue;
    else if (count(t, t + HOLD_MS) >= (0.9 * baseline * HOLD_MS) / 1000)
      return { dipped, recoveryMs: t - faultAt };
  }
  return { dipped, recoveryMs: dipped ? null : 0 };
}

type Jobs = LoadResult["jobs"];

/** A fresh rig for one run; the classic one keeps no orphaned token and gives no grace. */
function startRig(fault: Fault, classic: boolean): Promise<ChaosRig> {
  return ChaosRig.start({
    sentinel: fault === "failover",
    nodes: NODES,
    clients: CLIENTS,
    nodeEnv: {
      ...benchNodeEnv(),
      ...(classic ? { SIGNING__store__orphanPolicy: "reject", SIGNING__store__recoveryGraceMs: "1" } : {}),
    },
  });
}

/** Waits the steady WARM_MS; each node's share of the nodes' CPU meanwhile shows the clients spread evenly. */
async function steadyCpuShare(rig: ChaosRig): Promise<number[]> {
  const pids = rig.nodes.map((n) => n.child.pid ?? 0);
  const cpu0 = pids.map(cpuMs);
  await sleep(WARM_MS);
  const nodeCpu = pids.map((p, i) => cpuMs(p) - (cpu0[i] ?? 0));
  return nodeCpu.map(
    (c) =>
      c /
      Math.max(
        1,
        nodeCpu.reduce((a, b) => a + b, 0),
      ),
  );
}

/** When the monitor saw Redis down, and when it counted the restart (ms since the epoch). */
interface Sightings {
  downSeenAt?: number;
  detectedAt?: number;
}

/**
 * Polls the monitor every 100 ms, until `stop` or until it counts the restart (`restarts` above
 * `before`); `stopped` settles after the last poll. A classic run has no monitor and polls nothing.
 */
function watchMonitor(
  rig: ChaosRig,
  restarts: () => Promise<number>,
  before: number,
  classic: boolean,
): { seen: Sightings; stop: () => void; stopped: Promise<void> } {
  const seen: Sightings = {};
  let polling = !classic;
  const poller = (async () => {
    while (polling && seen.detectedAt === undefined) {
      try {
        if (seen.downSeenAt === undefined && (await rig.monitorMetric("signing_monitor_redis_up")) === 0)
          seen.downSeenAt = Date.now();
        if ((await restarts()) > before) seen.detectedAt = Date.now();
      } catch {
        // the monitor is busy: try again
      }
      await sleep(100);
    }
  })();
  return {
    seen,
    stop: () => {
      polling = false;
    },
    stopped: poller,
  };
}

/** A data loss: Redis killed and restarted empty 300 ms later; a failover: the primary killed. */
async function injectFault(rig: ChaosRig, fault: Fault): Promise<void> {
  if (fault === "data-loss") {
    await rig.primary.kill();
    await sleep(300);
    await rig.primary.restart();
  } else {
    await rig.primary.kill();
  }
}

/** Signed and failed jobs in each second from the steady seconds before the fault to AFTER_MS after. */
function perSecondCounts(jobs: Jobs, faultAt: number): RunResult["perSecond"] {
  const perSecond: RunResult["perSecond"] = [];
  for (let s = -Math.floor(WARM_MS / 1000) + 1; s < AFTER_MS / 1000; s++) {
    const lo = faultAt + s * 1000;
    const inSec = jobs.filter((j) => j.end >= lo && j.end < lo + 1000);
    perSecond.push({
      t: s,
      signed: inSec.filter((j) => j.ok).length,
      failed: inSec.filter((j) => !j.ok).length,
    });
  }
  return perSecond;
}

/** What one run's rig measured, as the result the tables and the JSON show. */
interface Observed {
  fault: Fault;
  mode: Mode;
  load: LoadResult;
  loadStart: number;
  warmAt: number;
  faultAt: number;
  seen: Sightings;
  cpuShare: number[];
}

function runResult(o: Observed): RunResult {
  const { load: r, faultAt } = o;
  // WARM_SIGNATURES_PER_NODE × NODES in all: 8 clients over 3 nodes split 3/3/2, so one node
  // signs ~3/4 of its share.
  const warmJobs = r.jobs.filter((j) => j.end <= o.warmAt);
  const warm = warmUpFigures(
    warmJobs.filter((j) => j.ok).map((j) => j.end),
    o.loadStart,
    warmJobs.filter((j) => !j.ok).length,
  );
  const ok = r.jobs.filter((j) => j.ok).map((j) => j.end);
  const baseline = ok.filter((e) => e >= faultAt - 3000 && e < faultAt).length / 3;
  const rec = recovery(ok, faultAt, AFTER_MS, baseline);
  // SigningLoad's loops keep signing after a failure; a build would stop at its first one.
  return {
    fault: o.fault,
    mode: o.mode,
    signed: r.signed,
    failed: r.failed,
    firstFailureMs: r.failed ? Math.min(...r.jobs.filter((j) => !j.ok).map((j) => j.end)) - faultAt : null,
    retries: r.retries,
    baselinePerSec: baseline,
    downSeenMs: o.seen.downSeenAt === undefined ? null : o.seen.downSeenAt - faultAt,
    detectMs: o.seen.detectedAt === undefined ? null : o.seen.detectedAt - faultAt,
    recoveryMs: rec.recoveryMs,
    dipped: rec.dipped,
    perSecond: perSecondCounts(r.jobs, faultAt),
    warmUp: warm,
    cpuShare: o.cpuShare,
    errors: [...new Set(r.errors)].slice(0, 5),
  };
}

async function run(fault: Fault, mode: Mode): Promise<RunResult> {
  const classic = mode === "classic";
  const rig = await startRig(fault, classic);
  const filesDir = clientDir(`outage-${fault}-${mode}`);
  try {
    if (classic) await rig.monitor?.stop("SIGKILL");
    const kind = fault === "data-loss" ? "data_loss" : "failover";
    const metric = () => rig.monitorMetric("signing_monitor_redis_restarts_total", `kind="${kind}"`);
    const { load, loadStart, warmAt } = await warmRigLoad(rig, filesDir, CLIENTS);
    const before = classic ? Number.NaN : await metric();
    const cpuShare = await steadyCpuShare(rig);
    const faultAt = Date.now();
    const watch = watchMonitor(rig, metric, before, classic);
    await injectFault(rig, fault);
    await sleep(Math.max(0, faultAt + AFTER_MS - Date.now()));
    watch.stop();
    const r = await load.stop();
    await watch.stopped;
    return runResult({ fault, mode, load: r, loadStart, warmAt, faultAt, seen: watch.seen, cpuShare });
  } finally {
    await rig.stop();
    rmSync(filesDir, { recursive: true, force: true });
  }
}

/** The SVG chart of one fault: both modes' signed and failed per second, and when the monitor detected. */
function writeChart(fault: Fault, pair: RunResult[]): void {
  const series: Series[] = pair.flatMap((r, i) => [
    {
      name: `${r.mode}: signed/s`,
      points: r.perSecond.map((p) => [p.t + 0.5, p.signed] as [number, number]),
      color: i === 0 ? "#1f77b4" : "#d62728",
    },
    {
      name: `${r.mode}: failed/s`,
      points: r.perSecond.map((p) => [p.t + 0.5, p.failed] as [number, number]),
      color: i === 0 ? "#1f77b4" : "#d62728",
      dashed: true,
    },
  ]);
  const product = pair.find((r) => r.mode === "product");
  writeSvg(
    `outage-${fault}`,
    svgLineChart({
      title: `Signing through a Redis ${fault === "data-loss" ? "restart with data loss" : "Sentinel failover"} (${CLIENTS} clients, ${NODES} nodes)`,
      xLabel: "seconds since the fault",
      yLabel: "jobs per second",
      series,
      markers: [
        { x: 0, label: fault === "data-loss" ? "Redis killed, restarted empty" : "primary killed" },
        ...(product?.detectMs != null ? [{ x: product.detectMs / 1000, label: "monitor detects" }] : []),
      ],
    }),
  );
}

function printPerSecond(runs: RunResult[]): void {
  printTable(
    "Outage: per second, signed (failed) — t = seconds since the fault",
    ["run", ...(runs[0]?.perSecond.map((p) => `${p.t}`) ?? [])],
    runs.map((r) => [
      `${r.fault} ${r.mode}`,
      ...r.perSecond.map((p) => (p.failed ? `${p.signed}(${p.failed})` : `${p.signed}`)),
    ]),
  );
}

function printSummary(runs: RunResult[]): void {
  printTable(
    "Outage: summary",
    [
      "fault",
      "mode",
      "signed",
      "failed jobs",
      "first failure ms",
      "retries",
      "pre-fault /s",
      "Redis seen down ms",
      "detect ms",
      "recover ms (≥90%)",
      "warm-up: /s first → last second",
      "node CPU share before",
    ],
    runs.map((r) => [
      r.fault,
      r.mode,
      r.signed,
      r.failed,
      r.firstFailureMs === null ? "-" : fmt(r.firstFailureMs, 0),
      r.retries,
      r.baselinePerSec,
      r.downSeenMs === null ? (r.mode === "classic" ? "n/a" : "-") : fmt(r.downSeenMs, 0),
      r.detectMs === null ? "n/a" : fmt(r.detectMs, 0),
      r.recoveryMs === null ? "never" : fmt(r.recoveryMs, 0),
      `${r.warmUp.firstSecondPerSec} → ${r.warmUp.lastSecondPerSec} (${fmt(r.warmUp.seconds)} s)`,
      r.cpuShare.map((c) => `${Math.round(c * 100)}%`).join(" / "),
    ]),
  );
}

/** The targets table, of the product runs only: no failed job, detected within 2 s, recovered within 5 s. */
function printTargets(runs: RunResult[]): {
  zeroFailed: boolean;
  detectWithin2s: boolean;
  recoverWithin5s: boolean;
} {
  const products = runs.filter((r) => r.mode === "product");
  const met = {
    zeroFailed: products.every((r) => r.failed === 0),
    detectWithin2s: products.every((r) => r.detectMs !== null && r.detectMs <= 2000),
    recoverWithin5s: products.every((r) => r.recoveryMs !== null && r.recoveryMs <= 5000),
  };
  printTable(
    "Outage: targets (product runs)",
    ["target", "wanted", "measured", "met"],
    [
      [
        "failed jobs",
        "0",
        products.map((r) => `${r.fault}: ${r.failed}`).join(", "),
        met.zeroFailed ? "yes" : "NO",
      ],
      [
        "time to detect",
        "≤ 2000 ms",
        products.map((r) => `${r.fault}: ${r.detectMs ?? "never"}`).join(", "),
        met.detectWithin2s ? "yes" : "NO",
      ],
      [
        "throughput ≥ 90% again",
        "≤ 5000 ms",
        products.map((r) => `${r.fault}: ${r.recoveryMs ?? "never"}`).join(", "),
        met.recoverWithin5s ? "yes" : "NO",
      ],
    ],
  );
  return met;
}

main(async () => {
  const runs: RunResult[] = [];
  for (const fault of FAULTS) {
    for (const mode of ["product", "classic"] as Mode[]) {
      console.log(`  ${fault}, ${mode}…`);
      runs.push(await run(fault, mode));
    }
    writeChart(
      fault,
      runs.filter((r) => r.fault === fault),
    );
  }
  printPerSecond(runs);
  printSummary(runs);
  for (const r of runs.filter((x) => x.errors.length))
    console.log(`${r.fault} ${r.mode} errors: ${r.errors.join(" | ")}`);
  const met = printTargets(runs);
  writeResult("outage", {
    settings: {
      clients: CLIENTS,
      warmMs: WARM_MS,
      afterMs: AFTER_MS,
      nodes: NODES,
      clientDir: CLIENT_PARENT_DIR,
      warmSignaturesPerNode: WARM_SIGNATURES_PER_NODE,
    },
    runs,
    met,
  });
});
