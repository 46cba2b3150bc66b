import { spawn } from "node:child_process";

const ADMIN = new URL("../../src/bin/signing-admin.js", import.meta.url).pathname;

/** How a CLI run ended and what it printed. */
export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Where and how signing-admin runs: the test's env on top of ours, stdin, a time limit. */
export interface AdminRunOptions {
  cwd: string;
  env?: NodeJS.ProcessEnv;
  input?: string;
  timeoutMs?: number;
}

/**
 * The real signing-admin as a subprocess. The outer environment's SIGNING_ADMIN_CLUSTER and
 * SIGNING_ADMIN_ISSUER_PASSWORD are dropped (a developer's shell must not steer a test) unless
 * `env` gives them; a run past `timeoutMs` is killed.
 */
export function runAdmin(args: string[], o: AdminRunOptions): Promise<Run> {
  return new Promise((resolve) => {
    const base = { ...process.env };
    delete base.SIGNING_ADMIN_CLUSTER;
    delete base.SIGNING_ADMIN_ISSUER_PASSWORD;
    const child = spawn(process.execPath, [ADMIN, ...args], { cwd: o.cwd, env: { ...base, ...o.env } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d;
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), o.timeoutMs ?? 60_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(o.input ?? "");
  });
}
