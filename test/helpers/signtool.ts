import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const SIGNTOOL = new URL("../../src/bin/signtool.js", import.meta.url).pathname;

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Wall time of the run, ms. */
  ms: number;
}

/** How the signtool process itself is started: node's own options, and environment added. */
export interface SigntoolProcess {
  nodeArgs?: string[];
  env?: Record<string, string>;
}

/** Runs signtool in `cwd`; `onLine` sees each stderr line as it comes. */
export function signtool(
  cwd: string,
  args: string[],
  onLine?: (line: string) => void,
  how: SigntoolProcess = {},
): Promise<Run> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...(how.nodeArgs ?? []), SIGNTOOL, ...args], {
      cwd,
      env: { ...process.env, ...how.env },
    });
    let stdout = "";
    let stderr = "";
    let partial = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d;
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d;
      partial += d;
      const lines = partial.split("\n");
      partial = lines.pop() ?? "";
      for (const l of lines) onLine?.(l);
    });
    child.on("close", (code) => resolve({ code, stdout, stderr, ms: Date.now() - started }));
  });
}

/** `-H host:port` for each node URL. */
export const hosts = (urls: string[]) => urls.flatMap((u) => ["-H", u.replace(/^https?:\/\//, "")]);

/** `signtool sign` with the token and nonce files named `token` and `nonce` (in the run's cwd), every node, then `args`. */
export const signCommand = (urls: string[], args: string[]) => [
  "sign",
  "-t",
  "token",
  "-n",
  "nonce",
  ...hosts(urls),
  ...args,
];

/** `signtool token` for 127.0.0.1, into `file`. */
export async function fetchToken(
  cwd: string,
  urls: string[],
  issuer: { user: string; passwordFile: string },
  file: string,
  extra: string[] = [],
): Promise<void> {
  const r = await signtool(cwd, [
    "token",
    ...extra,
    ...hosts(urls),
    "--user",
    issuer.user,
    "--password-file",
    issuer.passwordFile,
    "--slave-ip",
    "127.0.0.1",
    "--duration",
    "1h",
    "-o",
    file,
  ]);
  assert.equal(r.code, 0, r.stderr);
}

const REPORT_PEAK_RSS = new URL("./report-peak-rss.js", import.meta.url).href;

/** Runs signtool like `signtool`, and reads its process's peak resident set (bytes) over the whole run. */
export async function signtoolPeakRss(cwd: string, args: string[]): Promise<Run & { peakRssBytes: number }> {
  const dir = mkdtempSync(join(tmpdir(), "signtool-rss-"));
  try {
    const report = join(dir, "peak-rss");
    const run = await signtool(cwd, args, undefined, {
      nodeArgs: ["--import", REPORT_PEAK_RSS],
      env: { PEAK_RSS_FILE: report },
    });
    return { ...run, peakRssBytes: Number(readFileSync(report, "utf8")) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
