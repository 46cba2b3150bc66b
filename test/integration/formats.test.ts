import assert from "node:assert/strict";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import * as openpgp from "openpgp";
import request from "supertest";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { minisignPublicKey } from "../../src/signing/formats/minisign.js";
import { fetchSignature, getToken, sha1, sha256, upload } from "../helpers/api.js";
import { clearsignVerify, minisignVerify } from "../helpers/verify.js";

let cluster: TestCluster;
let a: string;
let b: string;
before(async () => {
  cluster = await TestCluster.start({ nodes: 2 });
  a = cluster.node(0).url;
  b = cluster.node(1).url;
});
after(() => cluster?.stop());

/** The classic flow: upload on one node without waiting, poll the other by sha1 until signed. */
async function classicSign(format: string, data: Buffer, filename: string): Promise<Buffer> {
  const token = await getToken(a, cluster.basicAuth);
  const up = await upload(a, { format, token, nonce: "", data, filename });
  assert.equal(up.status, 202, up.text);
  const res = await fetchSignature(b, format, sha1(data), 30);
  assert.equal(res.status, 200, String(res.body));
  assert.equal(res.headers["x-sha1-digest"], sha1(res.body));
  assert.equal(res.headers["x-sha256-digest"], sha256(res.body));
  return res.body;
}

const RELEASE = Buffer.from(
  [
    "Origin: Signing Cluster",
    "Suite: stable",
    "Date: Sun, 06 Dec 2026 21:00:00 UTC",
    "-- a line that starts with a dash  ",
    "From here on, a line gpg dash-escapes too",
    "SHA256:",
    " e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 0 main/binary-amd64/Packages",
    "",
  ].join("\n"),
);

describe("minisign and gpg-clearsign through two nodes", () => {
  test("/formats lists both with their kind and suffix; /keys/minisign is the dev key in minisign's format", async () => {
    const res = await request(a).get("/formats");
    assert.equal(res.status, 200);
    const byName = new Map(
      (res.body.formats as { name: string; kind: string; suffix: string }[]).map((f) => [f.name, f]),
    );
    assert.deepEqual(
      [byName.get("minisign")?.kind, byName.get("minisign")?.suffix],
      ["detached", ".minisig"],
    );
    assert.deepEqual(
      [byName.get("gpg-clearsign")?.kind, byName.get("gpg-clearsign")?.suffix],
      ["clearsigned", ".asc"],
    );
    const pub = await request(b).get("/keys/minisign");
    assert.equal(pub.text, readFileSync(cluster.state.keys.minisign.publicKeyFile, "utf8"));
  });

  test("minisign: uploaded to one node, fetched from the other, verified by minisign -V; another key fails", async () => {
    const data = randomBytes(200_000);
    const sig = await classicSign("minisign", data, "app-1.0.tar.gz");
    const pub = (await request(a).get("/keys/minisign")).text;
    const v = minisignVerify(pub, data, sig);
    assert.ok(v.ok, v.output);
    assert.match(v.output, /Trusted comment: timestamp:\d+\tfile:app-1\.0\.tar\.gz\thashed/);
    assert.equal(minisignVerify(pub, Buffer.concat([data, Buffer.from("x")]), sig).ok, false);
    const other = minisignPublicKey({ publicKey: generateKeyPairSync("ed25519").publicKey });
    const wrong = minisignVerify(other, data, sig);
    assert.equal(wrong.ok, false, wrong.output);
  });

  test("gpg-clearsign: a Release becomes an InRelease that gpg --verify and gpgv accept, the text unchanged; another key fails", async () => {
    const signed = await classicSign("gpg-clearsign", RELEASE, "Release");
    assert.match(signed.toString(), /^-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n/);
    assert.match(signed.toString(), /\n- -- a line that starts with a dash {2}\n- From here on/);
    const pub = readFileSync(cluster.state.keys.gpg.publicKeyFile, "utf8");
    assert.equal(
      (await request(b).get("/keys/gpg-clearsign")).text.trim(),
      (await request(b).get("/keys/gpg")).text.trim(),
    );
    const v = clearsignVerify(pub, signed);
    assert.ok(v.ok, v.output);
    assert.equal(v.text.replace(/[ \t]+$/gm, ""), RELEASE.toString().replace(/[ \t]+$/gm, ""));
    const { publicKey: otherKey } = await openpgp.generateKey({
      type: "ecc",
      curve: "curve25519Legacy",
      userIDs: [{ name: "not the signer", email: "other@signing.invalid" }],
      format: "armored",
    });
    const wrong = clearsignVerify(otherKey, signed);
    assert.equal(wrong.ok, false, wrong.output);
  });

  test("gpg-clearsign refuses binary input and over-long lines with 400 UNSUPPORTED_INPUT; the nonce chain goes on", async () => {
    const token = await getToken(a, cluster.basicAuth);
    const binary = Buffer.concat([Buffer.from("text then a NUL"), Buffer.from([0]), randomBytes(64)]);
    const r1 = await upload(a, { format: "gpg-clearsign", token, nonce: "", data: binary, wait: 5 });
    assert.equal(r1.status, 400, r1.text);
    assert.equal(r1.body.error.code, "UNSUPPORTED_INPUT");
    assert.match(r1.body.error.message, /gpg-clearsign cannot sign this file: .*NUL/);
    const nonce = r1.headers["x-nonce"] as string;
    const long = Buffer.from(`${"x".repeat(20_000)}\n`);
    const r2 = await upload(b, { format: "gpg-clearsign", token, nonce, data: long });
    assert.equal(r2.status, 400, r2.text);
    assert.equal(r2.body.error.code, "UNSUPPORTED_INPUT");
    assert.match(r2.body.error.message, /line 1 is longer than/);
    // Nothing was queued for either: a poll finds no job.
    assert.equal((await fetchSignature(a, "gpg-clearsign", sha256(binary))).status, 404);
    const text = Buffer.from("Version: 1.0\n");
    const r3 = await upload(a, {
      format: "gpg-clearsign",
      token,
      nonce: r2.headers["x-nonce"] as string,
      data: text,
      wait: 10,
    });
    assert.equal(r3.status, 202, r3.text);
    const v = clearsignVerify(
      readFileSync(cluster.state.keys.gpg.publicKeyFile, "utf8"),
      Buffer.from(r3.body.signature),
    );
    assert.ok(v.ok, v.output);
  });
});
