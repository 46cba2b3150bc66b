import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { get as httpsGet } from "node:https";
import { createServer } from "node:net";
import { resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { SigningClusterError } from "../src/errors.js";
import { isListeningMessage, PARENT_LINK_ENV } from "../src/process/parent-link.js";

const root = resolve(fileURLToPath(import.meta.url), "../../..");

/**
 * How nodes are run (docs/operations.md, "Running a node"): glibc keeps up to 256 MiB of
 * freed heap instead of handing it back to the kernel after each garbage collection. Node's
 * HTTP parser copies every upload into fresh 64 KiB buffers, freed many at a time; given
 * back, they come back as page faults, which are slow on a VM (bench/machine). A GLIBC_TUNABLES
 * in the environment wins (empty: glibc's defaults).
 */
export const NODE_GLIBC_TUNABLES =
  "glibc.malloc.trim_threshold=268435456:glibc.malloc.mmap_threshold=33554432";

export interface NodeProcessOptions {
  configFile: string;
  /** Which program: a signing node (default) or the monitor. */
  program?: "signing-node" | "signing-monitor";
  /**
   * The program's file, when not the checkout's dist/ entry: an installed package's bin
   * (test/e2e/package-install.test.ts runs the node from an `npm install -g` prefix).
   */
  executable?: string;
  port: number;
  id: string;
  /** Node's JSON log lines go here (appended); default: discarded. */
  logFile?: string;
  /** More SIGNING__… overrides. */
  env?: Record<string, string>;
  /** The node serves https (its `tls` section): its URL says so, and readiness is asked over TLS. */
  https?: boolean;
  /** The built tree whose dist/ to run (default: this one): a benchmark compares two builds. */
  root?: string;
}

/** Another process listens on a port a node or monitor was to listen on. */
export class PortInUseError extends SigningClusterError<"PORT_IN_USE"> {
  constructor(readonly port: number) {
    super("PORT_IN_USE", `port ${port} is already in use`);
  }
}

/** Throws PortInUseError when something listens on `host:port`, where a node would bind. */
export function assertPortFree(port: number, host = "127.0.0.1"): Promise<void> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", (err: NodeJS.ErrnoException) =>
      reject(err.code === "EADDRINUSE" ? new PortInUseError(port) : err),
    );
    probe.listen(port, host, () => probe.close(() => resolve()));
  });
}

/**
 * A signing node or monitor as a real process (`--config FILE`), so it can be SIGKILLed.
 * Linked to this process (src/process/parent-link.ts): it stops when this process dies, and it
 * says when it listens, so ready() never takes another process on its port for it.
 */
export class NodeProcess {
  readonly url: string;
  readonly child: ChildProcess;
  stderr = "";
  /** The child has told us it listens on its port. */
  private listening = false;

  constructor(readonly opts: NodeProcessOptions) {
    this.url = `${opts.https ? "https" : "http"}://127.0.0.1:${opts.port}`;
    const monitor = opts.program === "signing-monitor";
    const entry =
      opts.executable ??
      resolve(opts.root ?? root, monitor ? "dist/monitor/bin.js" : "dist/src/bin/signing-node.js");
    const identity = monitor
      ? { SIGNING_MONITOR__monitor__port: String(opts.port), SIGNING_MONITOR__monitor__id: opts.id }
      : { SIGNING__node__port: String(opts.port), SIGNING__node__id: opts.id };
    // The child writes its log file itself: its last lines land there even after we died.
    const log = opts.logFile ? openSync(opts.logFile, "a") : "ignore";
    try {
      this.child = spawn(process.execPath, [entry, "--config", opts.configFile], {
        env: {
          GLIBC_TUNABLES: NODE_GLIBC_TUNABLES,
          ...process.env,
          ...identity,
          ...opts.env,
          [PARENT_LINK_ENV]: "1",
        },
        stdio: ["ignore", log, "pipe", "ipc"],
      });
    } finally {
      if (typeof log === "number") closeSync(log);
    }
    this.child.on("message", (m) => {
      if (isListeningMessage(m)) this.listening = true;
    });
    this.child.stderr?.on("data", (d: Buffer) => {
      this.stderr += d;
    });
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /**
   * Resolves once this child listens and its /readyz answers 200. Throws PortInUseError when
   * it exited because another process holds its port.
   */
  async ready(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.running) throw this.exitError();
      // Before the child says it listens, whoever answers on the port is someone else.
      if (this.listening && (await this.answersReady())) return;
      await sleep(50);
    }
    throw new Error(`node ${this.opts.id} at ${this.url} not ready after ${timeoutMs} ms`);
  }

  private async answersReady(): Promise<boolean> {
    if (this.opts.https) return httpsReady(`${this.url}/readyz`);
    try {
      return (await fetch(`${this.url}/readyz`)).ok;
    } catch {
      return false; // not serving yet
    }
  }

  private exitError(): Error {
    if (/\bEADDRINUSE\b/.test(this.stderr)) return new PortInUseError(this.opts.port);
    const how = this.child.exitCode ?? this.child.signalCode;
    return new Error(`node ${this.opts.id} exited (${how}): ${this.stderr}`);
  }

  /** Sends `signal` and waits for the process to be gone. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    if (!this.running) return;
    const exited = new Promise((r) => this.child.once("exit", r));
    this.child.kill(signal);
    await exited;
  }
}

/** GET over TLS without checking the certificate: only whether our own child is ready. */
function httpsReady(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = httpsGet(url, { rejectUnauthorized: false, timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("error", () => resolve(false));
    req.on("timeout", () => req.destroy());
  });
}
