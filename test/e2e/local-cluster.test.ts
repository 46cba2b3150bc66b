import assert from "node:assert/strict";
import { type ChildProcess, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, type TestContext, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { spawnLocalCluster, threeFreePorts } from "../helpers/local-cluster.js";

const root = new URL("../../../", import.meta.url).pathname;
const work = mkdtempSync(join(tmpdir(), "signing-walkthrough-"));
after(() => rmSync(work, { recursive: true, force: true }));

async function stop(cluster: ChildProcess): Promise<void> {
  if (cluster.exitCode !== null) return;
  const exited = new Promise((r) => cluster.once("exit", r));
  cluster.kill("SIGTERM");
  await exited;
}

/** `npm start` in a directory of its own, stopped when the test ends; its cluster.json once written. */
async function startCluster(t: TestContext, name: string, env: Record<string, string> = {}) {
  const dir = join(work, name);
  mkdirSync(dir);
  const base = await threeFreePorts();
  const stateDir = join(dir, ".local");
  const started = spawnLocalCluster(stateDir, base, env);
  t.after(() => stop(started.cluster));
  const clusterJson = join(stateDir, "cluster.json");
  for (let i = 0; i < 300 && !existsSync(clusterJson); i++) {
    assert.equal(started.cluster.exitCode, null, started.output());
    await sleep(100);
  }
  return { dir, base, stateDir, started, info: JSON.parse(readFileSync(clusterJson, "utf8")) };
}

/** The README's walkthrough block, run by bash in `dir` against the nodes from `base` on. */
function runWalkthrough(dir: string, base: number) {
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const block = /<!-- walkthrough[^>]*-->\s*```sh\n([\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(block, "README has the walkthrough block");
  const script = block.replace(
    /127\.0\.0\.1:911([0-2])/g,
    (_m, i: string) => `127.0.0.1:${base + Number(i)}`,
  );
  // The walkthrough's throw-away keyring starts a gpg-agent: stop it with the keyring.
  const cleanup = 'gpgconf --kill all; rm -rf "$GNUPGHOME"';
  const run = spawnSync("bash", ["-euo", "pipefail", "-c", `trap '${cleanup}' EXIT\n${script}`], {
    cwd: dir,
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(run.status, 0, `walkthrough failed:\n${run.stdout}\n${run.stderr}`);
  return run;
}

test("npm start's cluster runs the README walkthrough as written", async (t) => {
  const { dir, base, started, info } = await startCluster(t, "files");
  assert.deepEqual(
    info.nodes,
    [0, 1, 2].map((i) => `http://127.0.0.1:${base + i}`),
  );
  assert.match(info.redisUrl, /^redis:\/\/127\.0\.0\.1:\d+$/);
  assert.ok(
    existsSync(info.keys.gpg) && existsSync(info.keys.sshsig) && existsSync(info.issuer.passwordFile),
  );
  // cluster.json is written just before the banner: give the pipe a moment to deliver it.
  for (let i = 0; i < 50 && !/signing cluster is up/.test(started.output()); i++) await sleep(100);
  assert.match(started.output(), /signing cluster is up/);
  assert.equal(info.monitor, `http://127.0.0.1:${base + 10}`);
  const monitorReady = await fetch(`${info.monitor}/readyz`);
  assert.equal(monitorReady.status, 200);

  const run = runWalkthrough(dir, base);
  assert.match(run.stdout, /"status":"queued"/);
  assert.match(run.stderr, /Good signature from "signing-cluster dev key/);
});

test("SIGNING_KEYS=softhsm npm start: the walkthrough signs with keys in a SoftHSM2 token of the state dir", async (t) => {
  const { dir, base, stateDir, info } = await startCluster(t, "softhsm", { SIGNING_KEYS: "softhsm" });
  // The token is the state dir's own; the nodes sign through it, with no key file configured.
  assert.ok(existsSync(join(stateDir, "softhsm", "softhsm2.conf")));
  const nodeConfig = readFileSync(join(stateDir, "node.yaml"), "utf8");
  assert.match(nodeConfig, /pkcs11:/);
  assert.doesNotMatch(nodeConfig, /keyFile:/);
  const ready = (await (await fetch(`${info.nodes[0]}/readyz`)).json()) as {
    checks: { keys: { detail: string } };
  };
  assert.equal(ready.checks.keys.detail, "2 formats loaded");

  const run = runWalkthrough(dir, base);
  assert.match(run.stderr, /Good signature from "signing-cluster dev key \(SoftHSM2\)/);
});
