import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import type { SigningClientOptions } from "../src/client/signing-client.js";
import { type DevState, prepareDevState, writeMonitorConfig } from "./dev-state.js";
import { NodeProcess } from "./node-process.js";
import { fetchToken, freePort, RedisServer, waitForReplica } from "./redis-server.js";
import { type LoadResult, type LoadWork, p99, SigningLoad } from "./signing-load.js";

export const MASTER_NAME = "signing";

export interface ChaosOptions {
  /** Primary + replica + 3 Sentinels instead of one standalone Redis. */
  sentinel?: boolean;
  nodes?: number;
  clients?: number;
  /** More SIGNING__… settings for every node. */
  nodeEnv?: Record<string, string>;
  /** Sign Authenticode too (a dev CA made with openssl; osslsigncode must be installed). */
  authenticode?: boolean;
}

/** What a scenario's clients sign, and each client's own options (its events, where it starts). */
export interface ScenarioWork extends LoadWork {
  client?: (i: number) => Partial<SigningClientOptions>;
}

export interface ScenarioReport {
  scenario: string;
  attempted: number;
  signed: number;
  failed: number;
  retried: number;
  p99DuringFaultMs: number;
  faultMs: number;
  errors: string[];
  /** Every file the clients wrote (signatures, or whole signed files). */
  outputs: string[];
}

/**
 * A whole cluster on loopback, for fault injection: Redis (standalone, or a primary, a replica
 * and three Sentinels), N signing nodes and the monitor as real processes, and signtool clients
 * signing continuously. Reusable by benchmarks.
 */
export class ChaosRig {
  nodes: NodeProcess[] = [];
  monitor: NodeProcess | undefined;
  replica: RedisServer | undefined;
  sentinels: RedisServer[] = [];
  private monitorPort = 0;
  private monitorConfigFile = "";

  private constructor(
    readonly opts: ChaosOptions,
    readonly dir: string,
    public primary: RedisServer,
    readonly state: DevState,
  ) {}

  static async start(opts: ChaosOptions = {}): Promise<ChaosRig> {
    const dir = mkdtempSync(join(tmpdir(), "signing-chaos-"));
    const primary = await RedisServer.start();
    const state = await prepareDevState(join(dir, "state"), primary.url, "file", {
      authenticode: opts.authenticode ?? false,
    });
    const rig = new ChaosRig(opts, dir, primary, state);
    try {
      if (opts.sentinel) {
        rig.replica = await RedisServer.start(["--replicaof", "127.0.0.1", String(primary.port)]);
        rig.sentinels = await Promise.all(
          [0, 1, 2].map(() => RedisServer.startSentinel(primary.port, MASTER_NAME)),
        );
        await waitForReplica(primary.url);
      }
      for (let i = 0; i < (opts.nodes ?? 3); i++) rig.nodes.push(rig.spawnNode(i, await freePort()));
      await Promise.all(rig.nodes.map((n) => n.ready()));
      rig.monitorPort = await freePort();
      rig.monitorConfigFile = writeMonitorConfig(
        join(dir, "state"),
        primary.url,
        rig.urls,
        rig.monitorPort,
        { enabled: false }, // the scenarios read the monitor's metrics, not its alerts
      ).configFile;
      await rig.startMonitor();
    } catch (err) {
      await rig.stop();
      throw err;
    }
    return rig;
  }

  get urls(): string[] {
    return this.nodes.map((n) => n.url);
  }

  /** The `redis` section every process uses: a URL, or the Sentinels and the master name. */
  get redisConfig(): Record<string, unknown> {
    return this.opts.sentinel
      ? { sentinels: this.sentinels.map((s) => ({ host: "127.0.0.1", port: s.port })), name: MASTER_NAME }
      : { url: this.primary.url };
  }

  /** A client on whatever Redis is the primary now. */
  redis(): Redis {
    return this.opts.sentinel
      ? new Redis({
          sentinels: this.sentinels.map((s) => ({ host: "127.0.0.1", port: s.port })),
          name: MASTER_NAME,
        })
      : new Redis(this.primary.url);
  }

  /** The cluster file signing-admin reads. */
  writeClusterFile(): string {
    const file = join(this.dir, "cluster.json");
    const redis = this.opts.sentinel ? { redis: this.redisConfig } : { redisUrl: this.primary.url };
    writeFileSync(
      file,
      JSON.stringify({
        ...redis,
        nodes: this.urls,
        monitor: this.monitor?.url,
        monitorStateDir: join(this.dir, "state", "monitor"),
      }),
    );
    return file;
  }

  private spawnNode(i: number, port: number): NodeProcess {
    return new NodeProcess({
      configFile: this.state.configFile,
      port,
      id: `chaos-${i}`,
      logFile: join(this.dir, `node-${i}.log`),
      env: {
        SIGNING__redis: JSON.stringify(this.redisConfig),
        SIGNING__log__level: "warn",
        SIGNING__signing__jobLeaseMs: "3000",
        SIGNING__store__recoveryGraceMs: "3000",
        ...this.opts.nodeEnv,
      },
    });
  }

  async startMonitor(): Promise<void> {
    this.monitor = new NodeProcess({
      program: "signing-monitor",
      configFile: this.monitorConfigFile,
      port: this.monitorPort,
      id: "chaos-monitor",
      logFile: join(this.dir, "monitor.log"),
      env: {
        SIGNING_MONITOR__redis: JSON.stringify(this.redisConfig),
        SIGNING_MONITOR__monitor__snapshotCron: "* * * * * *",
        SIGNING_MONITOR__log__level: "info",
      },
    });
    await this.monitor.ready();
  }

  /** Node `i` again, on its port, after it was killed or stopped. */
  async restartNode(i: number): Promise<void> {
    const old = this.nodes[i] as NodeProcess;
    await old.stop("SIGKILL");
    this.nodes[i] = this.spawnNode(i, old.opts.port);
    await (this.nodes[i] as NodeProcess).ready();
  }

  /** Monitor metric value (first sample matching), from its /metrics. */
  async monitorMetric(name: string, labels = ""): Promise<number> {
    const text = await (await fetch(`${this.monitor?.url}/metrics`)).text();
    const line = text.split("\n").find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ""} `));
    return line ? Number(line.split(" ").pop()) : Number.NaN;
  }

  /**
   * Runs signing clients (tokens issued before the fault), injects the fault after a warm-up,
   * keeps signing `settleMs` after the injection returns, and reports what the clients saw.
   */
  async scenario(
    name: string,
    inject: () => Promise<void>,
    settleMs = 4000,
    work: ScenarioWork = {},
  ): Promise<ScenarioReport> {
    const auth = `Basic ${Buffer.from(`${this.state.issuer.user}:${this.state.issuer.password}`).toString("base64")}`;
    const tag = name.replace(/\W+/g, "-");
    const clients = await Promise.all(
      Array.from({ length: this.opts.clients ?? 4 }, async (_, i) => {
        const tokenFile = join(this.dir, `${tag}-token-${i}`);
        writeFileSync(tokenFile, await fetchToken(this.urls[i % this.urls.length] as string, auth));
        return { ...work.client?.(i), tokenFile, nonceFile: join(this.dir, `${tag}-nonce-${i}`) };
      }),
    );
    // Let the monitor snapshot the new tokens before anything breaks.
    await sleep(1500);
    const load = new SigningLoad(
      join(this.dir, tag),
      clients,
      { nodes: this.urls, maxTimeMs: 90_000, requestTimeoutMs: 10_000 },
      work,
    );
    await sleep(1500);
    const faultStart = Date.now();
    try {
      await inject();
    } catch (err) {
      await load.stop(); // or its clients go on signing against a rig being torn down
      throw err;
    }
    const faultEnd = Date.now() + settleMs;
    await sleep(settleMs);
    const r: LoadResult = await load.stop();
    const during = r.jobs
      .filter((j) => j.end >= faultStart && j.start <= faultEnd)
      .map((j) => j.end - j.start);
    return {
      scenario: name,
      attempted: r.signed + r.failed,
      signed: r.signed,
      failed: r.failed,
      retried: r.retries,
      p99DuringFaultMs: p99(during),
      faultMs: faultEnd - faultStart,
      errors: r.errors,
      outputs: r.jobs.flatMap((j) => (j.output ? [j.output] : [])),
    };
  }

  async stop(): Promise<void> {
    await Promise.all([...this.nodes, ...(this.monitor ? [this.monitor] : [])].map((p) => p.stop("SIGKILL")));
    for (const s of [...this.sentinels, ...(this.replica ? [this.replica] : []), this.primary])
      await s.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export function formatReport(r: ScenarioReport): string {
  return `${r.scenario.padEnd(44)} attempted ${String(r.attempted).padStart(4)}  signed ${String(r.signed).padStart(4)}  failed ${r.failed}  retried ${String(r.retried).padStart(3)}  p99 during fault ${r.p99DuringFaultMs} ms`;
}
