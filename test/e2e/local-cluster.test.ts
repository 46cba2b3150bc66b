import assert from "node:assert/strict";
import { type ChildProcess, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { spawnLocalCluster, threeFreePorts } from "../helpers/local-cluster.js";

const root = new URL("../../../", import.meta.url).pathname;
const work = mkdtempSync(join(tmpdir(), "signing-walkthrough-"));
let cluster: ChildProcess | undefined;

after(async () => {
  if (cluster && cluster.exitCode === null) {
    const exited = new Promise((r) => cluster?.once("exit", r));
    cluster.kill("SIGTERM");
    await exited;
  }
  rmSync(work, { recursive: true, force: true });
});

test("npm start's cluster runs the README walkthrough as written", async () => {
  const base = await threeFreePorts();
  const stateDir = join(work, ".local");
  const started = spawnLocalCluster(stateDir, base);
  cluster = started.cluster;
  const clusterJson = join(stateDir, "cluster.json");
  for (let i = 0; i < 300 && !existsSync(clusterJson); i++) {
    assert.equal(cluster.exitCode, null, started.output());
    await sleep(100);
  }
  const info = JSON.parse(readFileSync(clusterJson, "utf8"));
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
    cwd: work,
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(run.status, 0, `walkthrough failed:\n${run.stdout}\n${run.stderr}`);
  assert.match(run.stdout, /"status":"queued"/);
  assert.match(run.stderr, /Good signature from "signing-cluster dev key/);
});
