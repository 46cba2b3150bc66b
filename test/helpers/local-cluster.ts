import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const root = new URL("../../../", import.meta.url).pathname;

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

/**
 * A SIGNING_BASE_PORT for `npm start` away from the default 9110 (other runs share this
 * machine): three nodes on base..base+2, the monitor on base+10, all free.
 */
export async function threeFreePorts(): Promise<number> {
  for (;;) {
    const base = 20000 + Math.floor(Math.random() * 30000);
    if (
      (await portFree(base)) &&
      (await portFree(base + 1)) &&
      (await portFree(base + 2)) &&
      (await portFree(base + 10))
    ) {
      return base;
    }
  }
}

/**
 * `npm start`'s program (dist/scripts/local-cluster.js), its stdout and stderr in `output`.
 * Without an Alertmanager, the same on every machine, unless `env` asks for one.
 */
export function spawnLocalCluster(
  stateDir: string,
  base: number,
  env: Record<string, string> = {},
): { cluster: ChildProcess; output: () => string } {
  const cluster = spawn(process.execPath, [join(root, "dist/scripts/local-cluster.js")], {
    env: {
      ...process.env,
      SIGNING_STATE_DIR: stateDir,
      SIGNING_BASE_PORT: String(base),
      REDIS_URL: "",
      SIGNING_ALERTMANAGER: "none",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  cluster.stdout?.on("data", (d: Buffer) => {
    output += d;
  });
  cluster.stderr?.on("data", (d: Buffer) => {
    output += d;
  });
  return { cluster, output: () => output };
}

/** Direct children of `pid`, with their command names (Linux `ps`). */
export function childrenOf(pid: number): { pid: number; comm: string }[] {
  const ps = spawnSync("ps", ["--ppid", String(pid), "-o", "pid=,comm="], { encoding: "utf8" });
  return ps.stdout
    .split("\n")
    .map((l) => l.trim().split(/\s+/))
    .filter(([p]) => p)
    .map(([p, comm]) => ({ pid: Number(p), comm: comm ?? "" }));
}

/** Running (a zombie waiting for its new parent to reap it has stopped running). */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/**
 * What a SIGKILLed cluster cannot clean up itself: its Redis' temp dir (Redis runs in it) and
 * the reservation of Redis' port (scripts/redis-server.ts; the file holds the owner's pid).
 */
export function redisLeftovers(clusterPid: number, redisPid: number, stateDir: string): () => void {
  const dir = readlinkSync(`/proc/${redisPid}/cwd`);
  const { redisUrl } = JSON.parse(readFileSync(join(stateDir, "cluster.json"), "utf8")) as {
    redisUrl: string;
  };
  const reservation = join(tmpdir(), "signing-ports", new URL(redisUrl).port);
  return () => {
    rmSync(dir, { recursive: true, force: true });
    if (existsSync(reservation) && readFileSync(reservation, "utf8") === String(clusterPid))
      rmSync(reservation);
  };
}
