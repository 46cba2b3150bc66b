import assert from "node:assert/strict";
import { spawn } from "node:child_process";

export const SIGNTOOL = new URL("../../src/bin/signtool.js", import.meta.url).pathname;

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Wall time of the run, ms. */
  ms: number;
}

/** Runs signtool in `cwd`; `onLine` sees each stderr line as it comes. */
export function signtool(cwd: string, args: string[], onLine?: (line: string) => void): Promise<Run> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [SIGNTOOL, ...args], { cwd });
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
