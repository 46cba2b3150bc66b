import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { NodeProcess, type NodeProcessOptions } from "./node-process.js";
import { freePort, type RedisServer } from "./redis-server.js";

/**
 * The local cluster's control (`npm start`, used by scripts/local-ctl.ts): which processes it
 * runs, and restart, stop or start one of them, so that an on-call engineer following a
 * runbook, or a drill, restarts "node 1" or the monitor with its port, id and log file as npm
 * start gave them, still linked to the cluster (it dies with it), without reading
 * /proc/<pid>/environ. HTTP on loopback, on a port of its own recorded in cluster.json
 * (`control.url`), each request carrying the secret of `control.tokenFile` (mode 0600, like the
 * rest of the state dir): another user of the machine cannot stop our processes.
 */

export type ProcessKind = "node" | "monitor" | "redis";
export type ControlAction = "restart" | "stop" | "start";

/** One process of the local cluster, as cluster.json (`processes`) and `local-ctl ps` show it. */
export interface ProcessInfo {
  id: string;
  kind: ProcessKind;
  url: string;
  port: number;
  pid: number | null;
  running: boolean;
  /** Its log file (JSON lines), or null (redis-server's warnings go to npm start's stderr). */
  log: string | null;
}

/** A process the control can stop and start again, on the same port, under the same id. */
export interface ManagedProcess {
  readonly id: string;
  readonly kind: ProcessKind;
  info(): ProcessInfo;
  /** Starts it if it is not running; resolves once it is ready. */
  start(): Promise<void>;
  /** SIGTERM (a node drains its jobs first), or SIGKILL (as a crash would); waits for the exit. */
  stop(kill: boolean): Promise<void>;
}

/**
 * A signing node or the monitor: a new NodeProcess (same options: port, id, config, log file)
 * each time it starts, linked to this process like the first. `onExit` hears of every exit,
 * with whether the control asked for it.
 */
export class ManagedNode implements ManagedProcess {
  readonly id: string;
  readonly kind: ProcessKind;
  current: NodeProcess;
  private stopping = false;

  constructor(
    private readonly opts: NodeProcessOptions,
    private readonly onExit: (m: ManagedNode, how: string, expected: boolean) => void,
  ) {
    this.id = opts.id;
    this.kind = opts.program === "signing-monitor" ? "monitor" : "node";
    this.current = this.spawn();
  }

  private spawn(): NodeProcess {
    const p = new NodeProcess(this.opts);
    p.child.on("exit", (code, signal) => this.onExit(this, String(code ?? signal), this.stopping));
    return p;
  }

  info(): ProcessInfo {
    return {
      id: this.id,
      kind: this.kind,
      url: this.current.url,
      port: this.opts.port,
      pid: this.current.running ? (this.current.child.pid ?? null) : null,
      running: this.current.running,
      log: this.opts.logFile ?? null,
    };
  }

  async start(): Promise<void> {
    if (!this.current.running) this.current = this.spawn();
    await this.current.ready();
  }

  async stop(kill: boolean): Promise<void> {
    this.stopping = true;
    try {
      await this.current.stop(kill ? "SIGKILL" : "SIGTERM");
    } finally {
      this.stopping = false;
    }
  }
}

/** npm start's own redis-server: same port, new process; it has no persistence, so a new one is empty. */
export class ManagedRedis implements ManagedProcess {
  readonly id = "redis";
  readonly kind = "redis" as const;

  constructor(private readonly redis: RedisServer) {}

  info(): ProcessInfo {
    const proc = this.redis.proc;
    const running = proc !== undefined && proc.exitCode === null && proc.signalCode === null;
    return {
      id: this.id,
      kind: this.kind,
      url: this.redis.url,
      port: this.redis.port,
      pid: running ? (proc?.pid ?? null) : null,
      running,
      log: null,
    };
  }

  async start(): Promise<void> {
    if (!this.info().running) await this.redis.restart();
  }

  stop(kill: boolean): Promise<void> {
    return this.redis.kill(kill ? "SIGKILL" : "SIGTERM");
  }
}

const ACTIONS: readonly ControlAction[] = ["restart", "stop", "start"];

/** The answer of the control server: the processes, or what went wrong. */
export interface ControlAnswer {
  processes?: ProcessInfo[];
  process?: ProcessInfo;
  error?: string;
  /** What the action did, for the CLI to print. */
  done?: string;
}

/**
 * Serves the control on a free loopback port. `changed` is called after every action (and the
 * caller also calls it when a process exits by itself), to rewrite cluster.json.
 */
export class ControlServer {
  private readonly busy = new Map<string, Promise<unknown>>();
  private closed = false;

  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(
    processes: () => ManagedProcess[],
    tokenFile: string,
    changed: () => void,
  ): Promise<ControlServer> {
    const token = randomBytes(24).toString("base64url");
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    let self: ControlServer | undefined;
    const server = createServer((req, res) => {
      const answer = (status: number, body: ControlAnswer) => {
        res.writeHead(status, { "Content-Type": "application/json" });
        res.end(`${JSON.stringify(body)}\n`);
      };
      if (req.headers.authorization !== `Bearer ${token}`)
        return answer(401, { error: "wrong control token" });
      const url = new URL(req.url ?? "/", "http://local");
      if (req.method === "GET" && url.pathname === "/processes")
        return answer(200, { processes: processes().map((p) => p.info()) });
      const m = /^\/processes\/([^/]+)\/([a-z]+)$/.exec(url.pathname);
      if (req.method !== "POST" || !m)
        return answer(404, { error: `no such request: ${req.method} ${url.pathname}` });
      const [, id, action] = m as unknown as [string, string, ControlAction];
      const target = processes().find((p) => p.id === id);
      if (!target)
        return answer(404, {
          error: `no process ${id} in this cluster (there are ${processes()
            .map((p) => p.id)
            .join(", ")})`,
        });
      if (!ACTIONS.includes(action))
        return answer(404, { error: `no action ${action} (${ACTIONS.join(", ")})` });
      if (self?.closed) return answer(503, { error: "the cluster is stopping" });
      const kill = url.searchParams.get("kill") === "1";
      void self?.act(target, action, kill, changed).then(
        (done) => answer(200, { process: target.info(), done }),
        (err: Error) => answer(500, { process: target.info(), error: err.message }),
      );
    });
    const port = await freePort();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", resolve);
    });
    self = new ControlServer(server, `http://127.0.0.1:${port}`);
    return self;
  }

  /** One action at a time per process: a restart during a stop waits for the stop. */
  private act(p: ManagedProcess, action: ControlAction, kill: boolean, changed: () => void): Promise<string> {
    const run = async (): Promise<string> => {
      const before = p.info();
      const started = Date.now();
      try {
        if (action === "stop" || action === "restart") await p.stop(kill);
        if (action === "stop")
          return before.running ? `stopped (${kill ? "SIGKILL" : "SIGTERM"})` : "was not running";
        if (action === "start" && before.running) return "already running";
        await p.start();
        return `${action === "restart" ? "restarted" : "started"}, ready in ${Date.now() - started} ms`;
      } finally {
        changed();
      }
    };
    const next = (this.busy.get(p.id) ?? Promise.resolve()).catch(() => {}).then(run);
    this.busy.set(p.id, next);
    return next;
  }

  /** Refuses further actions and waits for those under way. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.busy.values()]);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** cluster.json's `control` entry. */
export interface ControlEntry {
  url: string;
  tokenFile: string;
}

/** Asks the control of a running local cluster; throws with a one-line reason. */
export async function askControl(
  control: ControlEntry,
  method: "GET" | "POST",
  path: string,
  timeoutMs = 120_000,
): Promise<{ status: number; body: ControlAnswer }> {
  const token = readFileSync(control.tokenFile, "utf8").trim();
  let res: Response;
  try {
    res = await fetch(`${control.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message;
    throw new Error(
      `the local cluster does not answer at ${control.url} (${cause}): is npm start still running?`,
    );
  }
  return { status: res.status, body: (await res.json()) as ControlAnswer };
}
