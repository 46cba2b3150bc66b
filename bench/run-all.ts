/**
 * Runs every benchmark in sequence, each as its own child process, so that one crash does
 * not hide the others' results; exits non-zero when any of them failed. Then writes
 * bench/results/run-all.json and docs/performance.md's results table (bench/report.ts).
 *
 *   npm run bench            BENCH_ONLY=small-files,token-checks to pick some
 */
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { printTable, writeResult } from "./lib.js";
import { writePerformanceDoc } from "./report.js";

const ALL = [
  "machine",
  "small-files",
  "large-files",
  "formats",
  "token-checks",
  "snapshot",
  "outage",
  "scale-out",
  "admission",
  "signing-pool",
];
const only = process.env.BENCH_ONLY?.split(",").filter(Boolean);
const here = dirname(fileURLToPath(import.meta.url));

/**
 * The machine's CPU time so far, and how much of it the hypervisor gave to someone else
 * (`steal` in /proc/stat): on the shared development VM that share moved every figure here.
 */
function cpuTicks(): { total: number; steal: number } {
  const fields = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "")
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  return { total: fields.slice(0, 8).reduce((a, b) => a + b, 0), steal: fields[7] ?? 0 };
}

const runs: { benchmark: string; status: string; seconds: number; stolenPct: number }[] = [];
let failures = 0;
for (const name of only ?? ALL) {
  console.log(`\n=== ${name} ===`);
  const t0 = Date.now();
  const cpu0 = cpuTicks();
  const r = spawnSync(process.execPath, [join(here, `${name}.js`)], { stdio: "inherit", env: process.env });
  const status = r.error
    ? `error: ${r.error.message}`
    : r.signal
      ? `killed by ${r.signal}`
      : `exit ${r.status}`;
  if (r.error || r.signal || r.status !== 0) failures++;
  const cpu1 = cpuTicks();
  const stolen = (100 * (cpu1.steal - cpu0.steal)) / Math.max(1, cpu1.total - cpu0.total);
  runs.push({ benchmark: name, status, seconds: (Date.now() - t0) / 1000, stolenPct: stolen });
}
printTable(
  "Benchmarks run",
  ["benchmark", "status", "seconds", "CPU stolen by the hypervisor"],
  runs.map((r) => [r.benchmark, r.status, r.seconds, `${r.stolenPct.toFixed(1)} %`]),
);
writeResult("run-all", { only: only ?? null, runs });
writePerformanceDoc();
process.exit(failures ? 1 : 0);
