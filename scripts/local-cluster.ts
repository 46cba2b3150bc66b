/**
 * `npm start`: a local signing cluster for a newcomer. Its own redis-server on a free port (or
 * REDIS_URL), three signing nodes on consecutive ports from SIGNING_BASE_PORT (default 9110),
 * the monitor on SIGNING_BASE_PORT + 10, dev keys and credentials kept in SIGNING_STATE_DIR
 * (default .local/). Writes cluster.json once every node is ready, prints a walkthrough, stops
 * everything on Ctrl-C or SIGTERM. Its children also stop when it is SIGKILLed: the nodes and
 * the monitor watch it (src/bin/parent-link.ts), the kernel kills its redis-server
 * (scripts/redis-server.ts) and Alertmanager. The monitor's alerts are printed as they arrive
 * and kept in alerts.log: through a local Alertmanager when one is installed
 * (scripts/alertmanager.ts; SIGNING_ALERTMANAGER=none does without), else straight from the
 * monitor to the local receiver (scripts/alert-receiver.ts).
 */
import { renameSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { AlertReceiver } from "./alert-receiver.js";
import { findAlertmanager, LocalAlertmanager } from "./alertmanager.js";
import { prepareDevState, writeMonitorConfig } from "./dev-state.js";
import { assertPortFree, NodeProcess, PortInUseError } from "./node-process.js";
import { RedisServer } from "./redis-server.js";

const NODES = 3;
const root = resolve(fileURLToPath(import.meta.url), "../../..");
const stateDir = resolve(process.env.SIGNING_STATE_DIR ?? resolve(root, ".local"));
const basePort = Number(process.env.SIGNING_BASE_PORT ?? 9110);
const nodePorts = Array.from({ length: NODES }, (_, i) => basePort + i);
const monitorPort = basePort + 10;

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

async function main(): Promise<void> {
  const children: NodeProcess[] = [];
  let redis: RedisServer | undefined;
  let receiver: AlertReceiver | undefined;
  let alertmanager: LocalAlertmanager | undefined;
  let stopping = false;
  // Until the cluster is up, a child that exits is reported by its ready() (a port in use as one
  // line), not by its exit handler.
  let up = false;
  const shutdown = async (code: number) => {
    stopping = true;
    await Promise.all(children.map((c) => c.stop()));
    await redis?.stop();
    await alertmanager?.stop();
    await receiver?.close();
    process.exit(code);
  };
  process.once("SIGINT", () => void shutdown(0));
  process.once("SIGTERM", () => void shutdown(0));

  try {
    await assertPortsFree();
    let redisUrl = process.env.REDIS_URL;
    if (!redisUrl) {
      redis = await RedisServer.start();
      redisUrl = redis.url;
    }
    const state = await prepareDevState(stateDir, redisUrl);
    for (const [i, port] of nodePorts.entries()) {
      const node = new NodeProcess({
        configFile: state.configFile,
        port,
        id: `local-${i}`,
        logFile: resolve(stateDir, `node-${i}.log`),
      });
      node.child.on("exit", (code, signal) => {
        if (up && !stopping)
          console.error(
            `node local-${i} exited (${code ?? signal}): ${node.stderr}see ${stateDir}/node-${i}.log`,
          );
      });
      children.push(node);
    }
    await Promise.all(children.map((n) => n.ready()));
    const nodes = children.map((n) => n.url);

    const alertsLog = resolve(stateDir, "alerts.log");
    receiver = await AlertReceiver.start(alertsLog);
    const path = await alertPath(receiver);
    alertmanager = path.alertmanager;
    const monitorConfig = writeMonitorConfig(stateDir, redisUrl, nodes, monitorPort, path.alerts);
    const monitor = new NodeProcess({
      program: "signing-monitor",
      configFile: monitorConfig.configFile,
      port: monitorPort,
      id: "local-monitor",
      logFile: resolve(stateDir, "monitor.log"),
    });
    monitor.child.on("exit", (code, signal) => {
      if (up && !stopping)
        console.error(`monitor exited (${code ?? signal}): ${monitor.stderr}see ${stateDir}/monitor.log`);
    });
    children.push(monitor);
    await monitor.ready();
    up = true;
    const gone = children.find((c) => !c.running);
    if (gone) throw new Error(`${gone.opts.id} exited while the cluster started: ${gone.stderr}`);

    const cluster = {
      redisUrl,
      nodes,
      monitor: monitor.url,
      monitorStateDir: resolve(stateDir, "monitor"),
      issuer: { user: state.issuer.user, passwordFile: state.issuer.passwordFile },
      keys: { gpg: state.keys.gpg.publicKeyFile, sshsig: state.keys.sshsig.publicKeyFile },
      alerts: { receiver: receiver.url, log: alertsLog, alertmanager: alertmanager?.url },
    };
    const file = resolve(stateDir, "cluster.json");
    writeFileSync(`${file}.tmp`, `${JSON.stringify(cluster, null, 2)}\n`, { mode: 0o600 });
    renameSync(`${file}.tmp`, file);

    const [a, b, c] = nodes;
    const rel = (p: string) => (p.startsWith(`${process.cwd()}/`) ? p.slice(process.cwd().length + 1) : p);
    console.log(`signing cluster is up
  redis:  ${redisUrl}${redis ? " (our own, no persistence)" : ""}
  nodes:  ${nodes.join("  ")}
  monitor: ${monitor.url}  (/metrics, /readyz; snapshots in ${stateDir}/monitor)
  alerts: printed here as "alert [...]" lines and kept in ${alertsLog}
          ${alertmanager ? `via Alertmanager ${alertmanager.url} (its UI; prometheus/alertmanager.yml's routing)` : "straight from the monitor (no alertmanager installed: apt install prometheus-alertmanager)"}
  state:  ${stateDir}  (cluster.json, keys, node logs)

Sign a file with curl, through three different nodes:

  TOKEN=$(curl -sf -u ${state.issuer.user}:"$(cat ${rel(state.issuer.passwordFile)})" -d slave_ip=127.0.0.1 -d duration=3600 ${a}/token)
  echo "hello, signing" > hello.txt; SHA1=$(sha1sum hello.txt | cut -d' ' -f1)
  curl -sf -F sha1=$SHA1 -F filename=hello.txt -F token="$TOKEN" -F nonce= -F filedata=@hello.txt "${b}/sign/gpg?wait=30"
  curl -sf -o hello.txt.asc ${c}/sign/gpg/$SHA1
  GNUPGHOME=$(mktemp -d) sh -c 'gpg -q --import ${rel(state.keys.gpg.publicKeyFile)} && gpg --verify hello.txt.asc hello.txt'

Ctrl-C stops the cluster.`);
  } catch (err) {
    if (stopping) return; // a signal came first: children stopped on purpose
    const portInUse = err instanceof PortInUseError;
    console.error(
      portInUse ? portInUseLine(err.port) : `local cluster failed to start: ${(err as Error).message}`,
    );
    await shutdown(portInUse ? 2 : 1);
  }
}

void main();
