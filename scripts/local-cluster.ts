/**
 * `npm start`: a local signing cluster for a newcomer. Its own redis-server on a free port (or
 * REDIS_URL), three signing nodes on consecutive ports from SIGNING_BASE_PORT (default 9110),
 * dev keys and credentials kept in SIGNING_STATE_DIR (default .local/). Writes cluster.json
 * once every node is ready, prints a walkthrough, stops everything on Ctrl-C.
 */
import { renameSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { prepareDevState, writeMonitorConfig } from "../src/config/dev-state.js";
import { NodeProcess } from "./node-process.js";
import { RedisServer } from "./redis-server.js";

const NODES = 3;
const root = resolve(fileURLToPath(import.meta.url), "../../..");
const stateDir = resolve(process.env.SIGNING_STATE_DIR ?? resolve(root, ".local"));
const basePort = Number(process.env.SIGNING_BASE_PORT ?? 9110);

async function main(): Promise<void> {
  const children: NodeProcess[] = [];
  let redis: RedisServer | undefined;
  let stopping = false;
  const shutdown = async (code: number) => {
    stopping = true;
    await Promise.all(children.map((c) => c.stop()));
    await redis?.stop();
    process.exit(code);
  };
  process.once("SIGINT", () => void shutdown(0));
  process.once("SIGTERM", () => void shutdown(0));

  try {
    let redisUrl = process.env.REDIS_URL;
    if (!redisUrl) {
      redis = await RedisServer.start();
      redisUrl = redis.url;
    }
    const state = await prepareDevState(stateDir, redisUrl);
    for (let i = 0; i < NODES; i++) {
      const node = new NodeProcess({
        configFile: state.configFile,
        port: basePort + i,
        id: `local-${i}`,
        logFile: resolve(stateDir, `node-${i}.log`),
      });
      node.child.on("exit", (code, signal) => {
        if (!stopping)
          console.error(
            `node local-${i} exited (${code ?? signal}): ${node.stderr}see ${stateDir}/node-${i}.log`,
          );
      });
      children.push(node);
    }
    await Promise.all(children.map((n) => n.ready()));
    const nodes = children.map((n) => n.url);

    const monitorConfig = writeMonitorConfig(stateDir, redisUrl, nodes, basePort + 10);
    const monitor = new NodeProcess({
      program: "signing-monitor",
      configFile: monitorConfig.configFile,
      port: basePort + 10,
      id: "local-monitor",
      logFile: resolve(stateDir, "monitor.log"),
    });
    monitor.child.on("exit", (code, signal) => {
      if (!stopping)
        console.error(`monitor exited (${code ?? signal}): ${monitor.stderr}see ${stateDir}/monitor.log`);
    });
    children.push(monitor);
    await monitor.ready();

    const cluster = {
      redisUrl,
      nodes,
      monitor: monitor.url,
      monitorStateDir: resolve(stateDir, "monitor"),
      issuer: { user: state.issuer.user, passwordFile: state.issuer.passwordFile },
      keys: { gpg: state.keys.gpg.publicKeyFile, sshsig: state.keys.sshsig.publicKeyFile },
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
  state:  ${stateDir}  (cluster.json, keys, node logs)

Sign a file with curl, through three different nodes:

  TOKEN=$(curl -sf -u ${state.issuer.user}:"$(cat ${rel(state.issuer.passwordFile)})" -d slave_ip=127.0.0.1 -d duration=3600 ${a}/token)
  echo "hello, signing" > hello.txt; SHA1=$(sha1sum hello.txt | cut -d' ' -f1)
  curl -sf -F sha1=$SHA1 -F filename=hello.txt -F token="$TOKEN" -F nonce= -F filedata=@hello.txt "${b}/sign/gpg?wait=30"
  curl -sf -o hello.txt.asc ${c}/sign/gpg/$SHA1
  GNUPGHOME=$(mktemp -d) sh -c 'gpg -q --import ${rel(state.keys.gpg.publicKeyFile)} && gpg --verify hello.txt.asc hello.txt'

Ctrl-C stops the cluster.`);
  } catch (err) {
    console.error(`local cluster failed to start: ${(err as Error).message}`);
    await shutdown(1);
  }
}

void main();
