/**
 * `npm start`: a local signing cluster for a newcomer. Its own redis-server on a free port (or
 * REDIS_URL), three signing nodes on consecutive ports from SIGNING_BASE_PORT (default 9110),
 * the monitor on SIGNING_BASE_PORT + 10, dev keys and credentials kept in SIGNING_STATE_DIR
 * (default .local/). Writes cluster.json once every node is ready, prints a walkthrough, stops
 * everything on Ctrl-C or SIGTERM. Its children also stop when it is SIGKILLed: the nodes and
 * the monitor watch it (src/process/parent-link.ts), the kernel kills its redis-server
 * (scripts/redis-server.ts) and Alertmanager. The monitor's alerts are printed as they arrive
 * and kept in alerts.log: through a local Alertmanager when one is installed
 * (scripts/alertmanager.ts; SIGNING_ALERTMANAGER=none does without), else straight from the
 * monitor to the local receiver (scripts/alert-receiver.ts). cluster.json lists every process
 * (id, kind, port, pid, log file) and the control that `node dist/scripts/local-ctl.js` uses to
 * restart, stop or start one of them (scripts/local-control.ts).
 */
import { renameSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { DevKeys } from "../src/signing/dev-keys.js";
import { AlertReceiver } from "./alert-receiver.js";
import { findAlertmanager, LocalAlertmanager } from "./alertmanager.js";
import { type DevKeyBackend, type DevState, prepareDevState, writeMonitorConfig } from "./dev-state.js";
import { ControlServer, ManagedNode, type ManagedProcess, ManagedRedis } from "./local-control.js";
import { assertPortFree, PortInUseError } from "./node-process.js";
import { RedisServer } from "./redis-server.js";

const NODES = 3;
const root = resolve(fileURLToPath(import.meta.url), "../../..");
const stateDir = resolve(process.env.SIGNING_STATE_DIR ?? resolve(root, ".local"));
const basePort = Number(process.env.SIGNING_BASE_PORT ?? 9110);
const nodePorts = Array.from({ length: NODES }, (_, i) => basePort + i);
const monitorPort = basePort + 10;
const alertsLog = resolve(stateDir, "alerts.log");
/** `SIGNING_KEYS=softhsm npm start`: the dev keys in a SoftHSM2 token instead of files. */
const keyBackend = keysFromEnv(process.env.SIGNING_KEYS);

function keysFromEnv(value: string | undefined): DevKeyBackend {
  if (value === undefined || value === "" || value === "file") return "file";
  if (value === "softhsm") return "softhsm";
  console.error(`local cluster: SIGNING_KEYS must be file or softhsm, not ${value}`);
  process.exit(2);
}

/**
 * A token's public keys are what the nodes serve (the OpenPGP key is built by the node): the
 * walkthrough and cluster.json point at copies of them, where the file keys' would be.
 */
async function saveTokenPublicKeys(node: string, keys: DevKeys): Promise<void> {
  for (const format of ["gpg", "sshsig"] as const) {
    const res = await fetch(`${node}/keys/${format}`);
    if (!res.ok) throw new Error(`GET /keys/${format}: ${res.status}`);
    keys[format].publicKeyFile = resolve(
      stateDir,
      "softhsm",
      `${format}-public${format === "gpg" ? ".asc" : ".pub"}`,
    );
    writeFileSync(keys[format].publicKeyFile, await res.text());
  }
}

/**
 * Refuses before anything is spawned or written. A cluster left running on these ports would
 * otherwise answer our readiness checks, and its config files in a shared state dir would be
 * rewritten under it.
 */
async function assertPortsFree(): Promise<void> {
  for (const port of [...nodePorts, monitorPort]) await assertPortFree(port);
}

/** One line, no stack: most often the cluster of an earlier `npm start` is still running. */
function portInUseLine(port: number): string {
  return (
    `local cluster: port ${port} is already in use (a signing cluster still running?); ` +
    `stop it, or move this cluster with SIGNING_BASE_PORT (it uses ${nodePorts.join(", ")} and ` +
    `${monitorPort}), e.g. SIGNING_BASE_PORT=${basePort + 100} npm start`
  );
}

/**
 * Where the monitor's alerts go: the receiver that prints them, through a local Alertmanager
 * when there is one (a newcomer sees the shipped routing at work, and its UI).
 */
async function alertPath(
  receiver: AlertReceiver,
): Promise<{ alerts: Record<string, string>; alertmanager?: LocalAlertmanager }> {
  const program = findAlertmanager();
  if (!program) return { alerts: { webhookUrl: receiver.url } };
  try {
    const alertmanager = await LocalAlertmanager.start(
      program,
      resolve(stateDir, "alertmanager"),
      receiver.url,
    );
    return { alerts: { alertmanagerUrl: alertmanager.url }, alertmanager };
  } catch (err) {
    console.error(`local cluster: ${(err as Error).message}; alerts go straight to the local receiver`);
    return { alerts: { webhookUrl: receiver.url } };
  }
}

/** The cluster's processes and what stops them; its steps in the order `npm start` takes them. */
class LocalCluster {
  /** Nodes, then the monitor, then our own Redis (if any): what local-ctl can restart. */
  readonly managed: ManagedProcess[] = [];
  redis?: RedisServer;
  receiver?: AlertReceiver;
  alertmanager?: LocalAlertmanager;
  control?: ControlServer;
  stopping = false;
  // Until the cluster is up, a child that exits is reported by its ready() (a port in use as one
  // line), not by its exit handler.
  up = false;
  private publish = () => {};

  nodeChildren(): ManagedNode[] {
    return this.managed.filter((m): m is ManagedNode => m instanceof ManagedNode);
  }

  async shutdown(code: number): Promise<never> {
    this.stopping = true;
    await this.control?.close();
    await Promise.all(this.nodeChildren().map((c) => c.current.stop()));
    await this.redis?.stop();
    await this.alertmanager?.stop();
    await this.receiver?.close();
    process.exit(code);
  }

  /** A child that exits by itself is reported; one that local-ctl stopped is not. */
  private onExit = (m: ManagedNode, how: string, expected: boolean) => {
    if (!this.up || this.stopping) return;
    this.publish();
    if (expected) return;
    const log = m.info().log;
    console.error(`${m.id} exited (${how}): ${m.current.stderr}${log ? `see ${log}` : ""}`);
  };

  async startRedis(): Promise<string> {
    if (process.env.REDIS_URL) return process.env.REDIS_URL;
    this.redis = await RedisServer.start();
    return this.redis.url;
  }

  async startNodes(configFile: string): Promise<string[]> {
    for (const [i, port] of nodePorts.entries()) {
      const opts = { configFile, port, id: `local-${i}`, logFile: resolve(stateDir, `node-${i}.log`) };
      this.managed.push(new ManagedNode(opts, this.onExit));
    }
    await Promise.all(this.nodeChildren().map((n) => n.current.ready()));
    return this.nodeChildren().map((n) => n.current.url);
  }

  /** The alert receiver, Alertmanager if installed, then the monitor that sends to them. */
  async startMonitor(redisUrl: string, nodes: string[]): Promise<ManagedNode> {
    this.receiver = await AlertReceiver.start(alertsLog);
    const path = await alertPath(this.receiver);
    this.alertmanager = path.alertmanager;
    const monitorConfig = writeMonitorConfig(stateDir, redisUrl, nodes, monitorPort, path.alerts);
    const monitor = new ManagedNode(
      {
        program: "signing-monitor",
        configFile: monitorConfig.configFile,
        port: monitorPort,
        id: "local-monitor",
        logFile: resolve(stateDir, "monitor.log"),
      },
      this.onExit,
    );
    this.managed.push(monitor);
    await monitor.current.ready();
    return monitor;
  }

  /** cluster.json, rewritten whenever a process stops or starts so its pids and states are current. */
  async publishClusterFile(state: DevState, redisUrl: string, nodes: string[], monitor: ManagedNode) {
    const file = resolve(stateDir, "cluster.json");
    const tokenFile = resolve(stateDir, "control-token");
    const cluster = {
      redisUrl,
      nodes,
      monitor: monitor.current.url,
      monitorStateDir: resolve(stateDir, "monitor"),
      issuer: { user: state.issuer.user, passwordFile: state.issuer.passwordFile },
      keys: { gpg: state.keys.gpg.publicKeyFile, sshsig: state.keys.sshsig.publicKeyFile },
      alerts: { receiver: this.receiver?.url, log: alertsLog, alertmanager: this.alertmanager?.url },
      pid: process.pid,
      control: { url: "", tokenFile },
      processes: this.managed.map((m) => m.info()),
    };
    this.publish = () => {
      if (this.stopping) return;
      cluster.processes = this.managed.map((m) => m.info());
      writeFileSync(`${file}.tmp`, `${JSON.stringify(cluster, null, 2)}\n`, { mode: 0o600 });
      renameSync(`${file}.tmp`, file);
    };
    this.control = await ControlServer.start(
      () => this.managed,
      tokenFile,
      () => this.publish(),
    );
    cluster.control.url = this.control.url;
    this.publish();
  }

  /** Starts every process in order; throws (a port in use, a child that died) before it is up. */
  async start(): Promise<void> {
    await assertPortsFree();
    const redisUrl = await this.startRedis();
    const state = await prepareDevState(stateDir, redisUrl, keyBackend, { authenticode: true });
    // The nodes inherit it: SoftHSM2 finds the token through SOFTHSM2_CONF.
    if (state.token) process.env.SOFTHSM2_CONF = state.token.conf;
    const nodes = await this.startNodes(state.configFile);
    if (state.token) await saveTokenPublicKeys(nodes[0] as string, state.keys);
    const monitor = await this.startMonitor(redisUrl, nodes);
    if (this.redis) this.managed.push(new ManagedRedis(this.redis));
    this.up = true;
    const gone = this.nodeChildren().find((c) => !c.current.running);
    if (gone) throw new Error(`${gone.id} exited while the cluster started: ${gone.current.stderr}`);
    await this.publishClusterFile(state, redisUrl, nodes, monitor);
    console.log(walkthrough(state, redisUrl, nodes, monitor.current.url, this));
  }
}

/** What `npm start` prints once the cluster is up: where everything is, and a first signature. */
function walkthrough(
  state: DevState,
  redisUrl: string,
  nodes: string[],
  monitorUrl: string,
  c: LocalCluster,
): string {
  const [a, b, d] = nodes;
  const rel = (p: string) => (p.startsWith(`${process.cwd()}/`) ? p.slice(process.cwd().length + 1) : p);
  return `signing cluster is up
  redis:  ${redisUrl}${c.redis ? " (our own, no persistence)" : ""}
  nodes:  ${nodes.join("  ")}
  monitor: ${monitorUrl}  (/metrics, /readyz; snapshots in ${stateDir}/monitor)
  alerts: printed here as "alert [...]" lines and kept in ${alertsLog}
          ${c.alertmanager ? `via Alertmanager ${c.alertmanager.url} (its UI; prometheus/alertmanager.yml's routing)` : "straight from the monitor (no alertmanager installed: apt install prometheus-alertmanager)"}
  state:  ${stateDir}  (cluster.json, keys, node logs)
  restart one: node dist/scripts/local-ctl.js restart local-1   (ps: the processes; stop, start)

Sign a file with curl, through three different nodes:

  TOKEN=$(curl -sf -u ${state.issuer.user}:"$(cat ${rel(state.issuer.passwordFile)})" -d slave_ip=127.0.0.1 -d duration=3600 ${a}/token)
  echo "hello, signing" > hello.txt; SHA1=$(sha1sum hello.txt | cut -d' ' -f1)
  curl -sf -F sha1=$SHA1 -F filename=hello.txt -F token="$TOKEN" -F nonce= -F filedata=@hello.txt "${b}/sign/gpg?wait=30"
  curl -sf -o hello.txt.asc ${d}/sign/gpg/$SHA1
  GNUPGHOME=$(mktemp -d) sh -c 'gpg -q --import ${rel(state.keys.gpg.publicKeyFile)} && gpg --verify hello.txt.asc hello.txt'

Ctrl-C stops the cluster.`;
}

async function main(): Promise<void> {
  const cluster = new LocalCluster();
  process.once("SIGINT", () => void cluster.shutdown(0));
  process.once("SIGTERM", () => void cluster.shutdown(0));
  try {
    await cluster.start();
  } catch (err) {
    if (cluster.stopping) return; // a signal came first: children stopped on purpose
    const portInUse = err instanceof PortInUseError;
    console.error(
      portInUse ? portInUseLine(err.port) : `local cluster failed to start: ${(err as Error).message}`,
    );
    await cluster.shutdown(portInUse ? 2 : 1);
  }
}

void main();
