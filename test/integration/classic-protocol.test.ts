import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import request from "supertest";
import { fetchSignature, sha1 } from "../helpers/api.js";
import { TestCluster } from "../helpers/cluster.js";
import { gpgVerify } from "../helpers/verify.js";

let cluster: TestCluster;
before(async () => {
  cluster = await TestCluster.start({ nodes: 1 });
});
after(() => cluster?.stop());

async function classicToken(url: string): Promise<string> {
  const res = await request(url)
    .post("/token")
    .set("Authorization", cluster.basicAuth)
    .type("form")
    .send("slave_ip=127.0.0.1&duration=600");
  assert.equal(res.status, 200, res.text);
  assert.match(res.headers["content-type"] ?? "", /^text\/plain/);
  return res.text;
}

test("the classic client's exact sequence works unchanged", async () => {
  const { url } = cluster.node(0);
  // A large file from another build keeps the single signing worker busy, so that this
  // client's file is still pending when it first polls, as on a loaded production node.
  const blocker = randomBytes(32 * 1024 * 1024);
  const blockerUpload = await request(url)
    .post("/sign/gpg")
    .field("sha1", sha1(blocker))
    .field("filename", "big.tar")
    .field("token", await classicToken(url))
    .field("nonce", "")
    .attach("filedata", blocker, "big.tar");
  assert.equal(blockerUpload.status, 202, blockerUpload.text);

  const token = await classicToken(url);
  const file = Buffer.from("0123456789abcdef  firefox-1.0.tar.bz2\n");
  const digest = sha1(file);

  const first = await request(url).get(`/sign/gpg/${digest}`);
  assert.equal(first.status, 404);
  assert.equal(first.headers["x-pending"], undefined, "unknown file must not look pending");

  const upload = await request(url)
    .post("/sign/gpg")
    .field("sha1", digest)
    .field("filename", "SHA512SUMS")
    .field("token", token)
    .field("nonce", "")
    .attach("filedata", file, "SHA512SUMS");
  assert.equal(upload.status, 202, upload.text);
  const nonce = upload.headers["x-nonce"];
  assert.ok(nonce && nonce !== "", "202 carries the next nonce");

  const pending = await request(url).get(`/sign/gpg/${digest}`);
  assert.equal(pending.status, 404);
  assert.equal(pending.headers["x-pending"], "True");

  let done: request.Response | undefined;
  for (let i = 0; i < 60 && !done; i++) {
    await sleep(1000);
    const res = await fetchSignature(url, "gpg", digest);
    if (res.status === 200) done = res;
    else assert.equal(res.headers["x-pending"], "True", `poll ${i}: ${res.status} ${res.text}`);
  }
  assert.ok(done, "signed within 60 polls");
  const body = done.body as Buffer;
  assert.equal(sha1(body), done.headers["x-sha1-digest"]);
  assert.match(body.toString(), /^-----BEGIN PGP SIGNATURE-----/);
  const verified = gpgVerify(readFileSync(cluster.state.keys.gpg.publicKeyFile, "utf8"), file, body);
  assert.ok(verified.ok, verified.output);
});
