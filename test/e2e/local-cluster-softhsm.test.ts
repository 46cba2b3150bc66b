import assert from "node:assert/strict";
import { type ChildProcess, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { spawnLocalCluster, threeFreePorts } from "../helpers/local-cluster.js";

const root = new URL("../../../", import.meta.url).pathname;
const work = mkdtempSync(join(tmpdir(), "signing-softhsm-walkthrough-"));
let cluster: ChildProcess | undefined;

after(async () => {
  if (cluster && cluster.exitCode === null) {
    const exited = new Promise((r) => cluster?.once("exit", r));
    cluster.kill("SIGTERM");
    await exited;
  }
  rmSync(work, { recursive: true, force: true });
});

test("SIGNING_KEYS=softhsm npm start: the walkthrough signs with keys in a SoftHSM2 token of the state dir", async () => {
  const base = await threeFreePorts();
  const stateDir = join(work, ".local");
  const started = spawnLocalCluster(stateDir, base, { SIGNING_KEYS: "softhsm" });
  cluster = started.cluster;
  const clusterJson = join(stateDir, "cluster.json");
  for (let i = 0; i < 300 && !existsSync(clusterJson); i++) {
    assert.equal(cluster.exitCode, null, started.output());
    await sleep(100);
  }
  const info = JSON.parse(readFileSync(clusterJson, "utf8"));
  // The token is the state dir's own; the nodes sign through it, with no key file configured.
  assert.ok(existsSync(join(stateDir, "softhsm", "softhsm2.conf")));
  const nodeConfig = readFileSync(join(stateDir, "node.yaml"), "utf8");
  assert.match(nodeConfig, /pkcs11:/);
  assert.doesNotMatch(nodeConfig, /keyFile:/);
  const ready = (await (await fetch(`${info.nodes[0]}/readyz`)).json()) as {
    checks: { keys: { detail: string } };
  };
  assert.equal(ready.checks.keys.detail, "2 formats loaded");

  const readme = readFileSync(join(root, "README.md"), "utf8");
  const block = /<!-- walkthrough[^>]*-->\s*```sh\n([\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(block, "README has the walkthrough block");
  const script = block.replace(
    /127\.0\.0\.1:911([0-2])/g,
    (_m, i: string) => `127.0.0.1:${base + Number(i)}`,
  );
  const cleanup = 'gpgconf --kill all; rm -rf "$GNUPGHOME"';
  const run = spawnSync("bash", ["-euo", "pipefail", "-c", `trap '${cleanup}' EXIT\n${script}`], {
    cwd: work,
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(run.status, 0, `walkthrough failed:\n${run.stdout}\n${run.stderr}`);
  assert.match(run.stderr, /Good signature from "signing-cluster dev key \(SoftHSM2\)/);
});
