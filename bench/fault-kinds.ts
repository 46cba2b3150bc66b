/**
 * Fault kinds: what makes signing slower after a Redis fault. The outage rig (3 node processes,
 * the monitor, 8 signtool clients spread evenly, nodes warm) takes one kind of disturbance at
 * t = 0 and the same again at t = SECOND_AT_S, one fresh rig per kind, and prints the rate and
 * the nodes' CPU per signature second by second. A diagnosis beside `outage`, not a target:
 * it is not in `npm run bench`.
 *
 *   node dist/bench/fault-kinds.js     BENCH_KINDS=none,stall,reconnect,flush,restart BENCH_CLIENTS=8
 */
import { rmSync } from "node:fs";
import { Redis } from "ioredis";
import { ChaosRig } from "../scripts/chaos-rig.js";
import {
  benchNodeEnv,
  clientDir,
  cpuMs,
  fmt,
  main,
  printTable,
  sleep,
  WARM_SIGNATURES_PER_NODE,
  writeResult,
} from "./lib.js";
import { warmRigLoad } from "./rig-load.js";

type Kind = "none" | "stall" | "reconnect" | "flush" | "restart";

const KINDS: Record<Kind, string> = {
  none: "nothing happens (the rig's own wandering)",
  stall: "Redis stopped for 300 ms (SIGSTOP/SIGCONT): connections and data stay",
  reconnect: "CLIENT KILL TYPE normal: every connection dropped, data stays",
  flush: "FLUSHALL: data lost, same process and connections",
  restart: "Redis killed, restarted empty 300 ms later (outage's data loss)",
};
const ORDER = (process.env.BENCH_KINDS ?? "none,stall,reconnect,flush,restart").split(",") as Kind[];
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 8);
const NODES = 3;
const PRE_S = 5;
const SECOND_AT_S = 15;
const AFTER_S = 25;
/** The seconds after each disturbance that the summary averages: where the first one dips. */
const DIP = [1, 2, 3, 4];

async function disturb(rig: ChaosRig, kind: Kind): Promise<void> {
  if (kind === "stall") {
    rig.primary.pause();
    await sleep(300);
    rig.primary.resume();
  } else if (kind === "reconnect" || kind === "flush") {
    const r = new Redis(rig.primary.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
    try {
      await r.connect();
      if (kind === "flush") await r.flushall();
      else await r.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes");
    } finally {
      r.disconnect();
    }
  } else if (kind === "restart") {
    await rig.primary.kill();
    await sleep(300);
    await rig.primary.restart();
  }
}

interface Second {
  t: number;
  signed: number;
  nodeCpuMsPerSig: number;
}

interface KindRun {
  kind: Kind;
  seconds: Second[];
  retries: number;
  failed: number;
}

async function run(kind: Kind): Promise<KindRun> {
  const rig = await ChaosRig.start({ nodes: NODES, clients: CLIENTS, nodeEnv: benchNodeEnv() });
  const dir = clientDir(`fault-kinds-${kind}`);
  try {
    const { load } = await warmRigLoad(rig, dir, CLIENTS);
    const pids = rig.nodes.map((n) => n.child.pid ?? 0);
    const nodeCpu = () => pids.reduce((sum, p) => sum + cpuMs(p), 0);
    const seconds: Second[] = [];
    const start = Date.now();
    let signed = load.signed;
    let cpu = nodeCpu();
    for (let t = -PRE_S; t < AFTER_S; t++) {
      if (t === 0 || t === SECOND_AT_S) await disturb(rig, kind);
      await sleep(start + (t + PRE_S + 1) * 1000 - Date.now());
      const s = load.signed;
      const c = nodeCpu();
      seconds.push({ t, signed: s - signed, nodeCpuMsPerSig: (c - cpu) / Math.max(1, s - signed) });
      signed = s;
      cpu = c;
    }
    const r = await load.stop();
    return { kind, seconds, retries: r.retries, failed: r.failed };
  } finally {
    await rig.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
const at = (r: KindRun, ts: number[]) => r.seconds.filter((s) => ts.includes(s.t));

/** The summary of one kind: the 3 s before the first disturbance, and the DIP seconds after each. */
interface SummaryRow {
  kind: Kind;
  what: string;
  preRate: number;
  preCpu: number;
  first: { ratePct: number; cpuX: number };
  second: { ratePct: number; cpuX: number };
  retries: number;
  failed: number;
}

/** One fresh rig per kind in BENCH_KINDS, in order; an unknown kind stops the run before its rig. */
async function runKinds(): Promise<KindRun[]> {
  const runs: KindRun[] = [];
  for (const kind of ORDER) {
    if (!(kind in KINDS))
      throw new Error(`BENCH_KINDS: unknown kind ${kind} (${Object.keys(KINDS).join(", ")})`);
    console.log(`  ${kind}…`);
    runs.push(await run(kind));
  }
  return runs;
}

function printPerSecond(runs: KindRun[]): void {
  printTable(
    `Fault kinds: signed per second (t = seconds since the first disturbance; the second at t = ${SECOND_AT_S})`,
    ["kind", ...(runs[0]?.seconds.map((s) => `${s.t}`) ?? [])],
    runs.map((r) => [r.kind, ...r.seconds.map((s) => s.signed)]),
  );
}

function summaryRow(r: KindRun): SummaryRow {
  const pre = at(r, [-3, -2, -1]);
  const preRate = mean(pre.map((s) => s.signed));
  const preCpu = mean(pre.map((s) => s.nodeCpuMsPerSig));
  const dip = (offset: number) => {
    const sec = at(
      r,
      DIP.map((d) => d + offset),
    );
    return {
      ratePct: (100 * mean(sec.map((s) => s.signed))) / preRate,
      cpuX: mean(sec.map((s) => s.nodeCpuMsPerSig)) / preCpu,
    };
  };
  return {
    kind: r.kind,
    what: KINDS[r.kind],
    preRate,
    preCpu,
    first: dip(0),
    second: dip(SECOND_AT_S),
    retries: r.retries,
    failed: r.failed,
  };
}

function printSummary(rows: SummaryRow[]): void {
  printTable(
    `Fault kinds: seconds ${DIP[0]}–${DIP[DIP.length - 1]} after each disturbance, against the 3 s before the first`,
    [
      "kind",
      "what",
      "before /s",
      "node CPU ms/sig before",
      "1st: rate %",
      "1st: node CPU/sig ×",
      "2nd: rate %",
      "2nd: node CPU/sig ×",
      "retries",
      "failed",
    ],
    rows.map((x) => [
      x.kind,
      x.what,
      fmt(x.preRate, 0),
      fmt(x.preCpu, 2),
      fmt(x.first.ratePct, 0),
      fmt(x.first.cpuX, 2),
      fmt(x.second.ratePct, 0),
      fmt(x.second.cpuX, 2),
      x.retries,
      x.failed,
    ]),
  );
}

main(async () => {
  const runs = await runKinds();
  printPerSecond(runs);
  const rows = runs.map(summaryRow);
  printSummary(rows);
  writeResult("fault-kinds", {
    settings: {
      clients: CLIENTS,
      nodes: NODES,
      secondAtS: SECOND_AT_S,
      warmSignaturesPerNode: WARM_SIGNATURES_PER_NODE,
    },
    runs,
    summary: rows,
  });
});
