import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import request from "supertest";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { fetchSignature, getToken, sha1, sha256, upload } from "../helpers/api.js";
import {
  makeCodeSigningPki,
  minimalPe,
  osslsigncodeVerify,
  powershellScript,
} from "../helpers/authenticode.js";
import { gpgVerify } from "../helpers/verify.js";

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

/** The answer's body as bytes whatever its type (a signed file, or the 202's JSON). */
function asBytes(req: request.Test): request.Test {
  return req.buffer(true).parse((res, cb) => {
    const chunks: Buffer[] = [];
    res.on("data", (c: Buffer) => chunks.push(c));
    res.on("end", () => cb(null, Buffer.concat(chunks)));
  });
}

/** An upload with a fresh token; `wait` 0: the classic upload, without waiting. */
async function uploadOn(
  node: number,
  data: Buffer,
  filename: string,
  wait = 30,
  { bytes = false, acceptFile }: { bytes?: boolean; acceptFile?: boolean } = {},
) {
  const token = await getToken(cluster.node(node).url, cluster.basicAuth);
  const req = upload(cluster.node(node).url, {
    format: "authenticode",
    token,
    nonce: "",
    data,
    filename,
    wait,
    acceptFile: acceptFile ?? bytes, // asks for the signed file in the ?wait answer, as signtool does
  });
  return bytes ? asBytes(req) : req;
}

/** The signed file is what osslsigncode accepts against the dev CA, and only that CA. */
function assertVerifies(signed: Buffer, name: string): void {
  const file = join(work, `signed-${name}`);
  writeFileSync(file, signed);
  const verified = osslsigncodeVerify(file, caFile());
  assert.ok(verified.ok, verified.output);
  assert.equal(osslsigncodeVerify(file, otherCa).ok, false, "another CA does not vouch for it");
}

/** A 200 carrying a signed file: its digest headers are the body's. */
function assertSignedFile(res: request.Response, input: Buffer): Buffer {
  assert.equal(res.status, 200, String(res.body));
  const signed = res.body as Buffer;
  assert.equal(res.headers["content-type"], "application/octet-stream");
  assert.equal(res.headers["content-length"], String(signed.length));
  assert.equal(res.headers["x-sha1-digest"], sha1(signed));
  assert.equal(res.headers["x-sha256-digest"], sha256(signed));
  assert.notEqual(sha256(signed), sha256(input), "the output is the file with its signature in it");
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

/**
 * The classic protocol: upload on node 0 without waiting, fetch the result from node 1, and
 * verify it with osslsigncode.
 */
async function signedThroughTwoNodes(data: Buffer, filename: string): Promise<Buffer> {
  const res = await uploadOn(0, data, filename, 0);
  assert.equal(res.status, 202, res.text);
  const got = await fetchSignature(cluster.node(1).url, "authenticode", sha256(data), 30);
  const signed = assertSignedFile(got, data);
  assertVerifies(signed, filename);
  return signed;
}

/** A distinct minimal PE per test: identical bytes would be answered from an earlier test's result. */
function peMarked(mark: string, overlay = 0): Buffer {
  const pe = Buffer.concat([minimalPe(), randomBytes(overlay)]);
  pe.write(mark, 0x300, "latin1");
  return pe;
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

  test("?wait on the upload answers 200 with the signed file itself, headers as the GET's; it verifies", async () => {
    const pe = peMarked("waited");
    const res = await uploadOn(0, pe, "waited.exe", 30, { bytes: true });
    const signed = assertSignedFile(res, pe);
    assert.equal(res.headers["x-upload-status"], "queued");
    assert.ok(res.headers["x-nonce"], "the next nonce comes with the file, as with every upload answer");
    assertVerifies(signed, "waited.exe");
    // Exactly what any node's GET answers for it.
    const got = await fetchSignature(cluster.node(1).url, "authenticode", sha256(pe));
    for (const header of ["content-type", "content-length", "x-sha1-digest", "x-sha256-digest"])
      assert.equal(res.headers[header], got.headers[header], header);
    assert.ok(signed.equals(got.body as Buffer));
    // The same bytes again: the file again, from the spool, named cached.
    const again = await uploadOn(0, pe, "waited.exe", 30, { bytes: true });
    assert.ok(assertSignedFile(again, pe).equals(signed));
    assert.equal(again.headers["x-upload-status"], "cached");
  });

  test("a client that does not ask for the file (no Accept: application/octet-stream: classic clients, older signtools) gets the 202 on ?wait", async () => {
    const pe = peMarked("classic");
    const res = await uploadOn(0, pe, "classic.exe", 30);
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(res.body, { status: "queued", sha1: sha1(pe), sha256: sha256(pe) });
    const got = await fetchSignature(cluster.node(1).url, "authenticode", sha256(pe), 30);
    assertVerifies(assertSignedFile(got, pe), "classic.exe");
  });

  test("a wait that runs out before the file is signed answers 202 without it; the GET then serves it", async () => {
    const pe = peMarked("too-short", 32 * 1024);
    // One millisecond: the node looks once, well before osslsigncode has even started.
    const res = await uploadOn(0, pe, "slow.exe", 0.001, { bytes: true });
    assert.equal(res.status, 202, String(res.body));
    const answer = JSON.parse(String(res.body));
    assert.deepEqual(answer, { status: "queued", sha1: sha1(pe), sha256: sha256(pe) });
    assert.equal(res.headers["x-upload-status"], undefined);
    const got = await fetchSignature(cluster.node(1).url, "authenticode", sha256(pe), 30);
    assertVerifies(assertSignedFile(got, pe), "slow.exe");
  });

  test("a detached format's ?wait answer is unchanged: 202 JSON with the armored signature", async () => {
    const data = randomBytes(4096);
    const token = await getToken(cluster.node(0).url, cluster.basicAuth);
    const res = await upload(cluster.node(0).url, { format: "gpg", token, nonce: "", data, wait: 30 });
    assert.equal(res.status, 202, res.text);
    assert.match(res.headers["content-type"] ?? "", /^application\/json/);
    assert.deepEqual(Object.keys(res.body).sort(), ["sha1", "sha256", "signature", "status"]);
    assert.equal(res.body.status, "queued");
    assert.equal(res.headers["x-upload-status"], undefined);
    const publicKey = (await request(cluster.node(1).url).get("/keys/gpg")).text;
    const verified = gpgVerify(publicKey, data, Buffer.from(res.body.signature));
    assert.ok(verified.ok, verified.output);
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
    const res = await uploadOn(0, fake, "fake.exe", 30, { acceptFile: true });
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
