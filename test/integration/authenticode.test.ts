import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import request from "supertest";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { fetchSignature, getToken, sha256, upload } from "../helpers/api.js";
import {
  makeCodeSigningPki,
  minimalPe,
  osslsigncodeVerify,
  powershellScript,
} from "../helpers/authenticode.js";

/**
 * Issue 32, the authenticode format end to end: real nodes, real Redis, real osslsigncode. An
 * upload on node 0 is signed there into its spool; node 1 serves the signed file, which
 * `osslsigncode verify` accepts against the dev CA only.
 */
let cluster: TestCluster;
let work: string;
let otherCa: string;

let ownTmp: string;

before(async () => {
  // This process's nodes make their upload temp dirs in a tmpdir of their own, so the checks
  // below see no other test's (os.tmpdir() reads TMPDIR at every call).
  ownTmp = mkdtempSync(join(tmpdir(), "signing-authenticode-tmp-"));
  process.env.TMPDIR = ownTmp;
  // A small limit, so that an upload can cross it mid-file (past the multipart allowance, a
  // Content-Length over it is refused unread).
  const overrides = { signing: { formats: { authenticode: { maxSize: 64 * 1024 } } } };
  cluster = await TestCluster.start({ nodes: 2, authenticode: true, overrides });
  work = mkdtempSync(join(tmpdir(), "signing-authenticode-"));
  otherCa = makeCodeSigningPki(work).otherCaFile;
});
after(async () => {
  await cluster?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
  if (ownTmp) rmSync(ownTmp, { recursive: true, force: true });
});

/** Upload temp dirs of this process's nodes. */
const inputTempDirs = () => readdirSync(ownTmp).filter((n) => n.startsWith("signing-input-"));
const caFile = () => cluster.state.codeSigning?.caFile as string;

async function uploadOn(node: number, data: Buffer, filename: string) {
  const token = await getToken(cluster.node(node).url, cluster.basicAuth);
  return upload(cluster.node(node).url, {
    format: "authenticode",
    token,
    nonce: "",
    data,
    filename,
    wait: 30,
  });
}

/** Signs `data` through node 0, fetches the result from node 1, and verifies it with osslsigncode. */
async function signedThroughTwoNodes(data: Buffer, filename: string): Promise<Buffer> {
  const res = await uploadOn(0, data, filename);
  assert.equal(res.status, 202, res.text);
  const got = await fetchSignature(cluster.node(1).url, "authenticode", sha256(data), 30);
  assert.equal(got.status, 200, String(got.body));
  const signed = got.body as Buffer;
  assert.equal(got.headers["content-type"], "application/octet-stream");
  assert.equal(got.headers["x-sha256-digest"], sha256(signed));
  assert.notEqual(sha256(signed), sha256(data), "the output is the file with its signature in it");
  const file = join(work, `signed-${filename}`);
  writeFileSync(file, signed);
  const verified = osslsigncodeVerify(file, caFile());
  assert.ok(verified.ok, verified.output);
  assert.equal(osslsigncodeVerify(file, otherCa).ok, false, "another CA does not vouch for it");
  return signed;
}

/** signing_jobs_total{format="authenticode",result} on one node. */
async function jobsCounted(node: number, result: string): Promise<number> {
  const text = (await request(cluster.node(node).url).get("/metrics")).text;
  const line = new RegExp(
    `^signing_jobs_total\\{format="authenticode",result="${result}"\\} (\\d+)`,
    "m",
  ).exec(text);
  return Number(line?.[1] ?? 0);
}

describe("authenticode", () => {
  test("/formats lists it, embedded, with the certificate's fingerprint", async () => {
    const res = await request(cluster.node(1).url).get("/formats");
    assert.equal(res.status, 200);
    const entry = res.body.formats.find((f: { name: string }) => f.name === "authenticode");
    assert.ok(entry, JSON.stringify(res.body));
    assert.equal(entry.kind, "embedded");
    assert.match(entry.fingerprint, /^[0-9a-f]{64}$/);
  });

  test("a PE uploaded on one node is served signed by the other, and verifies", async () => {
    await signedThroughTwoNodes(minimalPe(), "tool.exe");
  });

  test("a PowerShell script is signed and verifies", async () => {
    const signed = await signedThroughTwoNodes(powershellScript(), "install.ps1");
    assert.match(signed.toString("utf8"), /# SIG # Begin signature block/);
  });

  test("a file of no type it signs is 400 UNSUPPORTED_INPUT, and no temp file stays", async () => {
    const res = await uploadOn(0, Buffer.from("not a windows file\n".repeat(10)), "notes.exe");
    assert.equal(res.status, 400, res.text);
    assert.equal(res.body.error.code, "UNSUPPORTED_INPUT");
    assert.deepEqual(inputTempDirs(), [], "every upload's temp file is removed");
  });

  test("a file that starts like a PE but that osslsigncode cannot sign is 400 UNSUPPORTED_INPUT on the upload and on any node's GET, not a failed job", async () => {
    const fake = Buffer.concat([
      Buffer.from("MZ"),
      Buffer.alloc(62),
      Buffer.from("no PE header here\n".repeat(20)),
    ]);
    const failedBefore = await jobsCounted(0, "failed");
    const res = await uploadOn(0, fake, "fake.exe");
    assert.equal(res.status, 400, res.text);
    assert.equal(res.body.error.code, "UNSUPPORTED_INPUT");
    assert.match(res.body.error.message, /PE, MSI, CAB, CAT or PowerShell/);
    const got = await fetchSignature(cluster.node(1).url, "authenticode", sha256(fake), 0);
    assert.equal(got.status, 400, String(got.body));
    assert.equal(JSON.parse(String(got.body)).error.code, "UNSUPPORTED_INPUT");
    assert.equal(await jobsCounted(0, "failed"), failedBefore, "not counted as our failure");
    assert.ok((await jobsCounted(0, "refused")) >= 1);
    assert.deepEqual(inputTempDirs(), []);
  });

  test("an upload refused after its file was read (a digest that does not match) leaves no temp file", async () => {
    const token = await getToken(cluster.node(0).url, cluster.basicAuth);
    const res = await upload(cluster.node(0).url, {
      format: "authenticode",
      token,
      nonce: "",
      data: minimalPe(),
      filename: "tool.exe",
      digest: "0".repeat(40),
    });
    assert.equal(res.status, 400, res.text);
    assert.equal(res.body.error.code, "DIGEST_MISMATCH");
    assert.deepEqual(inputTempDirs(), []);
  });

  test("an upload crossing maxSize mid-file is 413 FILE_TOO_LARGE, and its temp file is removed", async () => {
    const pe = Buffer.concat([minimalPe(), Buffer.alloc(100 * 1024)]);
    const res = await uploadOn(0, pe, "big.exe").catch((err: { response?: request.Response }) => {
      // The node may close the connection after its answer: the answer is what counts.
      if (err.response) return err.response;
      throw err;
    });
    assert.equal(res.status, 413, res.text);
    assert.equal(res.body.error.code, "FILE_TOO_LARGE");
    for (let i = 0; i < 50 && inputTempDirs().length; i++) await sleep(100);
    assert.deepEqual(inputTempDirs(), []);
  });
});
