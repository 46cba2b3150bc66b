import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";

/**
 * Ports this machine's test and benchmark processes were given, one file each: a port whose
 * Redis a test killed must stay dead while the test waits for Sentinel to notice, and with two
 * test files at a time the kernel once gave the dead primary's port to another file's Redis,
 * which answered for it (no failover, a hung suite). A file outlives a crashed run by an hour.
 */
const RESERVED_PORTS = join(tmpdir(), "signing-ports");
const RESERVATION_STALE_MS = 3_600_000;
const reservedHere: string[] = [];

function kernelPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

function reserve(port: number): boolean {
  const file = join(RESERVED_PORTS, String(port));
  try {
    writeFileSync(file, String(process.pid), { flag: "wx" });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    // Its owner may be removing it right now: then it is simply not ours to take yet.
    const age = Date.now() - (statSync(file, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
    if (age < RESERVATION_STALE_MS) return false;
    writeFileSync(file, String(process.pid));
  }
  reservedHere.push(file);
  return true;
}

/** A free loopback TCP port no other process of this machine's runs was given. */
export async function freePort(): Promise<number> {
  mkdirSync(RESERVED_PORTS, { recursive: true });
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = await kernelPort();
    if (reserve(port)) return port;
  }
  throw new Error(`no unreserved loopback port in 100 tries (see ${RESERVED_PORTS})`);
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = new Socket();
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
    s.connect(port, "127.0.0.1");
  });
}

async function waitFor(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * redis-server (like npm start's Alertmanager) cannot watch its parent, and the exit hook below
 * does not run when its owner is SIGKILLed. util-linux's setpriv asks the kernel to SIGKILL it
 * when its parent dies (PR_SET_PDEATHSIG, kept across the exec into the program, so the pid
 * stays the program's own for kill and pause). The kernel's "parent" is the thread that spawned
 * it: start it from the main thread, never from a worker that may end first. Linux only:
 * without setpriv, it is started plainly and only an owner that exits normally stops it.
 */
let parentDeathSignal: boolean | undefined;
export function killedWithParent(program: string, args: string[]): [string, string[]] {
  parentDeathSignal ??= spawnSync("setpriv", ["--pdeathsig", "KILL", "true"]).status === 0;
  return parentDeathSignal ? ["setpriv", ["--pdeathsig", "KILL", "--", program, ...args]] : [program, args];
}
const redisCommand = (args: string[]) => killedWithParent("redis-server", args);

const running = new Set<RedisServer>();
// Never leave a redis-server behind, even when a test throws or the runner exits early.
process.on("exit", () => {
  for (const r of running) r.proc?.kill("SIGKILL");
  for (const file of reservedHere) rmSync(file, { force: true });
});

/**
 * A redis-server owned by this process (the local cluster, a test, a benchmark): its own port
 * and temp dir, no persistence, so that its owner can restart it empty, kill it or pause it.
 */
export class RedisServer {
  proc: ChildProcess | undefined;
  readonly dir: string;

  private constructor(
    readonly port: number,
    private readonly extraArgs: string[],
    /** A Sentinel runs from a config file it rewrites: `redis-server FILE --sentinel`. */
    private readonly sentinelConf?: string,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), "signing-redis-"));
  }

  /**
   * A Sentinel watching the primary at `primaryPort` as `name`, declaring it down after
   * `downAfterMs` without answers (quorum 2 of 3 in the rigs that use it).
   */
  static async startSentinel(primaryPort: number, name: string, downAfterMs = 1000): Promise<RedisServer> {
    const port = await freePort();
    const conf = [
      `port ${port}`,
      "bind 127.0.0.1",
      `sentinel monitor ${name} 127.0.0.1 ${primaryPort} 2`,
      `sentinel down-after-milliseconds ${name} ${downAfterMs}`,
      `sentinel failover-timeout ${name} 5000`,
      `sentinel parallel-syncs ${name} 1`,
    ].join("\n");
    const r = new RedisServer(port, [], conf);
    running.add(r);
    await r.launch();
    return r;
  }

  static async start(extraArgs: string[] = [], port?: number): Promise<RedisServer> {
    const r = new RedisServer(port ?? (await freePort()), extraArgs);
    running.add(r);
    await r.launch();
    return r;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  private async launch(): Promise<void> {
    if (this.sentinelConf !== undefined) {
      const file = join(this.dir, "sentinel.conf");
      writeFileSync(file, `${this.sentinelConf}\n`);
      return this.spawnAndWait([file, "--sentinel", "--loglevel", "warning"]);
    }
    const args = ["--port", String(this.port), "--bind", "127.0.0.1", "--dir", this.dir];
    args.push(
      "--save",
      "",
      "--appendonly",
      "no",
      "--daemonize",
      "no",
      "--loglevel",
      "warning",
      // A replica syncs at once, not after the 5 s Redis waits for more replicas to share it.
      "--repl-diskless-sync-delay",
      "0",
      ...this.extraArgs,
    );
    return this.spawnAndWait(args);
  }

  private async spawnAndWait(args: string[]): Promise<void> {
    const [program, argv] = redisCommand(args);
    const proc = spawn(program, argv, { stdio: ["ignore", "ignore", "pipe"] });
    this.proc = proc;
    let exited = false;
    proc.once("exit", () => {
      exited = true;
    });
    await waitFor(
      async () => exited || (await canConnect(this.port)),
      10_000,
      `redis-server on ${this.port}`,
    );
    if (exited) throw new Error(`redis-server on port ${this.port} exited at start-up`);
  }

  /**
   * SIGKILL (default): without persistence the data is gone. SIGTERM: Redis saves and flushes
   * what persistence it has before exiting. The port is closed until restart().
   */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once("exit", r));
    proc.kill("SIGCONT");
    proc.kill(signal);
    await exited;
    this.proc = undefined;
  }

  /** Same port, new process (new run_id); empty unless it was started with persistence. */
  async restart(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    await this.kill(signal);
    await this.launch();
  }

  pause(): void {
    this.proc?.kill("SIGSTOP");
  }

  resume(): void {
    this.proc?.kill("SIGCONT");
  }

  async stop(): Promise<void> {
    this.resume();
    await this.kill();
    running.delete(this);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Resolves once the primary at `primaryUrl` has a replica that is online; throws after ~10 s. */
export async function waitForReplica(primaryUrl: string): Promise<void> {
  const client = new Redis(primaryUrl);
  try {
    for (let i = 0; i < 100; i++) {
      const info = await client.info("replication");
      if (/connected_slaves:1/.test(info) && /state=online/.test(info)) return;
      await sleep(100);
    }
    throw new Error("the replica never caught up with the primary");
  } finally {
    client.disconnect();
  }
}

/** A token for 127.0.0.1 from `url`, with HTTP Basic `auth`. */
export async function fetchToken(url: string, auth: string, duration = 600): Promise<string> {
  const res = await fetch(`${url}/token`, {
    method: "POST",
    headers: { Authorization: auth, "Content-Type": "application/x-www-form-urlencoded" },
    body: `slave_ip=127.0.0.1&duration=${duration}`,
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`POST /token: ${res.status} ${text}`);
  return text;
}
