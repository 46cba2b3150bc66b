/**
 * Runs every benchmark in sequence, each as its own child process, so that one crash does
 * not hide the others' results; exits non-zero when any of them failed.
 *
 *   npm run bench            BENCH_ONLY=small-files,token-checks to pick some
 */
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { printTable } from "./lib.js";

const ALL = ["machine", "small-files", "large-files", "token-checks", "snapshot", "outage", "scale-out"];
const only = process.env.BENCH_ONLY?.split(",").filter(Boolean);
const here = dirname(fileURLToPath(import.meta.url));

const rows: (string | number)[][] = [];
let failures = 0;
for (const name of only ?? ALL) {
  console.log(`\n=== ${name} ===`);
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [join(here, `${name}.js`)], { stdio: "inherit", env: process.env });
  const status = r.error
    ? `error: ${r.error.message}`
    : r.signal
      ? `killed by ${r.signal}`
      : `exit ${r.status}`;
  if (r.error || r.signal || r.status !== 0) failures++;
  rows.push([name, status, (Date.now() - t0) / 1000]);
}
printTable("Benchmarks run", ["benchmark", "status", "seconds"], rows);
process.exit(failures ? 1 : 0);
