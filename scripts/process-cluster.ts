import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type DevKeyBackend, type DevState, prepareDevState } from "./dev-state.js";
import { NodeProcess } from "./node-process.js";
import { freePort, RedisServer } from "./redis-server.js";

/** A real Redis and N signing nodes as real processes: for tests that kill and restart them. */
export class ProcessCluster {
  private constructor(
    readonly redis: RedisServer,
    readonly state: DevState,
    readonly nodes: NodeProcess[],
    private readonly env: Record<string, string>,
  ) {}

  static async start(
    opts: {
      nodes?: number;
      env?: Record<string, string>;
      https?: boolean;
      /** The built tree whose nodes to run (NodeProcessOptions.root). */
      root?: string;
      /** Where the nodes' keys live: files (default) or a SoftHSM2 token. */
      keys?: DevKeyBackend;
      /** Sign Authenticode too (a dev CA made with openssl; osslsigncode must be installed). */
      authenticode?: boolean;
      /** Sign only these formats (DevStateOptions.formats). */
      formats?: readonly string[];
    } = {},
  ): Promise<ProcessCluster> {
    const redis = await RedisServer.start();
    const state = await prepareDevState(mkdtempSync(join(tmpdir(), "signing-e2e-")), redis.url, opts.keys, {
      authenticode: opts.authenticode ?? false,
      ...(opts.formats ? { formats: opts.formats } : {}),
    });
    const env = {
      SIGNING__log__level: "warn",
      // SoftHSM2 finds the dev token through SOFTHSM2_CONF.
      ...(state.token ? { SOFTHSM2_CONF: state.token.conf } : {}),
      ...opts.env,
    };
    const cluster = new ProcessCluster(redis, state, [], env);
    try {
      for (let i = 0; i < (opts.nodes ?? 3); i++) {
        cluster.nodes.push(
          new NodeProcess({
            configFile: state.configFile,
            port: await freePort(),
            id: `node-${i}`,
            env,
            ...(opts.https ? { https: true } : {}),
            ...(opts.root ? { root: opts.root } : {}),
          }),
        );
      }
      await Promise.all(cluster.nodes.map((n) => n.ready()));
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  get urls(): string[] {
    return this.nodes.map((n) => n.url);
  }

  /** Starts node `i` again on its port after it was stopped or killed. */
  async restart(i: number): Promise<void> {
    const old = this.nodes[i] as NodeProcess;
    await old.stop("SIGKILL");
    const fresh = new NodeProcess({ ...old.opts, env: this.env });
    this.nodes[i] = fresh;
    await fresh.ready();
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.stop("SIGKILL")));
    await this.redis.stop();
    rmSync(this.state.dir, { recursive: true, force: true });
  }
}
