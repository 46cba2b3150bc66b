/**
 * Runs an external signing tool the way DESIGN.md §6 asks: no shell (arguments are passed as
 * they are, never parsed), a timeout that kills it, a small fixed environment, and a private
 * temporary directory that is removed whatever happens.
 */

import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** How one run of a tool ended. */
export interface ToolResult {
  /** The exit code, or null when a signal ended it. */
  exitCode: number | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
}

/** Options of one run of a tool. */
export interface RunToolOptions {
  /** The working directory (the private dir of `withPrivateDir`). */
  cwd: string;
  /** Killed (SIGKILL) after this long. */
  timeoutMs: number;
  /** Written to its stdin, then closed (a passphrase: never on the command line, where `ps` shows it). */
  stdin?: string;
  /** Variables added to the fixed environment (a PKCS#11 module's configuration file, say). */
  env?: Record<string, string>;
}

/** Output kept of each stream: enough for a diagnosis in the log, bounded whatever the tool prints. */
const MAX_OUTPUT_CHARS = 16 * 1024;

function collect(chunks: string[], chunk: Buffer): void {
  const kept = chunks.reduce((n, c) => n + c.length, 0);
  if (kept < MAX_OUTPUT_CHARS) chunks.push(chunk.toString("utf8").slice(0, MAX_OUTPUT_CHARS - kept));
}

/**
 * Runs `command` with `args`, no shell. Rejects only when it cannot be started (ENOENT: not
 * installed); a failure of the tool itself is in the result.
 */
export function runTool(
  command: string,
  args: readonly string[],
  options: RunToolOptions,
): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    // LC_ALL=C: the messages the callers look for are the untranslated ones.
    const env = { ...options.env, PATH: process.env.PATH ?? "/usr/bin:/bin", LC_ALL: "C" };
    const child = spawn(command, args, {
      cwd: options.cwd,
      env,
      shell: false,
      stdio: ["pipe", "pipe", "pipe"],
    });
    const stdout: string[] = [];
    const stderr: string[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, options.timeoutMs);
    child.stdout.on("data", (chunk: Buffer) => collect(stdout, chunk));
    child.stderr.on("data", (chunk: Buffer) => collect(stderr, chunk));
    // A tool that exits without reading its stdin must not fail the run with EPIPE.
    child.stdin.on("error", () => {});
    child.stdin.end(options.stdin ?? "");
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (exitCode) => {
      clearTimeout(timer);
      resolve({ exitCode, timedOut, stdout: stdout.join(""), stderr: stderr.join("") });
    });
  });
}

/** Runs `fn` in a fresh directory only this user can enter (mkdtemp makes it 0700), removed afterwards. */
export async function withPrivateDir<T>(
  prefix: string,
  parent: string | undefined,
  fn: (dir: string) => Promise<T>,
): Promise<T> {
  const dir = await mkdtemp(join(parent ?? tmpdir(), prefix));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
