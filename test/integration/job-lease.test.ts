import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { fetchSignature, getToken, sha256, upload } from "../helpers/api.js";
import { minimalPe } from "../helpers/authenticode.js";

/**
 * Probe finding: a job's lease (signing.jobLeaseMs, 30 s by default) is never renewed while
 * osslsigncode runs, though authenticode allows it timeoutMs (120 s by default). A signing that
 * outlasts the lease is still going, yet every node answers a plain 404 ("upload it") instead
 * of 404 + X-Pending, and the next upload signs the same file again on another node. Here an
 * osslsigncode that takes 3 s and a 1 s lease stand in for a large MSI and the defaults.
 */
let cluster: TestCluster;
let bin: string;
const savedPath = process.env.PATH;

before(async () => {
  bin = mkdtempSync(join(tmpdir(), "signing-probe-bin-"));
  const real = execFileSync("sh", ["-c", "command -v osslsigncode"], { encoding: "utf8" }).trim();
  const slow = join(bin, "osslsigncode");
  writeFileSync(slow, `#!/bin/sh\nsleep 3\nexec ${real} "$@"\n`);
  chmodSync(slow, 0o755);
  process.env.PATH = `${bin}:${savedPath}`;
  cluster = await TestCluster.start({
    nodes: 2,
    authenticode: true,
    overrides: { signing: { jobLeaseMs: 1000 } },
  });
});
after(async () => {
  await cluster?.stop();
  process.env.PATH = savedPath;
  if (bin) rmSync(bin, { recursive: true, force: true });
});

test("while osslsigncode still signs past the job lease, GET says pending (X-Pending) and a second upload signs nothing", async () => {
  const pe = minimalPe(1024);
  randomBytes(32).copy(pe, 0x300);
  const token = await getToken(cluster.node(0).url, cluster.basicAuth);
  const first = await upload(cluster.node(0).url, {
    format: "authenticode",
    token,
    nonce: "",
    data: pe,
    filename: "a.exe",
  });
  assert.equal(first.status, 202, first.text);
  await sleep(1800); // past the lease, well before the 3 s signing ends
  const got = await fetchSignature(cluster.node(1).url, "authenticode", sha256(pe));
  assert.equal(got.status, 404);
  assert.equal(got.headers["x-pending"], "True", `node 0 is still signing, yet: ${got.status} ${got.body}`);
  const token2 = await getToken(cluster.node(1).url, cluster.basicAuth);
  const second = await upload(cluster.node(1).url, {
    format: "authenticode",
    token: token2,
    nonce: "",
    data: pe,
    filename: "a.exe",
  });
  assert.equal(second.status, 202, second.text);
  assert.equal(second.body.status, "in_progress", "a second node starts signing the same file");
});
