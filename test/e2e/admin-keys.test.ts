/**
 * `signing-admin keys list` and `keys test` against real nodes: two node processes with the
 * dev file keys, then one node whose keys are in a SoftHSM2 token (ECDSA P-256 for sshsig,
 * Ed25519 for gpg) that is pulled mid-run. The probes go through the nodes' real upload path
 * and are checked by the CLI against the keys the nodes serve (those checks are themselves
 * tested against gpg's and ssh-keygen's signatures in test/signing/client-verify.test.ts).
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { ProcessCluster } from "../../scripts/process-cluster.js";
import { SoftHsmToken } from "../../scripts/softhsm.js";
import { type Run, runAdmin } from "../helpers/admin-cli.js";
import { hsmFormats } from "../helpers/hsm-formats.js";
import { sample } from "../helpers/metrics.js";

const work = mkdtempSync(join(tmpdir(), "signing-admin-keys-"));
after(() => rmSync(work, { recursive: true, force: true }));

/** The real CLI as a subprocess, with this cluster file and env. */
function admin(clusterFile: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return runAdmin(["--cluster", clusterFile, ...args], { cwd: work, env });
}

interface ListJson {
  ok: boolean;
  keys: {
    node: string;
    format: string;
    backend?: string;
    algorithm?: string;
    fingerprint?: string;
    expiresAt?: string | null;
    error?: string;
  }[];
}
interface TestJson {
  ok: boolean;
  probes: { node: string; format: string; backend?: string; ok: boolean; detail: string }[];
}

const scrape = async (url: string) => (await fetch(`${url}/metrics`)).text();
const keyOps = (text: string, format: string, backend: string, result: string) =>
  sample(text, "signing_key_operations_total", { format, backend, result }) ?? 0;

describe("file keys on two node processes", () => {
  let cluster: ProcessCluster;
  const clusterFile = join(work, "cluster.json");

  before(async () => {
    cluster = await ProcessCluster.start({ nodes: 2 });
    writeFileSync(
      clusterFile,
      JSON.stringify({
        redisUrl: cluster.redis.url,
        nodes: cluster.urls,
        issuer: { user: cluster.state.issuer.user, passwordFile: cluster.state.issuer.passwordFile },
      }),
    );
  });
  after(() => cluster?.stop());

  test("keys list: every node's format, backend, algorithm, fingerprint and expiry, as a table and --json", async () => {
    const json = await admin(clusterFile, ["--json", "keys", "list"]);
    assert.equal(json.code, 0, json.stderr);
    const list = JSON.parse(json.stdout) as ListJson;
    assert.equal(list.ok, true);
    assert.equal(list.keys.length, 8);
    for (const url of cluster.urls) {
      for (const format of ["gpg", "gpg-clearsign", "sshsig", "minisign"]) {
        const row = list.keys.find((k) => k.node === url && k.format === format);
        assert.ok(row, `${url} ${format}`);
        const served = (await fetch(`${url}/keys/${format}`)).headers.get("x-key-fingerprint");
        assert.deepEqual(
          [row.backend, row.algorithm, row.fingerprint, row.expiresAt],
          ["file", "ed25519", served, null],
        );
      }
    }
    const human = await admin(clusterFile, ["keys", "list"]);
    assert.equal(human.code, 0, human.stderr);
    const lines = human.stdout.trim().split("\n");
    assert.match(lines[0] ?? "", /^NODE\s+FORMAT\s+BACKEND\s+ALGORITHM\s+FINGERPRINT\s+EXPIRES$/);
    assert.equal(lines.length, 9);
    for (const line of lines.slice(1))
      assert.match(line, /\s(gpg|gpg-clearsign|sshsig|minisign)\s+file\s+ed25519\s+\S+\s+never$/);
  });

  test("keys test: a probe per node and format signed over the upload path and verified; each one counted by the node that signed it", async () => {
    const before = await Promise.all(cluster.urls.map(scrape));
    const run = await admin(clusterFile, ["--json", "keys", "test"]);
    assert.equal(run.code, 0, `${run.stdout}${run.stderr}`);
    const report = JSON.parse(run.stdout) as TestJson;
    assert.equal(report.ok, true);
    assert.equal(report.probes.length, 8);
    for (const p of report.probes) assert.deepEqual([p.ok, p.detail, p.backend], [true, "verified", "file"]);
    const afterScrape = await Promise.all(cluster.urls.map(scrape));
    for (const [i, text] of afterScrape.entries())
      for (const format of ["gpg", "gpg-clearsign", "sshsig", "minisign"])
        assert.equal(
          keyOps(text, format, "file", "ok") - keyOps(before[i] as string, format, "file", "ok"),
          // A minisign signature is two raw ones: over the file's digest, then over that and the trusted comment.
          format === "minisign" ? 2 : 1,
          `${cluster.urls[i]} ${format}`,
        );
    const human = await admin(clusterFile, ["keys", "test"]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /^ok: 8 probes signed and verified$/m);
  });

  test("keys test fails naming the node: wrong issuer password, a node down", async () => {
    const wrong = await admin(clusterFile, ["keys", "test"], {
      SIGNING_ADMIN_ISSUER_PASSWORD: "not-the-password",
    });
    assert.equal(wrong.code, 1, wrong.stdout);
    assert.match(wrong.stdout, /POST \/token: 401 BAD_CREDENTIALS/);
    const down = cluster.urls[1] as string;
    await (cluster.nodes[1] as { stop(): Promise<void> }).stop();
    const run = await admin(clusterFile, ["keys", "test"]);
    assert.equal(run.code, 1, run.stdout);
    assert.match(run.stdout, new RegExp(`^FAILED: ${down} -$`, "m"));
    assert.match(run.stdout, /unreachable: ECONNREFUSED/);
    const list = await admin(clusterFile, ["keys", "list"]);
    assert.equal(list.code, 1, list.stdout);
    assert.match(list.stdout, new RegExp(`${down}\\s+-.*unreachable`));
  });
});

describe("keys in a SoftHSM2 token, pulled mid-run", () => {
  let token: SoftHsmToken;
  let cluster: TestCluster;
  const clusterFile = join(work, "cluster-hsm.json");

  before(async () => {
    token = SoftHsmToken.create(mkdtempSync(join(tmpdir(), "softhsm-")), {
      keys: [
        { label: "gpg-key", id: "01", type: "EC:edwards25519" },
        { label: "ssh-key", id: "02", type: "EC:prime256v1" },
      ],
    });
    // The module reads SOFTHSM2_CONF when it is initialized, in this process (the node's).
    process.env.SOFTHSM2_CONF = token.conf;
    // This token holds the gpg and sshsig keys only: the other formats are off.
    cluster = await TestCluster.start({ nodes: 1, overrides: hsmFormats(token, "gpg-key", "ssh-key") });
    writeFileSync(
      clusterFile,
      JSON.stringify({
        nodes: [cluster.node(0).url],
        issuer: { user: cluster.state.issuer.user, passwordFile: cluster.state.issuer.passwordFile },
      }),
    );
  });
  after(async () => {
    await cluster?.stop();
    token?.destroy();
  });

  test("list and test show the pkcs11 keys; with the token gone the test fails naming node and format, and the node counts unavailable signatures", async () => {
    const url = cluster.node(0).url;
    const list = JSON.parse((await admin(clusterFile, ["--json", "keys", "list"])).stdout) as ListJson;
    assert.deepEqual(list.keys.map((k) => [k.format, k.backend, k.algorithm]).sort(), [
      ["gpg", "pkcs11", "ed25519"],
      ["sshsig", "pkcs11", "ecdsa-p256"],
    ]);
    const ok = await admin(clusterFile, ["--json", "keys", "test"]);
    assert.equal(ok.code, 0, `${ok.stdout}${ok.stderr}`);
    for (const p of (JSON.parse(ok.stdout) as TestJson).probes)
      assert.deepEqual([p.ok, p.detail, p.backend], [true, "verified", "pkcs11"], p.format);

    const before = await scrape(url);
    token.remove();
    const failed = await admin(clusterFile, ["keys", "test"]);
    assert.equal(failed.code, 1, failed.stdout);
    assert.match(failed.stdout, new RegExp(`^FAILED: ${url} gpg, ${url} sshsig$`, "m"));
    assert.match(failed.stdout, /503 KEY_BACKEND_UNAVAILABLE/);
    const down = await scrape(url);
    for (const format of ["gpg", "sshsig"])
      assert.ok(
        keyOps(down, format, "pkcs11", "unavailable") > keyOps(before, format, "pkcs11", "unavailable"),
        format,
      );
    assert.equal(keyOps(down, "gpg", "pkcs11", "error"), 0);

    token.restore();
    let again = await admin(clusterFile, ["keys", "test"]);
    for (let i = 0; i < 50 && again.code !== 0; i++) {
      await sleep(200);
      again = await admin(clusterFile, ["keys", "test"]);
    }
    assert.equal(again.code, 0, again.stdout);
  });
});
