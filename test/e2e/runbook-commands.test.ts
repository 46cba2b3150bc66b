import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { spawnLocalCluster, threeFreePorts } from "../helpers/local-cluster.js";

/**
 * Every command of the runbooks that the reader need not fill in (a line of a ```sh block
 * without a `<placeholder>`) runs, in the order written, against npm start's cluster, from a
 * directory where `.local/` is that cluster's state dir and `dist/` the build, with $NODE,
 * $MONITOR, $REDIS_URL and $SIGNING_ADMIN_CLUSTER set as runbooks/README.md says and
 * `signing-admin` on the PATH; each must exit 0. Commands that change the cluster are either
 * placeholder'd (DEL, reseed, invalidate, revoke) or safe in that order (local-ctl restart
 * returns once the process is ready again). Runbooks run side by side (the commands of each in
 * order), except that a local-ctl restart, stop or start runs while nothing else does.
 */

const root = new URL("../../../", import.meta.url).pathname;
const runbooksDir = join(root, "runbooks");
const work = mkdtempSync(join(tmpdir(), "signing-runbook-commands-"));
let cluster: ChildProcess | undefined;

after(async () => {
  if (cluster && cluster.exitCode === null) {
    const exited = new Promise((r) => cluster?.once("exit", r));
    cluster.kill("SIGTERM");
    await exited;
  }
  rmSync(work, { recursive: true, force: true });
});

/** A placeholder the reader must fill in: `<node-host>`, `<key>`, `<token-or-id>`… */
const PLACEHOLDER = /<[a-z][a-z0-9-]*>/;

/** The command lines of a runbook's ```sh blocks (continuations joined), in order. */
function shellCommands(markdown: string): string[] {
  const out: string[] = [];
  for (const m of markdown.matchAll(/^[ \t]*```sh\n([\s\S]*?)^[ \t]*```/gm)) {
    let pending = "";
    for (const raw of (m[1] as string).split("\n")) {
      const line = raw.trim();
      if (line.endsWith("\\")) {
        pending += `${line.slice(0, -1)} `;
        continue;
      }
      const full = pending + line;
      pending = "";
      if (full && !full.startsWith("#")) out.push(full);
    }
  }
  return out;
}

interface Ran {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** One command line, as the reader's shell would run it, but stopping on unset variables and failed pipes. */
function bash(script: string, cwd: string, env: NodeJS.ProcessEnv, timeoutMs = 60_000): Promise<Ran> {
  return new Promise((resolve) => {
    const child = spawn("bash", ["-u", "-o", "pipefail", "-c", script], {
      cwd,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d;
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      stderr += `\n(killed after ${timeoutMs} ms)`;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("close", (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    });
  });
}

/**
 * Runbooks run side by side, each in its own order; a command that stops or starts a process of
 * the cluster (local-ctl) runs alone, so no other runbook's command sees a node half restarted.
 */
class Turns {
  private readers = 0;
  private writers = 0;
  private writing = false;
  private waiting: (() => void)[] = [];

  /** Resolves at the next change; the caller checks its condition again (no await in between). */
  private next(): Promise<void> {
    return new Promise<void>((r) => this.waiting.push(r));
  }

  private wake(): void {
    for (const r of this.waiting.splice(0)) r();
  }

  async shared<T>(fn: () => Promise<T>): Promise<T> {
    while (this.writers > 0) await this.next();
    this.readers++;
    try {
      return await fn();
    } finally {
      this.readers--;
      this.wake();
    }
  }

  async alone<T>(fn: () => Promise<T>): Promise<T> {
    this.writers++;
    while (this.readers > 0 || this.writing) await this.next();
    this.writing = true;
    try {
      return await fn();
    } finally {
      this.writing = false;
      this.writers--;
      this.wake();
    }
  }
}

/** Changes the cluster: runs alone. */
const MUTATION = /local-ctl\.js\s+(restart|stop|start)\b/;
/** Runbooks at a time (RUNBOOK_LANES=1: one after the other, as a reader would). */
const LANES = Number(process.env.RUNBOOK_LANES ?? 3);

test("every runbook command without a placeholder runs against npm start's cluster", async (t) => {
  const stateDir = join(work, ".local");
  const started = spawnLocalCluster(stateDir, await threeFreePorts());
  cluster = started.cluster;
  const clusterJson = join(stateDir, "cluster.json");
  for (let i = 0; i < 300 && !existsSync(clusterJson); i++) {
    assert.equal(cluster.exitCode, null, started.output());
    await sleep(100);
  }
  assert.ok(existsSync(clusterJson), started.output());
  const info = JSON.parse(readFileSync(clusterJson, "utf8")) as {
    redisUrl: string;
    nodes: string[];
    monitor: string;
  };

  // The reader's checkout: .local/ (the cluster's state dir) and dist/; signing-admin on the PATH.
  symlinkSync(join(root, "dist"), join(work, "dist"));
  const bin = join(work, "bin");
  mkdirSync(bin);
  writeFileSync(
    join(bin, "signing-admin"),
    `#!/bin/sh\nexec "${process.execPath}" "${join(root, "dist/src/bin/signing-admin.js")}" "$@"\n`,
  );
  chmodSync(join(bin, "signing-admin"), 0o755);
  const home = join(work, "home");
  mkdirSync(home);
  const env = {
    ...process.env,
    HOME: home,
    PATH: `${bin}:${process.env.PATH}`,
    NODE: info.nodes[0],
    MONITOR: info.monitor,
    REDIS_URL: info.redisUrl,
    SIGNING_ADMIN_CLUSTER: clusterJson,
    SIGNING_STATE_DIR: stateDir,
  };

  // Some traffic, so that the logs and counters the runbooks filter on exist: a token and a
  // signed file. (Rejected tokens would make `signing-admin status` report them, exit 1.)
  const traffic = await bash(
    [
      'TOKEN=$(curl -sf -u build-master:"$(cat .local/issuer-password.txt)" -d slave_ip=127.0.0.1 -d duration=3600 "$NODE/token")',
      'echo "hello, runbooks" > hello.txt; SHA1=$(sha1sum hello.txt | cut -d" " -f1)',
      'curl -sf -F sha1=$SHA1 -F filename=hello.txt -F token="$TOKEN" -F nonce= -F filedata=@hello.txt "$NODE/sign/gpg?wait=30" >/dev/null',
    ].join("\n"),
    work,
    env,
  );
  assert.equal(traffic.status, 0, `${traffic.stdout}${traffic.stderr}`);
  // The runbooks read a healthy cluster: `signing-admin status` exits 0 once the monitor has
  // written its first snapshot.
  let health = await bash("signing-admin status", work, env);
  for (let i = 0; i < 60 && health.status !== 0; i++) {
    await sleep(500);
    health = await bash("signing-admin status", work, env);
  }
  assert.equal(health.status, 0, `the local cluster is not healthy:\n${health.stdout}${health.stderr}`);

  const failures: string[] = [];
  let ran = 0;
  let skipped = 0;
  const took: [number, string][] = [];
  const retried: string[] = [];
  const files = readdirSync(runbooksDir)
    .filter((f) => f.endsWith(".md"))
    .sort();
  const turns = new Turns();
  const runFile = async (f: string) => {
    for (const command of shellCommands(readFileSync(join(runbooksDir, f), "utf8"))) {
      if (PLACEHOLDER.test(command)) {
        skipped++;
        continue;
      }
      ran++;
      const go = async () => {
        const started = Date.now();
        const r = await bash(command, work, env);
        took.push([Date.now() - started, `${f}: ${command}`]);
        return r;
      };
      const once = () => (MUTATION.test(command) ? turns.alone(go) : turns.shared(go));
      // `… | head` may end a writer early (SIGPIPE, 141): what the reader sees is complete.
      const ok = (r: Ran) => r.status === 0 || (r.status === 141 && /\|\s*head\b/.test(command));
      let r = await once();
      if (!ok(r)) {
        // Once more: on a loaded machine a healthy cluster can miss a deadline (the 3 s of
        // `signing-admin status`, the monitor's 5 s loop check); a wrong command fails again.
        retried.push(`${f}: ${command}`);
        await sleep(2000);
        r = await once();
      }
      if (!ok(r))
        failures.push(
          `${f}: ${command}\n  exit ${r.status ?? r.signal}: ${r.stderr.trim().slice(-600)}\n  stdout: ${r.stdout.trim().slice(-600)}`,
        );
    }
  };
  const queue = [...files];
  await Promise.all(
    Array.from({ length: LANES }, async () => {
      for (let f = queue.shift(); f !== undefined; f = queue.shift()) await runFile(f);
    }),
  );
  for (const [ms, c] of took.sort((a, b) => b[0] - a[0]).slice(0, 5)) t.diagnostic(`${ms} ms ${c}`);
  if (retried.length) t.diagnostic(`tried twice: ${retried.join("; ")}`);
  t.diagnostic(`${ran} runbook commands ran, ${skipped} with placeholders skipped, ${files.length} files`);
  assert.ok(ran >= 100, `only ${ran} commands ran`);
  assert.deepEqual(
    failures,
    [],
    `${failures.length} of ${ran} runbook commands failed:\n${failures.join("\n")}`,
  );
});
