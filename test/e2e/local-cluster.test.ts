import assert from "node:assert/strict";
import { type ChildProcess, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, type TestContext, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { minimalPe, osslsigncodeVerify, powershellScript } from "../../scripts/authenticode-files.js";
import { fetchSignature, getToken, sha1, upload } from "../helpers/api.js";
import { spawnLocalCluster, threeFreePorts } from "../helpers/local-cluster.js";
import { fetchToken, signCommand, signtool } from "../helpers/signtool.js";
import {
  clearsignVerify,
  gpgVerify,
  minisignVerify,
  sshVerify,
  type VerifyResult,
} from "../helpers/verify.js";

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

/** One format's inputs (one per path, so neither is the other's cache hit), signtool's output name, and its tool's check. */
interface FormatCase {
  format: string;
  /** The file signtool signs, and what it is named. */
  signtool: { name: string; data: Buffer; output: string };
  /** What the classic client uploads, and the name it gives. */
  classic: { name: string; data: Buffer };
  /** `name`: the input's, whose extension osslsigncode goes by. */
  verify: (data: Buffer, signed: Buffer, name: string) => VerifyResult;
}

/** Every format npm start's nodes sign, each checked by its own tool against what the nodes serve. */
async function formatCases(nodes: string[], stateDir: string, work: string): Promise<FormatCase[]> {
  const served = async (format: string) => (await fetch(`${nodes[1]}/keys/${format}`)).text();
  const [gpgKey, sshKey, minisignKey] = (await Promise.all(["gpg", "sshsig", "minisign"].map(served))) as [
    string,
    string,
    string,
  ];
  const caFile = join(stateDir, "code-signing", "ca.pem");
  const text = (what: string) => Buffer.from(`Origin: signing-cluster\nSuite: ${what}\n`);
  const authenticode = (_data: Buffer, signed: Buffer, name: string) => {
    const file = join(work, `verify-${name}`);
    writeFileSync(file, signed);
    return osslsigncodeVerify(file, caFile);
  };
  return [
    {
      format: "gpg",
      signtool: { name: "SHA512SUMS", data: text("gpg"), output: "SHA512SUMS.asc" },
      classic: { name: "SHA256SUMS", data: text("gpg, classic") },
      verify: (data, signed) => gpgVerify(gpgKey, data, signed),
    },
    {
      format: "gpg-clearsign",
      signtool: { name: "Release", data: text("clearsign"), output: "Release.asc" },
      classic: { name: "InRelease-source", data: text("clearsign, classic") },
      verify: (_data, signed) => clearsignVerify(gpgKey, signed),
    },
    {
      format: "sshsig",
      signtool: { name: "app.tar.xz", data: text("sshsig"), output: "app.tar.xz.sig" },
      classic: { name: "lib.tar.xz", data: text("sshsig, classic") },
      verify: (data, signed) => sshVerify(sshKey, "file", data, signed),
    },
    {
      format: "minisign",
      signtool: { name: "app.zip", data: text("minisign"), output: "app.zip.minisig" },
      classic: { name: "lib.zip", data: text("minisign, classic") },
      verify: (data, signed) => minisignVerify(minisignKey, data, signed),
    },
    {
      format: "authenticode",
      signtool: { name: "tool.exe", data: minimalPe(), output: "tool.signed.exe" },
      classic: { name: "install.ps1", data: powershellScript("classic") },
      verify: authenticode,
    },
  ];
}

test("npm start's cluster signs every format by signtool and by the classic protocol (upload on one node, GET on another), each checked by its own tool", async (t) => {
  const { dir, stateDir, info } = await startCluster(t, "formats");
  const nodes = info.nodes as string[];
  const cases = await formatCases(nodes, stateDir, dir);
  const password = readFileSync(info.issuer.passwordFile, "utf8").trim();
  const auth = `Basic ${Buffer.from(`${info.issuer.user}:${password}`).toString("base64")}`;
  const token = await getToken(nodes[0] as string, auth);
  await fetchToken(dir, nodes, info.issuer, "token");
  let nonce = "";
  for (const c of cases) {
    const { name: filename, data } = c.classic;
    const up = await upload(nodes[0] as string, { format: c.format, token, nonce, data, filename });
    assert.equal(up.status, 202, `${c.format}: ${up.text}`);
    nonce = up.headers["x-nonce"] as string;
    const got = await fetchSignature(nodes[2] as string, c.format, sha1(data), 30);
    assert.equal(got.status, 200, `${c.format}: ${String(got.body)}`);
    const classic = c.verify(data, got.body, filename);
    assert.ok(classic.ok, `${c.format}, classic: ${classic.output}`);

    writeFileSync(join(dir, c.signtool.name), c.signtool.data);
    const run = await signtool(dir, signCommand(nodes, ["-f", c.format, c.signtool.name]));
    assert.equal(run.code, 0, `${c.format}: ${run.stderr}`);
    const signed = c.verify(c.signtool.data, readFileSync(join(dir, c.signtool.output)), c.signtool.name);
    assert.ok(signed.ok, `${c.format}, signtool: ${signed.output}`);
  }
});
