/**
 * Shared pieces of the benchmarks: statistics, tables, JSON results, an SVG line chart,
 * throwaway GNUPGHOMEs (the protected dev key, an unprotected key), /proc readings and token issuing.
 */
import { execFile, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { SigningClient } from "../src/client/signing-client.js";
import { writeFileAtomic } from "../src/files/write-atomic.js";

const execFileP = promisify(execFile);

/** The repository root (this file runs as dist/bench/lib.js). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const RESULTS_DIR = join(ROOT, "bench", "results");

// ---------------------------------------------------------------- statistics

/** Nearest-rank percentile (p in 0..100) of unsorted values; 0 for none. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length) - 1;
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank))] ?? 0;
}

export interface Summary {
  n: number;
  mean: number;
  p50: number;
  p99: number;
  max: number;
}

export function summarize(values: readonly number[]): Summary {
  const n = values.length;
  const mean = n ? values.reduce((a, b) => a + b, 0) / n : 0;
  return {
    n,
    mean,
    p50: percentile(values, 50),
    p99: percentile(values, 99),
    // reduce, not Math.max(...values): a long run's samples overflow the call stack as arguments
    max: values.reduce((a, b) => Math.max(a, b), 0),
  };
}

/** A number with sensible precision for a table. */
export function fmt(v: number | undefined, digits?: number): string {
  if (v === undefined || Number.isNaN(v)) return "-";
  if (!Number.isFinite(v)) return "∞";
  if (digits === undefined && Number.isInteger(v)) return String(v);
  const d = digits ?? (Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2);
  return v.toFixed(d);
}

export const ratio = (a: number, b: number): number => (b > 0 ? a / b : Number.NaN);

// ---------------------------------------------------------------- output

export type Cell = string | number | undefined;

/** Prints an aligned text table (numbers right-aligned) under a title. */
export function printTable(title: string, headers: string[], rows: Cell[][]): string {
  const text = rows.map((r) => r.map((c) => (typeof c === "number" ? fmt(c) : (c ?? "-"))));
  const widths = headers.map((h, i) => Math.max(h.length, ...text.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[], numeric: boolean[]) =>
    cells
      .map((c, i) => (numeric[i] ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  const numeric = headers.map((_, i) => rows.some((r) => typeof r[i] === "number"));
  const out = [
    "",
    `## ${title}`,
    line(headers, numeric),
    widths.map((w) => "-".repeat(w)).join("  "),
    ...text.map((r) => line(r, numeric)),
    "",
  ].join("\n");
  console.log(out);
  return out;
}

/** Writes bench/results/<name>.json with the machine's description, and returns its path. */
export function writeResult(name: string, data: Record<string, unknown>): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = join(RESULTS_DIR, `${name}.json`);
  const body = {
    benchmark: name,
    at: new Date().toISOString(),
    machine: machine(),
    ...data,
  };
  writeFileSync(file, `${JSON.stringify(body, null, 2)}\n`);
  console.log(`results: ${file}`);
  return file;
}

/** The machine's load average when this benchmark process started: others' work, not ours. */
const LOAD_AVERAGE_AT_START = loadavg();

export function machine(): Record<string, unknown> {
  const c = cpus();
  return {
    cpus: c.length,
    cpuModel: c[0]?.model,
    node: process.version,
    platform: process.platform,
    loadAverageAtStart: LOAD_AVERAGE_AT_START,
    loadAverage: loadavg(),
    // What makes two runs on a shared VM differ (bench/machine.ts): read figures by it.
    freshPageUs: freshPageMicros(16 * 1024 * 1024),
  };
}

/** µs per fresh 4 KiB page: a new zeroed buffer is mapped lazily, so each first write faults. */
export function freshPageMicros(bytes: number): number {
  const page = 4096;
  const t0 = performance.now();
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < b.length; i += page) b[i] = 1;
  return ((performance.now() - t0) * 1000) / (bytes / page);
}

// ---------------------------------------------------------------- SVG chart

export interface Series {
  name: string;
  points: [number, number][];
  color?: string;
  dashed?: boolean;
}

export interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** Vertical marker lines, e.g. the fault injection. */
  markers?: { x: number; label: string }[];
  width?: number;
  height?: number;
}

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

function niceStep(range: number, ticks: number): number {
  const raw = range / Math.max(1, ticks);
  const mag = 10 ** Math.floor(Math.log10(raw || 1));
  const norm = raw / mag;
  return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
}

/** A hand-written SVG line chart: axes with ticks, one polyline per series, a legend, markers. */
export function svgLineChart(o: ChartOptions): string {
  const W = o.width ?? 900;
  const H = o.height ?? 420;
  const m = { l: 60, r: 190, t: 40, b: 50 };
  const all = o.series.flatMap((s) => s.points);
  const xs = [...all.map((p) => p[0]), ...(o.markers ?? []).map((k) => k.x)];
  const xMin = Math.min(0, ...xs);
  const xMax = Math.max(xMin + 1, ...xs);
  const yMax = Math.max(1, ...all.map((p) => p[1])) * 1.1;
  const px = (x: number) => m.l + ((x - xMin) / (xMax - xMin)) * (W - m.l - m.r);
  const py = (y: number) => H - m.b - (y / yMax) * (H - m.t - m.b);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12" role="img" aria-label="${esc(o.title)}">`,
    `<title>${esc(o.title)}</title>`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2 - m.r / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${esc(o.title)}</text>`,
  ];
  const xStep = niceStep(xMax - xMin, 10);
  for (let x = Math.ceil(xMin / xStep) * xStep; x <= xMax + 1e-9; x += xStep) {
    parts.push(
      `<line x1="${px(x)}" y1="${m.t}" x2="${px(x)}" y2="${H - m.b}" stroke="#eee"/>`,
      `<text x="${px(x)}" y="${H - m.b + 16}" text-anchor="middle">${fmt(x, xStep < 1 ? 1 : 0)}</text>`,
    );
  }
  const yStep = niceStep(yMax, 6);
  for (let y = 0; y <= yMax + 1e-9; y += yStep) {
    parts.push(
      `<line x1="${m.l}" y1="${py(y)}" x2="${W - m.r}" y2="${py(y)}" stroke="#eee"/>`,
      `<text x="${m.l - 6}" y="${py(y) + 4}" text-anchor="end">${fmt(y, yStep < 1 ? 1 : 0)}</text>`,
    );
  }
  parts.push(
    `<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="black"/>`,
    `<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="black"/>`,
    `<text x="${(m.l + W - m.r) / 2}" y="${H - 10}" text-anchor="middle">${esc(o.xLabel)}</text>`,
    `<text transform="translate(16 ${(m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`,
  );
  for (const k of o.markers ?? []) {
    parts.push(
      `<line x1="${px(k.x)}" y1="${m.t}" x2="${px(k.x)}" y2="${H - m.b}" stroke="#555" stroke-dasharray="2 3"/>`,
      `<text x="${px(k.x) + 4}" y="${m.t + 12}" fill="#555">${esc(k.label)}</text>`,
    );
  }
  o.series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length];
    const pts = s.points.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(" ");
    parts.push(
      `<polyline fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ""} points="${pts}"/>`,
      `<line x1="${W - m.r + 12}" y1="${m.t + 10 + i * 20}" x2="${W - m.r + 36}" y2="${m.t + 10 + i * 20}" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ""}/>`,
      `<text x="${W - m.r + 42}" y="${m.t + 14 + i * 20}">${esc(s.name)}</text>`,
    );
  });
  parts.push("</svg>");
  return `${parts.join("\n")}\n`;
}

export function writeSvg(name: string, svg: string): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = join(RESULTS_DIR, `${name}.svg`);
  writeFileSync(file, svg);
  console.log(`chart: ${file}`);
  return file;
}

// ---------------------------------------------------------------- processes

/** Peak resident set size (VmHWM) of a process, bytes. */
export function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : Number.NaN;
}

/** Current resident set size (VmRSS), bytes. */
export function rss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : Number.NaN;
}

/** Resets VmHWM to the current RSS (`echo 5 > /proc/PID/clear_refs`); false when not allowed. */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/** User + system CPU time a process has used, ms (from /proc/PID/stat, USER_HZ = 100). */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** CPU time, ms, of a process's children that have ended and been waited for: a node's tools (osslsigncode). */
export function endedChildrenCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[13]) + Number(fields[14])) * 10;
}

/** CPU time, ms, of this process's children that have ended and been waited for (cutime + cstime). */
export function childrenCpuMs(): number {
  const stat = readFileSync("/proc/self/stat", "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[13]) + Number(fields[14])) * 10;
}

/** Minor page faults a process has taken (first touches of fresh pages), from /proc/PID/stat. */
export function minorFaults(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[7]);
}

/** Runs a program to its end; rejects on a non-zero exit. Returns its wall time in ms. */
export async function timed(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<number> {
  const t0 = performance.now();
  await execFileP(cmd, args, { env: env ?? process.env, maxBuffer: 16 * 1024 * 1024 });
  return performance.now() - t0;
}

/** Runs `work` from `concurrency` loops for `ms`; latencies of the calls that ended in time. */
export async function closedLoop(
  concurrency: number,
  ms: number,
  work: (worker: number, n: number) => Promise<void>,
): Promise<{ count: number; latencies: number[]; elapsedMs: number }> {
  const latencies: number[] = [];
  const start = performance.now();
  const end = start + ms;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, w) => {
      for (let n = 0; performance.now() < end; n++) {
        const t0 = performance.now();
        await work(w, n);
        latencies.push(performance.now() - t0);
      }
    }),
  );
  return { count: latencies.length, latencies, elapsedMs: performance.now() - start };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function tempDir(prefix: string, parent = tmpdir()): string {
  return mkdtempSync(join(parent, `signing-bench-${prefix}-`));
}

/**
 * Where the benchmark's signtool clients keep their inputs, signatures and nonce files:
 * `BENCH_CLIENT_DIR`, else tmpfs (/dev/shm) when it has 1 GiB free, else the disk. The clients
 * stand for build machines, whose file writes are not the node's CPU: on a disk each
 * signature's two atomic writes (signature, nonce) take CPU from the cores the node shares,
 * unevenly from run to run (docs/performance.md, Notes).
 */
export const CLIENT_PARENT_DIR = process.env.BENCH_CLIENT_DIR || (roomyTmpfs("/dev/shm") ?? tmpdir());

function roomyTmpfs(dir: string): string | undefined {
  try {
    const fs = statfsSync(dir);
    return fs.bavail * fs.bsize >= 1024 ** 3 ? dir : undefined;
  } catch {
    return undefined;
  }
}

export function clientDir(prefix: string): string {
  return tempDir(prefix, CLIENT_PARENT_DIR);
}

/**
 * µs of CPU (all threads) per small file written with signtool's own `writeFileAtomic`
 * (temp file, rename) into `dir`, alternately onto an existing file and a new one: what
 * signtool does twice per signature.
 */
export async function atomicWriteCpuMicros(dir: string, n = 300): Promise<number> {
  const d = tempDir("fs", dir);
  try {
    const cpu0 = process.cpuUsage();
    for (let i = 0; i < n; i++) {
      await writeFileAtomic(join(d, i % 2 ? "nonce" : `out-${i}.asc`), `${i}.abcdefghijklmnopqrstuv`);
    }
    const cpu = process.cpuUsage(cpu0);
    return (cpu.user + cpu.system) / n;
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- gpg

export interface GpgHome {
  home: string;
  env: NodeJS.ProcessEnv;
  /** `gpg --detach-sign --armor` of `input` into `output`, one gpg process; its wall time, ms. */
  sign(input: string, output: string): Promise<number>;
  /** `gpg --clearsign` of `input` into `output`, one gpg process; its wall time, ms. */
  clearsign(input: string, output: string): Promise<number>;
  verify(signature: string, input: string): boolean;
  /** The home's public keys, armored (what a verifier trusts). */
  publicKey(): string;
  /** The pid of this home's gpg-agent (where a protected key's S2K runs); undefined before it runs. */
  agentPid(): number | undefined;
  close(): void;
}

/** A temp GNUPGHOME that `setup` fills, signing with `signArgs` before the usual ones. */
function makeGpgHome(
  prefix: string,
  setup: (env: NodeJS.ProcessEnv, home: string) => void,
  signArgs: string[],
): GpgHome {
  const home = mkdtempSync(join(tmpdir(), `signing-bench-${prefix}-`));
  const env = { ...process.env, GNUPGHOME: home };
  setup(env, home);
  return {
    home,
    env,
    sign: (input, output) =>
      timed("gpg", ["--batch", "--yes", ...signArgs, "--detach-sign", "--armor", "-o", output, input], env),
    clearsign: (input, output) =>
      timed("gpg", ["--batch", "--yes", ...signArgs, "--clearsign", "-o", output, input], env),
    verify(signature, input) {
      return spawnSync("gpg", ["--batch", "--verify", signature, input], { env }).status === 0;
    },
    publicKey() {
      return spawnSync("gpg", ["--batch", "--armor", "--export"], { env, encoding: "utf8" }).stdout;
    },
    agentPid() {
      const out = spawnSync("gpg-connect-agent", ["--no-autostart", "getinfo pid", "/bye"], {
        env,
        encoding: "utf8",
      });
      const pid = /^D (\d+)/m.exec(out.stdout ?? "")?.[1];
      return pid ? Number(pid) : undefined;
    },
    close() {
      spawnSync("gpgconf", ["--kill", "gpg-agent"], { env });
      rmSync(home, { recursive: true, force: true });
    },
  };
}

function gpgOrThrow(what: string, args: string[], env: NodeJS.ProcessEnv): void {
  const r = spawnSync("gpg", args, { env, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${what} failed: ${r.stderr}`);
}

/**
 * The dev key, passphrase-protected, signing as classic signing scripts shell out to gpg for
 * every file: `--pinentry-mode loopback --passphrase-file`. gpg-agent derives the key from the
 * passphrase (S2K) on every call: most of what one signature costs here.
 */
export function gpgHome(keys: { keyFile: string; passphraseFile: string }): GpgHome {
  const loopback = ["--pinentry-mode", "loopback", "--passphrase-file", keys.passphraseFile];
  return makeGpgHome(
    "gnupg",
    (env, home) => {
      writeFileSync(join(home, "gpg-agent.conf"), "allow-loopback-pinentry\n");
      gpgOrThrow("gpg --import", ["--batch", ...loopback, "--import", keys.keyFile], env);
    },
    loopback,
  );
}

/**
 * A key of the dev key's kind (Ed25519) generated without a passphrase: the fastest gpg signs
 * one file per process, and the baseline the headline ratios use.
 */
export function unprotectedGpgHome(): GpgHome {
  return makeGpgHome(
    "gnupg-unprotected",
    (env) =>
      gpgOrThrow(
        "gpg --quick-gen-key",
        [
          "--batch",
          "--passphrase",
          "",
          "--quick-gen-key",
          "Bench <bench@localhost>",
          "ed25519",
          "sign",
          "never",
        ],
        env,
      ),
    [],
  );
}

// ---------------------------------------------------------------- the cluster

/**
 * SIGNING__… settings for benchmark nodes. Every benchmark client connects from 127.0.0.1,
 * so the per-IP limits (meant for one build machine each) are lifted: 128 clients here stand
 * for 128 build machines. The node-wide limits (maxPending) keep their defaults.
 */
export function benchNodeEnv(extra: Record<string, string> = {}): Record<string, string> {
  const lots = JSON.stringify({ ratePerSecond: 1_000_000, burst: 1_000_000 });
  return {
    SIGNING__log__level: "warn",
    SIGNING__limits__tokenPerIp: lots,
    SIGNING__limits__signPerIp: lots,
    SIGNING__limits__signPerToken: lots,
    // Places held and waited for: 128 clients from one address must all fit in the line.
    SIGNING__signing__maxPendingPerIp: "1000000",
    ...extra,
  };
}

/**
 * signtool's client for one large upload to `url`, its token and nonce files in `dir` (the
 * token file written by the caller): generous timeouts, since a GiB on a busy machine takes
 * minutes.
 */
export function largeFileClient(url: string, dir: string): SigningClient {
  return new SigningClient({
    nodes: [url],
    tokenFile: join(dir, "token"),
    nonceFile: join(dir, "nonce"),
    maxTimeMs: 30 * 60_000,
    requestTimeoutMs: 10 * 60_000,
    pollWaitSeconds: 60,
  });
}

/** Issues `n` tokens for 127.0.0.1 from `url` (a few at a time: each is an scrypt check). */
export async function issueTokens(url: string, auth: string, n: number, duration = 3600): Promise<string[]> {
  const out: string[] = [];
  const one = async (): Promise<string> => {
    const res = await fetch(`${url}/token`, {
      method: "POST",
      headers: { Authorization: auth, "Content-Type": "application/x-www-form-urlencoded" },
      body: `slave_ip=127.0.0.1&duration=${duration}`,
    });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`POST /token: ${res.status} ${text}`);
    return text;
  };
  while (out.length < n) {
    const batch = Math.min(8, n - out.length);
    out.push(...(await Promise.all(Array.from({ length: batch }, one))));
  }
  return out;
}

export function basicAuth(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
}

/** A 1 KiB checksums file: lines of "<sha256>  <name>" padded to exactly 1024 bytes. */
export function checksumsFile(seed: string): Buffer {
  const lines: string[] = [];
  let i = 0;
  while (lines.join("").length < 1024) {
    const h = randomBytes(32).toString("hex");
    lines.push(`${h}  build-${seed}-${i++}.tar.xz\n`);
  }
  return Buffer.from(lines.join("").slice(0, 1024));
}

/** What premadeInputs makes: each file's content from its seed, its extension, the rate to provide for. */
export interface InputKind {
  /** Default: a 1 KiB checksums file (checksumsFile). */
  content?: (seed: string) => Buffer;
  /** The files' extension, with its dot (default ".txt"): Authenticode tells a script by it. */
  ext?: string;
  /** Signatures per second to make files for (default 2000). */
  perSecond?: number;
}

/**
 * Input files for `clients` closed-loop clients, made before the clock starts (enough for
 * `seconds` at ~2000 signatures/s): a build's artifacts exist before it signs them, and making
 * them must not take the cores the node shares. `file(i, n)` makes more if a client runs out.
 */
export function premadeInputs(
  dir: string,
  prefix: string,
  clients: number,
  seconds: number,
  kind: InputKind = {},
): (client: number, n: number) => string {
  const { content = checksumsFile, ext = ".txt", perSecond = 2000 } = kind;
  const premade = Math.ceil((perSecond * seconds) / clients);
  const path = (i: number, n: number) => join(dir, `${prefix}-c${i}-${n}${ext}`);
  const make = (i: number, n: number) => writeFileSync(path(i, n), content(`${prefix}-${i}-${n}`));
  for (let i = 0; i < clients; i++) for (let n = 0; n < premade; n++) make(i, n);
  return (i, n) => {
    if (n >= premade) make(i, n);
    return path(i, n);
  };
}

/**
 * Signatures each fresh node signs, untimed, before a benchmark measures it. V8 optimises a
 * node's code over its first few thousand requests, and its CPU per signature falls severalfold
 * meanwhile (docs/performance.md, Notes). Nodes run for days; the benchmarks measure them warm.
 */
export const WARM_SIGNATURES_PER_NODE = Number(process.env.BENCH_WARM_SIGNATURES ?? 4000);

export interface WarmUp {
  signatures: number;
  /** Signatures that failed during the warm-up (the loops go on, as the measured ones do). */
  failed: number;
  seconds: number;
  /** Signatures/s in the warm-up's first and last whole second: what a fresh node costs. */
  firstSecondPerSec: number;
  lastSecondPerSec: number;
}

/** Signs from `workers` closed loops until `count` signatures are done (or `maxMs` passes). */
export async function warmUp(
  workers: number,
  count: number,
  sign: (worker: number, n: number) => Promise<unknown>,
  maxMs = 120_000,
): Promise<WarmUp> {
  const ends: number[] = [];
  let failed = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      for (let n = 0; ends.length < count && performance.now() - start < maxMs; n++) {
        try {
          await sign(w, n);
          ends.push(performance.now());
        } catch {
          failed++;
        }
      }
    }),
  );
  return { ...warmUpFigures(ends, start), failed };
}

/** The figures of a warm-up whose signatures ended at `ends` (performance.now() or epoch ms). */
export function warmUpFigures(ends: readonly number[], start: number, failed = 0): WarmUp {
  const last = ends.reduce((a, b) => Math.max(a, b), start);
  const inSecond = (lo: number) => ends.filter((e) => e >= lo && e < lo + 1000).length;
  return {
    signatures: ends.length,
    failed,
    seconds: (last - start) / 1000,
    firstSecondPerSec: inSecond(start),
    lastSecondPerSec: inSecond(last - 1000 + 1e-6),
  };
}

/** Exits non-zero on an unhandled failure, after printing it: run-all reports the crash. */
export function main(fn: () => Promise<void>): void {
  fn().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
      process.exit(1);
    },
  );
}
