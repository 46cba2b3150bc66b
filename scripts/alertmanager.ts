import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { parse, stringify } from "yaml";
import { freePort, killedWithParent } from "./redis-server.js";

const root = resolve(fileURLToPath(import.meta.url), "../../..");

/**
 * The Alertmanager for npm start: `SIGNING_ALERTMANAGER` (a program, or `none` for no
 * Alertmanager), else the first on PATH of upstream's `alertmanager` and Debian's
 * `prometheus-alertmanager`. Undefined when there is none.
 */
export function findAlertmanager(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const chosen = env.SIGNING_ALERTMANAGER;
  if (chosen === "none") return undefined;
  if (chosen) return chosen;
  return ["alertmanager", "prometheus-alertmanager"].find(
    (p) => spawnSync(p, ["--version"], { stdio: "ignore", env }).status === 0,
  );
}

/**
 * How soon Alertmanager notifies: `local` (npm start) within seconds instead of the production
 * minutes, so that a page shows up while the newcomer still looks; `shipped` keeps
 * prometheus/alertmanager.yml's group_wait and group_interval (the on-call drill measures them).
 */
export type AlertmanagerTimings = "local" | "shipped";

/**
 * The shipped prometheus/alertmanager.yml with every receiver replaced by `receiverUrl` (routes,
 * grouping, inhibitions kept), and with `local` timings, notifications within seconds.
 */
export function localAlertmanagerConfig(receiverUrl: string, timings: AlertmanagerTimings = "local"): string {
  const config = parse(readFileSync(join(root, "prometheus/alertmanager.yml"), "utf8")) as {
    route: Record<string, unknown> & { routes?: Record<string, unknown>[] };
    receivers: { name: string }[];
  };
  if (timings === "local") {
    Object.assign(config.route, { group_wait: "1s", group_interval: "5s" });
    // The pager routes set their own group_interval: they inherit the local one instead.
    for (const child of config.route.routes ?? []) {
      delete child.group_wait;
      delete child.group_interval;
    }
  }
  config.receivers = config.receivers.map((r) => ({
    name: r.name,
    webhook_configs: [{ url: receiverUrl, send_resolved: true }],
  }));
  const what =
    timings === "local"
      ? "every receiver is the local alert receiver"
      : "every receiver is the local alert receiver, timings as shipped";
  return `# Written from prometheus/alertmanager.yml: ${what}.\n${stringify(config)}`;
}

const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const p of running) p.kill("SIGKILL");
});

/**
 * An Alertmanager owned by this process, started like scripts/redis-server.ts starts Redis: its
 * own port, its config and data in `dir`, killed by the kernel when its owner dies. No HA
 * cluster port: one local instance gossips with nobody.
 */
export class LocalAlertmanager {
  private stderr = "";

  private constructor(
    private readonly proc: ChildProcess,
    readonly url: string,
  ) {
    proc.stderr?.on("data", (d: Buffer) => {
      this.stderr = `${this.stderr}${d}`.slice(-4000);
    });
  }

  static async start(
    program: string,
    dir: string,
    receiverUrl: string,
    timings: AlertmanagerTimings = "local",
  ): Promise<LocalAlertmanager> {
    mkdirSync(join(dir, "data"), { recursive: true, mode: 0o700 });
    const configFile = join(dir, "alertmanager.yml");
    writeFileSync(configFile, localAlertmanagerConfig(receiverUrl, timings), { mode: 0o600 });
    const port = await freePort();
    const [cmd, argv] = killedWithParent(program, [
      `--config.file=${configFile}`,
      `--storage.path=${join(dir, "data")}`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--cluster.listen-address=",
      "--log.level=warn",
    ]);
    const proc = spawn(cmd, argv, { stdio: ["ignore", "ignore", "pipe"] });
    running.add(proc);
    const am = new LocalAlertmanager(proc, `http://127.0.0.1:${port}`);
    try {
      await am.ready();
    } catch (err) {
      await am.stop();
      throw err;
    }
    return am;
  }

  private async ready(timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null || this.proc.signalCode !== null)
        throw new Error(`alertmanager exited at start-up: ${this.stderr.trim()}`);
      if ((await fetch(`${this.url}/-/ready`).catch(() => undefined))?.ok) return;
      await sleep(50);
    }
    throw new Error(`alertmanager at ${this.url} not ready after ${timeoutMs} ms: ${this.stderr.trim()}`);
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  async stop(): Promise<void> {
    running.delete(this.proc);
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise((r) => this.proc.once("exit", r));
    this.proc.kill("SIGTERM");
    await exited;
  }
}
