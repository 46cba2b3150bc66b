import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import request from "supertest";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { fetchSignature, getToken, sha1, sha256, upload } from "../helpers/api.js";
import { minimalPe, osslsigncodeVerify } from "../helpers/authenticode.js";

/**
 * Edges an outside probe of the formats found (authenticode's script names, minisign's file
 * name, gpg-clearsign's line endings, the size limit, the error table), each as docs/api.md
 * says it behaves.
 */
let cluster: TestCluster;
let work: string;
const MAX_SIZE = 64 * 1024;

before(async () => {
  cluster = await TestCluster.start({
    nodes: 2,
    authenticode: true,
    overrides: { signing: { formats: { gpg: { maxSize: MAX_SIZE } } } },
  });
  work = mkdtempSync(join(tmpdir(), "signing-probe-"));
});
after(async () => {
  await cluster?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

const url = (i: number) => cluster.node(i).url;

/** An upload with a fresh token (its first nonce is empty). */
async function uploadFresh(node: number, format: string, data: Buffer, filename: string, wait = 30) {
  const token = await getToken(url(node), cluster.basicAuth);
  return upload(url(node), { format, token, nonce: "", data, filename, wait });
}

describe("format edges", () => {
  test("authenticode: a PE named as a script is refused, so the same bytes named .exe get a signed PE", async () => {
    // osslsigncode signs a script by its extension: a PE named .ps1 would get a script's
    // signature block, and results are cached by the input's sha256 alone.
    const pe = minimalPe(2048);
    randomBytes(32).copy(pe, 0x300);
    const asScript = await uploadFresh(0, "authenticode", pe, "tool.ps1", 0);
    assert.equal(asScript.status, 400, asScript.text);
    assert.equal(asScript.body.error.code, "UNSUPPORTED_INPUT");
    assert.match(asScript.body.error.message, /named as a script \(\.ps1\)/);

    const asExe = await uploadFresh(1, "authenticode", pe, "tool.exe", 0);
    assert.equal(asExe.status, 202, asExe.text);
    const got = await fetchSignature(url(0), "authenticode", sha256(pe), 30);
    assert.equal(got.status, 200);
    const file = join(work, "tool.signed.exe");
    writeFileSync(file, got.body as Buffer);
    const caFile = cluster.state.codeSigning?.caFile as string;
    const verified = osslsigncodeVerify(file, caFile);
    assert.ok(verified.ok, `the .exe served is not a signed PE:\n${verified.output}`);
  });

  test("authenticode: a PE under a name osslsigncode reads as another script kind (.ps1xml) is signed as the PE it is", async () => {
    const pe = minimalPe(2048);
    randomBytes(32).copy(pe, 0x300);
    const up = await uploadFresh(0, "authenticode", pe, "tool.ps1xml", 0);
    assert.equal(up.status, 202, up.text);
    const got = await fetchSignature(url(1), "authenticode", sha256(pe), 30);
    assert.equal(got.status, 200);
    const file = join(work, "tool-from-ps1xml.exe");
    writeFileSync(file, got.body as Buffer);
    const verified = osslsigncodeVerify(file, cluster.state.codeSigning?.caFile as string);
    assert.ok(verified.ok, `not a signed PE:\n${verified.output}`);
  });

  test("authenticode: a script named .psm1 after .ps1 is served the same signed file (one signature block for the three)", async () => {
    const script = Buffer.from(`Write-Output "${randomBytes(8).toString("hex")}"\r\n`);
    const first = await uploadFresh(0, "authenticode", script, "a.ps1", 0);
    assert.equal(first.status, 202, first.text);
    const signed = await fetchSignature(url(0), "authenticode", sha256(script), 30);
    assert.equal(signed.status, 200);
    const second = await uploadFresh(1, "authenticode", script, "a.psm1", 0);
    assert.equal(second.status, 202, second.text);
    assert.equal(second.body.status, "cached");
    const file = join(work, "a.signed.psm1");
    writeFileSync(file, signed.body as Buffer);
    const verified = osslsigncodeVerify(file, cluster.state.codeSigning?.caFile as string);
    assert.ok(verified.ok, verified.output);
    const xml = await uploadFresh(1, "authenticode", script, "a.ps1xml", 0);
    assert.equal(xml.status, 400, xml.text);
    assert.equal(xml.body.error.code, "UNSUPPORTED_INPUT");
  });

  test("minisign: the trusted comment names the file this upload named, not an earlier upload's name", async () => {
    const data = randomBytes(64);
    const first = await uploadFresh(0, "minisign", data, "malware.exe");
    assert.equal(first.status, 202, first.text);
    assert.match(first.body.signature, /\tfile:malware\.exe\t/);
    const second = await uploadFresh(1, "minisign", data, "release-1.0.tar.xz");
    assert.equal(second.status, 202, second.text);
    assert.match(
      second.body.signature,
      /\tfile:release-1\.0\.tar\.xz\t/,
      `status ${second.body.status}: ${second.body.signature}`,
    );
  });

  test("a file of exactly maxSize bytes is signed (413 is for larger files)", async () => {
    const data = randomBytes(MAX_SIZE);
    const res = await uploadFresh(0, "gpg", data, "exact.bin");
    assert.equal(res.status, 202, res.text);
  });

  test("gpg-clearsign: a lone CR at the end of the file (no LF after it) is 400 UNSUPPORTED_INPUT", async () => {
    // docs/api.md: line endings LF or CRLF; a lone CR is refused. The final "\r" is dropped
    // instead, and the signed message no longer has the file's bytes.
    const res = await uploadFresh(
      0,
      "gpg-clearsign",
      Buffer.from(`a ${randomBytes(4).toString("hex")}\nb\r`),
      "Release",
    );
    assert.equal(res.status, 400, res.text);
    assert.equal(res.body.error.code, "UNSUPPORTED_INPUT");
  });

  test("authenticode ?wait: Accept application/octet-stream;q=0 refuses the file, so the answer is the 202", async () => {
    const script = Buffer.from(`Write-Output "${randomBytes(8).toString("hex")}"\r\n`);
    const token = await getToken(url(0), cluster.basicAuth);
    const res = await request(url(0))
      .post("/sign/authenticode?wait=20")
      .set("Accept", "application/octet-stream;q=0, application/json")
      .field("sha1", sha1(script))
      .field("filename", "q0.ps1")
      .field("token", token)
      .field("nonce", "")
      .attach("filedata", script, "q0.ps1");
    assert.equal(res.status, 202, res.text);
    assert.equal(res.headers["content-type"]?.split(";")[0], "application/json");
  });

  test("?wait takes decimal seconds only: hex, exponents and an empty value are 400", async () => {
    for (const wait of ["0x10", "1e2", "", " 5", "-1", "Infinity"]) {
      const res = await request(url(0)).get(`/sign/gpg/${"a".repeat(40)}?wait=${encodeURIComponent(wait)}`);
      assert.equal(res.status, 400, `wait=${JSON.stringify(wait)}: ${res.status} ${res.text}`);
      assert.equal(res.body.error.code, "BAD_REQUEST");
    }
    const fine = await request(url(0)).get(`/sign/gpg/${"a".repeat(40)}?wait=0.5`);
    assert.equal(fine.status, 404, fine.text);
  });

  test("the wrong method on an existing path is 405 METHOD_NOT_ALLOWED, as the error table says", async () => {
    for (const [method, path] of [
      ["get", "/sign/gpg"],
      ["get", "/token"],
      ["post", "/formats"],
    ] as const) {
      const res = await request(url(0))[method](path);
      assert.equal(res.status, 405, `${method.toUpperCase()} ${path}: ${res.status} ${res.text}`);
      assert.equal(res.body.error.code, "METHOD_NOT_ALLOWED");
    }
  });
});
