import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import request from "supertest";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { fetchSignature, getToken, sha256, upload } from "../helpers/api.js";
import { minimalPe, osslsigncodeVerify } from "../helpers/authenticode.js";

/**
 * Defects found by an outside probe of the recent surfaces (authenticode, minisign,
 * gpg-clearsign, size limits, the error table). Each test states the documented behaviour;
 * they fail until the product is fixed.
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

describe("probe findings", () => {
  test("authenticode: the signed .exe is a valid Authenticode PE even if the same bytes were uploaded as a .ps1 before", async () => {
    // osslsigncode signs by the filename's extension: as .ps1 it appends a PowerShell
    // signature comment. The result is cached by the input's sha256 alone, so the later .exe
    // upload answers "cached" and every node serves the script-signed (unsigned) PE.
    const pe = minimalPe(2048);
    randomBytes(32).copy(pe, 0x300);
    const asScript = await uploadFresh(0, "authenticode", pe, "tool.ps1", 0);
    assert.equal(asScript.status, 202, asScript.text);
    const first = await fetchSignature(url(0), "authenticode", sha256(pe), 30);
    assert.equal(first.status, 200);

    const asExe = await uploadFresh(1, "authenticode", pe, "tool.exe", 0);
    assert.equal(asExe.status, 202, asExe.text);
    const got = await fetchSignature(url(1), "authenticode", sha256(pe), 30);
    assert.equal(got.status, 200);
    const file = join(work, "tool.signed.exe");
    writeFileSync(file, got.body as Buffer);
    const caFile = cluster.state.codeSigning?.caFile as string;
    const verified = osslsigncodeVerify(file, caFile);
    assert.ok(verified.ok, `the .exe served is not a signed PE:\n${verified.output}`);
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
