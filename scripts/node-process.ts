import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

const root = resolve(fileURLToPath(import.meta.url), "../../..");

/**
 * How nodes are run (README, "Running a node in production"): glibc keeps up to 256 MiB of
 * freed heap instead of handing it back to the kernel after each garbage collection. Node's
 * HTTP parser copies every upload into fresh 64 KiB buffers, freed 64 MiB at a time; given
 * back, they come back as page faults, ~12 µs each on a VM (bench/machine). A GLIBC_TUNABLES
 * in the environment wins (empty: glibc's defaults).
 */
export const NODE_GLIBC_TUNABLES =
  "glibc.malloc.trim_threshold=268435456:glibc.malloc.mmap_threshold=33554432";

export interface NodeProcessOptions {
  configFile: string;
  /** Which program: a signing node (default) or the monitor. */
  program?: "signing-node" | "signing-monitor";
  port: number;
  id: string;
  /** Node's JSON log lines go here (appended); default: discarded. */
  logFile?: string;
  /** More SIGNING__… overrides. */
  env?: Record<string, string>;
}

/** A signing node or monitor as a real process (`--config FILE`), so it can be SIGKILLed. */
export class NodeProcess {
  readonly url: string;
  readonly child: ChildProcess;
  stderr = "";

  constructor(readonly opts: NodeProcessOptions) {
    this.url = `http://127.0.0.1:${opts.port}`;
    const monitor = opts.program === "signing-monitor";
    const entry = monitor ? "dist/monitor/bin.js" : "dist/src/bin/signing-node.js";
    const identity = monitor
      ? { SIGNING_MONITOR__monitor__port: String(opts.port), SIGNING_MONITOR__monitor__id: opts.id }
      : { SIGNING__node__port: String(opts.port), SIGNING__node__id: opts.id };
    this.child = spawn(process.execPath, [resolve(root, entry), "--config", opts.configFile], {
      env: { GLIBC_TUNABLES: NODE_GLIBC_TUNABLES, ...process.env, ...identity, ...opts.env },
      stdio: ["ignore", opts.logFile ? "pipe" : "ignore", "pipe"],
    });
    if (opts.logFile) this.child.stdout?.pipe(createWriteStream(opts.logFile, { flags: "a" }));
    this.child.stderr?.on("data", (d: Buffer) => {
      this.stderr += d;
    });
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  async ready(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.running)
        throw new Error(
          `node ${this.opts.id} exited (${this.child.exitCode ?? this.child.signalCode}): ${this.stderr}`,
        );
      try {
        if ((await fetch(`${this.url}/readyz`)).ok) return;
      } catch {
        // not listening yet
      }
      await sleep(50);
    }
    throw new Error(`node ${this.opts.id} at ${this.url} not ready after ${timeoutMs} ms`);
  }

  /** Sends `signal` and waits for the process to be gone. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    if (!this.running) return;
    const exited = new Promise((r) => this.child.once("exit", r));
    this.child.kill(signal);
    await exited;
  }
}
