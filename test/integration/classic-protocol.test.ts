import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import request from "supertest";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { StoreKeys } from "../../src/store/keys.js";
import { fetchSignature, sha1, sha256 } from "../helpers/api.js";
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
  const token = await classicToken(url);
  const file = Buffer.from("0123456789abcdef  firefox-1.0.tar.bz2\n");
  const digest = sha1(file);

  const first = await request(url).get(`/sign/gpg/${digest}`);
  assert.equal(first.status, 404);
  assert.equal(first.headers["x-pending"], undefined, "unknown file must not look pending");

  // Another node holds the job for this file (as a node does while it signs): the classic
  // client's upload finds it in progress, and its polls see X-Pending until it is released.
  const redis = new Redis(cluster.redis.url);
  const keys = new StoreKeys("signing:");
  const job = keys.job("gpg", sha256(file));
  await redis.set(job, JSON.stringify({ state: "pending", node: "other-node" }), "PX", 30_000);
  try {
    // The classic client's form comes from a Python dict: under Python 2.7 its fields go out
    // as nonce, filedata, sha1, token, filename, so the file comes before its sha1.
    const upload = await request(url)
      .post("/sign/gpg")
      .field("nonce", "")
      .attach("filedata", file, "SHA512SUMS")
      .field("sha1", digest)
      .field("token", token)
      .field("filename", "SHA512SUMS");
    assert.equal(upload.status, 202, upload.text);
    assert.equal(upload.body.status, "in_progress");
    const nonce = upload.headers["x-nonce"];
    assert.ok(nonce && nonce !== "", "202 carries the next nonce");

    const pending = await request(url).get(`/sign/gpg/${digest}`);
    assert.equal(pending.status, 404);
    assert.equal(pending.headers["x-pending"], "True");

    // The other node dies: its lease ends, and the classic client's next upload signs here.
    await redis.del(job);
    const again = await request(url)
      .post("/sign/gpg")
      .field("nonce", nonce)
      .attach("filedata", file, "SHA512SUMS")
      .field("sha1", digest)
      .field("token", token)
      .field("filename", "SHA512SUMS");
    assert.equal(again.status, 202, again.text);
    assert.equal(again.body.status, "queued");
  } finally {
    redis.disconnect();
  }

  let done: request.Response | undefined;
  for (let i = 0; i < 60 && !done; i++) {
    const res = await fetchSignature(url, "gpg", digest);
    if (res.status === 200) done = res;
    else assert.equal(res.headers["x-pending"], "True", `poll ${i}: ${res.status} ${res.text}`);
    if (!done) await sleep(1000);
  }
  assert.ok(done, "signed within 60 polls");
  const body = done.body as Buffer;
  assert.equal(sha1(body), done.headers["x-sha1-digest"]);
  assert.match(body.toString(), /^-----BEGIN PGP SIGNATURE-----/);
  const verified = gpgVerify(readFileSync(cluster.state.keys.gpg.publicKeyFile, "utf8"), file, body);
  assert.ok(verified.ok, verified.output);
});

test("?digest=sha256 with ?wait: no sha1 hashed, and the answer carries the signature", async () => {
  const { url } = cluster.node(0);
  const file = Buffer.from(`sha256-only ${Date.now()}\n`);
  const refused = await request(url)
    .post("/sign/gpg?digest=sha256&wait=5")
    .field("sha1", sha1(file))
    .field("token", await classicToken(url))
    .field("nonce", "")
    .field("filename", "a.txt")
    .attach("filedata", file, "a.txt");
  assert.equal(refused.status, 400, refused.text);
  assert.equal(refused.body.error.code, "BAD_REQUEST");
  assert.equal((await request(url).post("/sign/gpg?digest=md5")).body.error.code, "BAD_REQUEST");

  // As signtool sends it: the sha256 after the file part.
  const res = await request(url)
    .post("/sign/gpg?digest=sha256&wait=5")
    .field("token", await classicToken(url))
    .field("nonce", "")
    .field("filename", "a.txt")
    .attach("filedata", file, "a.txt")
    .field("sha256", sha256(file));
  assert.equal(res.status, 202, res.text);
  assert.equal(res.body.status, "queued");
  assert.equal(res.body.sha256, sha256(file));
  assert.equal(res.body.sha1, undefined, "no sha1 was computed");
  const verified = gpgVerify(
    readFileSync(cluster.state.keys.gpg.publicKeyFile, "utf8"),
    file,
    Buffer.from(res.body.signature, "utf8"),
  );
  assert.ok(verified.ok, verified.output);
  // Not named by sha1, so not found by it; found by sha256.
  assert.equal((await fetchSignature(url, "gpg", sha1(file))).status, 404);
  assert.equal((await fetchSignature(url, "gpg", sha256(file))).status, 200);
});
