/**
 * Writes docs/performance.md's results table from the benchmarks' results JSON
 * (bench/results/small-files.json, large-files.json, signing-pool.json, admission.json,
 * formats.json, run-all.json): `npm run bench` runs it
 * last, and test/rules/docs.test.ts checks that the page holds what it would write.
 *
 *   node dist/bench/report.js        rewrites the table from the JSON already there
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { fmt, percentile, RESULTS_DIR, ROOT } from "./lib.js";

export const PERFORMANCE_DOC = join(ROOT, "docs", "performance.md");
const BEGIN = "<!-- results: written by `npm run bench` (bench/report.ts) from bench/results/*.json -->";
const END = "<!-- end of results -->";

interface Machine {
  cpus: number;
  cpuModel?: string;
  node: string;
  loadAverageAtStart?: number[];
  loadAverage: number[];
}

interface Baseline {
  name: string;
  concurrency: number;
  sigsPerSec: number;
  cpuMsPerSig?: number;
}

interface SmallFiles {
  at: string;
  machine: Machine;
  levels: { clients: number; sigsPerSec: number; p99Ms: number; nodeCpuMsPerSig: number; failed: number }[];
  baselines: Baseline[];
  gpgUnprotectedBestSigsPerSec: number;
  gpgProtectedBestSigsPerSec: number;
  signerInProcessSigsPerSec: number;
}

interface LargeFiles {
  at: string;
  machine: Machine;
  settings: { rounds: number };
  results: {
    sizeMiB: number;
    endToEndMBps: number;
    gpgUnprotectedMBps: number;
    gpgProtectedMBps: number;
    ratioVsGpg: number;
    ratioMin: number;
    ratioMax: number;
    ratioVsGpgProtected: number;
    nodeSha256MBps: number;
    sha256sumMBps: number;
    bareMBps: number;
    bareVsGpg: number;
    nodeVsBare: number;
    nodeCpuMsPerGiB: number;
    clientCpuMsPerGiB: number;
    nodePeakRssMiB: number;
  }[];
}

interface SigningPool {
  at: string;
  machine: Machine;
  medians: { name: string; sigsPerSec: number; eventLoopP99Ms: number }[];
  scenarios: { name: string; nodeCpuMsPerSig: number }[];
  baselines: { rsa3072InProcess: { perSec: number } };
}

interface Admission {
  at: string;
  machine: Machine;
  levels: { admissionWaitMs: string; clients: number; p99Ms: number; retries: number }[];
  targets: Record<"retriesAt128" | "p99At128Ms" | "rate128Vs32", { value: number | null }>;
}

interface Formats {
  at: string;
  machine: Machine;
  settings: { levels: number[]; rounds: number; rssTargetMiB: number };
  cases: {
    format: string;
    inputLabel: string;
    tool: string;
    levels: { clients: number; sigsPerSec: number; failed: number }[];
    toolBestSigsPerSec: number;
  }[];
  large: {
    sizeMiB: number;
    rounds: unknown[];
    nodeMBps: number;
    toolMBps: number;
    ratio: number;
    ratioMin: number;
    ratioMax: number;
    nodePeakRssMiB: number;
    nodeRssBeforeMiB: number;
  }[];
}

interface RunAll {
  at: string;
  only: string[] | null;
  runs: { benchmark: string; status: string; seconds: number; stolenPct: number }[];
}

function read<T>(name: string): T | undefined {
  const file = join(RESULTS_DIR, `${name}.json`);
  return existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as T) : undefined;
}

const load = (m: Machine) =>
  `${m.loadAverageAtStart ? `${fmt(m.loadAverageAtStart[0], 1)} at its start, ` : ""}${fmt(m.loadAverage[0], 1)} at its end`;

/** Where and when the figures were taken: the machine, its load, the hypervisor's share. */
function runLine(
  small: SmallFiles,
  large: LargeFiles | undefined,
  runAll: RunAll | undefined,
  /** Other benchmarks in the table, by name. */
  others: Record<string, { at: string; machine: Machine } | undefined>,
): string {
  const m = small.machine;
  const runEnd = runAll ? Date.parse(runAll.at) : 0;
  const runStart = runEnd - (runAll?.runs.reduce((a, r) => a + r.seconds, 0) ?? 0) * 1000;
  // The hypervisor's share is run-all's reading: only for a result written during that run.
  const stolen = (name: string, at: string) =>
    Date.parse(at) >= runStart && Date.parse(at) <= runEnd
      ? runAll?.runs.find((r) => r.benchmark === name)?.stolenPct
      : undefined;
  const part = (name: string, at: string, machine: Machine) => {
    const s = stolen(name, at);
    // The VM is sometimes moved to other hardware between runs.
    const where = machine.cpuModel === m.cpuModel ? "" : ` on ${machine.cpus} × ${machine.cpuModel}`;
    return `\`${name}\` ran${where} at ${at.slice(0, 16).replace("T", " ")} UTC (1-minute load average ${load(machine)}${s === undefined ? "" : `, ${fmt(s, 1)} % of CPU time stolen by the hypervisor`})`;
  };
  const total =
    runAll && runAll.only === null
      ? ` The last whole \`npm run bench\` (${runAll.runs.length} benchmarks) took ${fmt((runEnd - runStart) / 60_000, 1)} min.`
      : "";
  return (
    `Machine: ${m.cpus} × ${m.cpuModel ?? "unknown CPU"}, node ${m.node}, shared with other engineers' ` +
    `builds and tests. ${part("small-files", small.at, small.machine)}` +
    `${large ? `; ${part("large-files", large.at, large.machine)}` : ""}` +
    Object.entries(others)
      .map(([name, r]) => (r ? `; ${part(name, r.at, r.machine)}` : ""))
      .join("") +
    `.${total}`
  );
}

function smallFilesRows(s: SmallFiles, clients: number): string[][] {
  const l = s.levels.find((x) => x.clients === clients);
  if (!l) return [];
  const x = (a: number, b: number) => `${fmt(a / b)}×`;
  // CPU per signature of a baseline: at its best concurrency for gpg (1 thread in-process).
  const cpuOf = (prefix: string) =>
    s.baselines.filter((b) => b.name.startsWith(prefix)).sort((a, b) => b.sigsPerSec - a.sigsPerSec)[0]
      ?.cpuMsPerSig;
  const signerCpu = cpuOf("node's signer in-process");
  const gpgCpu = cpuOf("gpg --detach-sign per file, unprotected");
  return [
    [
      `**small files (1 KiB), ${clients} clients: signatures/s vs \`gpg --detach-sign\` per file, unprotected key**`,
      fmt(l.sigsPerSec, 0),
      fmt(s.gpgUnprotectedBestSigsPerSec, 0),
      `**${x(l.sigsPerSec, s.gpgUnprotectedBestSigsPerSec)}**`,
    ],
    [
      "… vs `gpg --detach-sign` per file, passphrase-protected dev key",
      fmt(l.sigsPerSec, 0),
      fmt(s.gpgProtectedBestSigsPerSec, 1),
      x(l.sigsPerSec, s.gpgProtectedBestSigsPerSec),
    ],
    [
      "… vs the node's signer in-process, 1 thread (the limit)",
      fmt(l.sigsPerSec, 0),
      fmt(s.signerInProcessSigsPerSec, 0),
      `${fmt((100 * l.sigsPerSec) / s.signerInProcessSigsPerSec, 0)} %`,
    ],
    ...(signerCpu === undefined
      ? []
      : [
          [
            "… node CPU ms per signature vs the in-process signer's",
            fmt(l.nodeCpuMsPerSig, 2),
            fmt(signerCpu, 3),
            x(l.nodeCpuMsPerSig, signerCpu),
          ],
        ]),
    ...(gpgCpu === undefined
      ? []
      : [
          [
            "… CPU ms per signature: the node's, and unprotected-key gpg's (gpg and its agent)",
            fmt(l.nodeCpuMsPerSig, 2),
            fmt(gpgCpu, 1),
            `${x(gpgCpu, l.nodeCpuMsPerSig)} less`,
          ],
        ]),
    [`… p99 latency ms (target ≤ 50), failed jobs`, `${fmt(l.p99Ms, 1)}, ${l.failed} failed`, "", ""],
  ];
}

function largeFilesRows(large: LargeFiles): string[][] {
  const r = large.results[large.results.length - 1];
  if (!r) return [];
  return [
    [
      `**large file (${r.sizeMiB} MiB): MB/s end to end vs \`gpg --detach-sign\`, unprotected key** (median of ${large.settings.rounds} rounds)`,
      fmt(r.endToEndMBps, 0),
      fmt(r.gpgUnprotectedMBps, 0),
      `**${fmt(r.ratioVsGpg)}×** (${fmt(r.ratioMin)}–${fmt(r.ratioMax)})`,
    ],
    ...large.results
      .slice(0, -1)
      .map((o) => [
        `… at ${o.sizeMiB} MiB`,
        fmt(o.endToEndMBps, 0),
        fmt(o.gpgUnprotectedMBps, 0),
        `**${fmt(o.ratioVsGpg)}×** (${fmt(o.ratioMin)}–${fmt(o.ratioMax)}); bare ${fmt(o.bareVsGpg)}× gpg`,
      ]),
    [
      "… vs `gpg --detach-sign`, passphrase-protected dev key",
      fmt(r.endToEndMBps, 0),
      fmt(r.gpgProtectedMBps, 0),
      `${fmt(r.ratioVsGpgProtected)}×`,
    ],
    [
      "… vs node's SHA-256 in-process (the limit)",
      fmt(r.endToEndMBps, 0),
      fmt(r.nodeSha256MBps, 0),
      `${fmt((100 * r.endToEndMBps) / r.nodeSha256MBps, 0)} %`,
    ],
    [
      "… a bare Node upload that only hashes, both sides (the floor of any Node design; bench/bare-upload.ts) vs gpg, and the node vs it",
      fmt(r.bareMBps, 0),
      fmt(r.gpgUnprotectedMBps, 0),
      `${fmt(r.bareVsGpg)}× gpg; node ${fmt(r.nodeVsBare)}× bare`,
    ],
    [
      "… this host's single-core speed: `sha256sum` MB/s (the ratios move with it between hosts)",
      fmt(r.sha256sumMBps, 0),
      "",
      "",
    ],
    [
      "… CPU ms per GiB: the node's, the client's (signtool's SigningClient); node peak RSS MiB (target < 200)",
      `${fmt(r.nodeCpuMsPerGiB, 0)} ms, ${fmt(r.clientCpuMsPerGiB, 0)} ms; ${fmt(r.nodePeakRssMiB, 0)} MiB`,
      "",
      "",
    ],
  ];
}

/** Issue 31's figures: the signing pool's event-loop delay and rates, SoftHSM2 beside a file key. */
function signingPoolRows(pool: SigningPool): string[][] {
  const m = (prefix: string) => pool.medians.find((x) => x.name.startsWith(prefix));
  const [ed, edPool, hsm, rsaInline, rsaPool] = [
    m("Ed25519 file key, no pool"),
    m("Ed25519 file key, pool"),
    m("Ed25519 SoftHSM2"),
    m("RSA-3072 file key, inline"),
    m("RSA-3072 file key, pool"),
  ];
  if (!ed || !edPool || !hsm || !rsaInline || !rsaPool) return [];
  const pct = (a: number, b: number) => `${fmt((100 * a) / b, 0)} %`;
  const cpu = (name: string) =>
    percentile(
      pool.scenarios.filter((x) => x.name === name).map((x) => x.nodeCpuMsPerSig),
      50,
    );
  return [
    [
      "**event-loop delay p99 ms at 32 clients (goal ≤ 10): RSA-3072 file key in the pool vs signed on the event loop**",
      fmt(rsaPool.eventLoopP99Ms, 1),
      fmt(rsaInline.eventLoopP99Ms, 1),
      "",
    ],
    [
      "… SoftHSM2 Ed25519 key (pool); Ed25519 file key (inline)",
      fmt(hsm.eventLoopP99Ms, 1),
      fmt(edPool.eventLoopP99Ms, 1),
      "",
    ],
    [
      "**SoftHSM2 Ed25519 key, 32 clients: signatures/s vs the Ed25519 file key** (goal ≥ 60 %)",
      fmt(hsm.sigsPerSec, 0),
      fmt(edPool.sigsPerSec, 0),
      `**${pct(hsm.sigsPerSec, edPool.sigsPerSec)}**`,
    ],
    [
      "… RSA-3072 file key in the pool vs RSA-3072 in-process, 1 thread",
      fmt(rsaPool.sigsPerSec, 0),
      fmt(pool.baselines.rsa3072InProcess.perSec, 0),
      pct(rsaPool.sigsPerSec, pool.baselines.rsa3072InProcess.perSec),
    ],
    [
      "… Ed25519 file key with the pool vs `signing.workers: 0` (goal: within 10 %): signatures/s; node CPU ms per signature",
      `${fmt(edPool.sigsPerSec, 0)}; ${fmt(cpu(edPool.name), 2)}`,
      `${fmt(ed.sigsPerSec, 0)}; ${fmt(cpu(ed.name), 2)}`,
      `${pct(edPool.sigsPerSec, ed.sigsPerSec)}; ${pct(cpu(edPool.name), cpu(ed.name))}`,
    ],
  ];
}

/** Issue 31's burst figures: 128 clients on one node, waiting in line vs bounced (worst round). */
function admissionRows(a: Admission): string[][] {
  const bounced = a.levels.filter((l) => l.admissionWaitMs === "0" && l.clients === 128);
  const t = a.targets;
  if (bounced.length === 0 || t.p99At128Ms.value === null || t.rate128Vs32.value === null) return [];
  return [
    [
      "**128 clients on one node, waiting in line vs bounced at `maxPending`: p99 ms (goal ≤ 150), retries (goal 0)** (worst round)",
      `**${fmt(t.p99At128Ms.value, 0)}, ${t.retriesAt128.value}**`,
      `${fmt(Math.max(...bounced.map((l) => l.p99Ms)), 0)}, ${bounced.reduce((n, l) => n + l.retries, 0)}`,
      "",
    ],
    [
      "… signatures/s at 128 clients / at 32 clients, waiting in line, within one round (goal ≥ 95 %; worst round)",
      "",
      "",
      `${fmt(100 * t.rate128Vs32.value, 0)} %`,
    ],
  ];
}

/** The tool each format's row names, as the table says it. */
function toolLabel(tool: string): string {
  const [command, ...how] = tool.split(" per file");
  return `\`${command}\` per file${how.join("")}`;
}

function formatsRows(f: Formats): string[][] {
  const clients = Math.max(...f.settings.levels);
  const rows = f.cases.flatMap((c, i) => {
    const l = c.levels.find((x) => x.clients === clients);
    if (!l) return [];
    const label = `\`${c.format}\` (${c.inputLabel}), ${clients} clients: signatures/s vs ${toolLabel(c.tool)}${l.failed ? ` (${l.failed} failed)` : ""}`;
    return [
      [
        i === 0 ? `**per format, small inputs: ${label}**` : `… ${label}`,
        fmt(l.sigsPerSec, 0),
        fmt(c.toolBestSigsPerSec, 0),
        `${fmt(l.sigsPerSec / c.toolBestSigsPerSec)}×`,
      ],
    ];
  });
  const large = f.large[0];
  if (large) {
    rows.push([
      `**Authenticode, ${large.sizeMiB} MiB PE: MB/s end to end through the node vs \`osslsigncode sign\` alone** (median of ${large.rounds.length} rounds)`,
      fmt(large.nodeMBps, 0),
      fmt(large.toolMBps, 0),
      `**${fmt(large.ratio)}×** (${fmt(large.ratioMin)}–${fmt(large.ratioMax)})`,
    ]);
    const peaks = f.large.map(
      (r) =>
        `${fmt(r.nodePeakRssMiB, 0)} MiB at ${r.sizeMiB >= 1024 ? `${fmt(r.sizeMiB / 1024)} GiB` : `${r.sizeMiB} MiB`}`,
    );
    rows.push([
      `… node peak RSS with one Authenticode file, on a fresh node (target < 200 MB = ${fmt(f.settings.rssTargetMiB, 0)} MiB at 1 GiB)`,
      `${peaks.join(", ")} (${fmt(large.nodeRssBeforeMiB, 0)} MiB before)`,
      "",
      "",
    ]);
  }
  return rows;
}

/** The results section: the run's line and one table, from the JSON in bench/results/. */
export function renderResults(): string {
  const small = read<SmallFiles>("small-files");
  if (!small) return "No results yet: run `npm run bench`.";
  const large = read<LargeFiles>("large-files");
  const pool = read<SigningPool>("signing-pool");
  const admission = read<Admission>("admission");
  const formats = read<Formats>("formats");
  const rows = [
    ...smallFilesRows(small, 32),
    ...(large ? largeFilesRows(large) : []),
    ...(pool ? signingPoolRows(pool) : []),
    ...(admission ? admissionRows(admission) : []),
    ...(formats ? formatsRows(formats) : []),
  ];
  return [
    runLine(small, large, read<RunAll>("run-all"), { "signing-pool": pool, admission, formats }),
    "",
    "| figure | node | baseline | ratio |",
    "|---|--:|--:|--:|",
    ...rows.map((r) => `| ${r.join(" | ")} |`),
  ].join("\n");
}

/** `doc` with its results section replaced by `results`. */
export function withResults(doc: string, results: string): string {
  const from = doc.indexOf(BEGIN);
  const to = doc.indexOf(END);
  if (from < 0 || to < from) throw new Error(`docs/performance.md lacks the markers ${BEGIN} … ${END}`);
  return `${doc.slice(0, from + BEGIN.length)}\n${results}\n${doc.slice(to)}`;
}

export function writePerformanceDoc(): void {
  writeFileSync(PERFORMANCE_DOC, withResults(readFileSync(PERFORMANCE_DOC, "utf8"), renderResults()));
  console.log(`results table: ${PERFORMANCE_DOC}`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) writePerformanceDoc();
