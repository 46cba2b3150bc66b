import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DestinationStream } from "pino";
import { buildConfig, type LoadedConfig } from "../src/config/load.js";
import { createLogger } from "../src/log/logger.js";
import { type RunningNode, startNode } from "../src/node.js";
import { type DevState, prepareDevState } from "./dev-state.js";
import { RedisServer as TestRedis } from "./redis-server.js";

export type Overrides = Record<string, unknown>;

function merge(base: Record<string, unknown>, over: Overrides): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] =
      v && typeof v === "object" && !Array.isArray(v) && b && typeof b === "object" && !Array.isArray(b)
        ? merge(b as Record<string, unknown>, v as Overrides)
        : v;
  }
  return out;
}

/** What TestCluster.start makes: how many nodes, config overrides, a Redis of the caller's. */
export interface TestClusterOptions {
  nodes?: number;
  overrides?: Overrides;
  redis?: TestRedis;
  logTo?: DestinationStream;
  /** Sign Authenticode too (a dev CA made with openssl; osslsigncode must be installed). */
  authenticode?: boolean;
}

/** One real Redis and N in-process signing nodes sharing it, with dev keys in a temp dir. */
export class TestCluster {
  private constructor(
    readonly redis: TestRedis,
    readonly state: DevState,
    readonly loaded: LoadedConfig,
    readonly nodes: RunningNode[],
  ) {}

  static async start(opts: TestClusterOptions = {}): Promise<TestCluster> {
    const redis = opts.redis ?? (await TestRedis.start());
    const dir = mkdtempSync(join(tmpdir(), "signing-test-"));
    try {
      return await TestCluster.startNodes(opts, redis, dir);
    } catch (err) {
      // A configuration or start-up error leaves no redis-server or temp dir behind (a Redis
      // the caller passed in is stopped too, as stop() does).
      await redis.stop();
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  private static async startNodes(
    opts: TestClusterOptions,
    redis: TestRedis,
    dir: string,
  ): Promise<TestCluster> {
    const state = await prepareDevState(dir, redis.url, "file", { authenticode: opts.authenticode ?? false });
    // Tests make many requests from one address: limits are tested where they are the subject.
    const generous = { ratePerSecond: 10_000, burst: 10_000 };
    const raw = merge(
      state.config,
      merge(
        {
          log: { level: "silent" },
          limits: { tokenPerIp: generous, signPerIp: generous },
        },
        opts.overrides ?? {},
      ),
    );
    const loaded = buildConfig(raw, dir, {});
    const nodes: RunningNode[] = [];
    const cluster = new TestCluster(redis, state, loaded, nodes);
    try {
      for (let i = 0; i < (opts.nodes ?? 2); i++) {
        const cfg = structuredClone(loaded);
        cfg.config.node.id = `node-${i}`;
        // Each node its own spool, inside the cluster's directory (removed with it).
        cfg.config.signing.spool.directory ??= join(dir, `spool-${i}`);
        nodes.push(
          await startNode(cfg, {
            log: opts.logTo
              ? createLogger("debug", `node-${i}`, opts.logTo)
              : createLogger("silent", `node-${i}`),
          }),
        );
      }
    } catch (err) {
      await Promise.allSettled(nodes.map((n) => n.close())); // start() stops Redis and removes the dir
      throw err;
    }
    return cluster;
  }

  node(i: number): RunningNode {
    const n = this.nodes[i];
    if (!n) throw new Error(`no node ${i}`);
    return n;
  }

  /** HTTP Basic credentials of the dev build master. */
  get basicAuth(): string {
    return `Basic ${Buffer.from(`${this.state.issuer.user}:${this.state.issuer.password}`).toString("base64")}`;
  }

  async stop(): Promise<void> {
    await Promise.allSettled(this.nodes.map((n) => n.close()));
    await this.redis.stop();
    rmSync(this.state.dir, { recursive: true, force: true });
  }
}
