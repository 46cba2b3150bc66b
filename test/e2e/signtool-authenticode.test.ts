import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ProcessCluster } from "../../scripts/process-cluster.js";
import { sha256 } from "../helpers/api.js";
import { minimalPe, osslsigncodeVerify, powershellScript } from "../helpers/authenticode.js";
import { fetchToken, hosts, signtool } from "../helpers/signtool.js";

/**
 * signtool -f authenticode against two real node processes: the signed file is written whole
 * (beside the input, into --output-dir, or in place) and `osslsigncode verify` accepts it
 * against the dev CA.
 */
const ADMIN = new URL("../../src/bin/signing-admin.js", import.meta.url).pathname;
const work = mkdtempSync(join(tmpdir(), "signtool-authenticode-"));
let cluster: ProcessCluster;

before(async () => {
  cluster = await ProcessCluster.start({ nodes: 2, authenticode: true });
  await fetchToken(work, cluster.urls, cluster.state.issuer, "token");
});
after(async () => {
  await cluster?.stop();
  rmSync(work, { recursive: true, force: true });
});

const caFile = () => cluster.state.codeSigning?.caFile as string;
const sign = (args: string[]) =>
  signtool(work, [
    "sign",
    "-t",
    "token",
    "-n",
    "nonce",
    ...hosts(cluster.urls),
    "-f",
    "authenticode",
    ...args,
  ]);

function assertVerifies(file: string): void {
  const v = osslsigncodeVerify(file, caFile());
  assert.ok(v.ok, v.output);
}

describe("signing-admin keys test with authenticode", () => {
  test("each node signs an authenticode probe (a PowerShell script) and it carries the served certificate", async () => {
    const clusterFile = join(work, "cluster.json");
    const { user, passwordFile } = cluster.state.issuer;
    writeFileSync(
      clusterFile,
      JSON.stringify({ redisUrl: cluster.redis.url, nodes: cluster.urls, issuer: { user, passwordFile } }),
    );
    const admin = spawnSync(process.execPath, [ADMIN, "--cluster", clusterFile, "--json", "keys", "test"], {
      cwd: work,
      encoding: "utf8",
      timeout: 120_000,
    });
    assert.equal(admin.status, 0, `${admin.stdout}${admin.stderr}`);
    const probes = (JSON.parse(admin.stdout) as { probes: { format: string; ok: boolean; detail: string }[] })
      .probes;
    const authenticode = probes.filter((p) => p.format === "authenticode");
    assert.equal(authenticode.length, 2);
    for (const p of authenticode) assert.deepEqual([p.ok, p.detail], [true, "verified"]);
  });
});

describe("signtool -f authenticode", () => {
  test("by default the signed file goes beside its input as NAME.signed.EXT; the input is left as it was", async () => {
    const exe = join(work, "tool.exe");
    const ps1 = join(work, "install.ps1");
    writeFileSync(exe, minimalPe());
    writeFileSync(ps1, powershellScript());
    const run = await sign([exe, ps1]);
    assert.equal(run.code, 0, run.stderr);
    assertVerifies(join(work, "tool.signed.exe"));
    assertVerifies(join(work, "install.signed.ps1"));
    assert.equal(sha256(readFileSync(exe)), sha256(minimalPe()));
  });

  test("--output-dir keeps the name", async () => {
    const exe = join(work, "other.exe");
    const pe = minimalPe();
    pe.write("other", 0x300, "latin1");
    writeFileSync(exe, pe);
    const out = join(work, "signed");
    mkdirSync(out);
    const run = await sign(["--output-dir", out, exe]);
    assert.equal(run.code, 0, run.stderr);
    assertVerifies(join(out, "other.exe"));
  });

  test("--in-place replaces the file with its signed copy, and leaves no temp file", async () => {
    const dir = join(work, "in-place");
    mkdirSync(dir);
    const exe = join(dir, "app.exe");
    const pe = minimalPe();
    pe.write("in-place", 0x300, "latin1");
    writeFileSync(exe, pe, { mode: 0o755 });
    const run = await sign(["--in-place", exe]);
    assert.equal(run.code, 0, run.stderr);
    assert.notEqual(sha256(readFileSync(exe)), sha256(pe));
    assertVerifies(exe);
    assert.deepEqual(readdirSync(dir), ["app.exe"]);
    assert.equal(statSync(exe).mode & 0o777, 0o755, "an executable stays one");
  });

  test("--in-place with a detached format is a usage error, before any upload", async () => {
    const exe = join(work, "tool.exe");
    const run = await signtool(work, [
      "sign",
      "-t",
      "token",
      "-n",
      "nonce",
      ...hosts(cluster.urls),
      "-f",
      "gpg",
      "--in-place",
      exe,
    ]);
    assert.notEqual(run.code, 0);
    assert.match(run.stderr, /--in-place/);
    assert.equal(existsSync(`${exe}.asc`), false);
  });
});
