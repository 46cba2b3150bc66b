import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, beforeEach, describe, test } from "node:test";
import { Redis } from "ioredis";
import request from "supertest";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { StoreKeys } from "../../src/store/keys.js";
import { fetchSignature, getToken, sha1, sha256, upload } from "../helpers/api.js";
import { jsonLogSink } from "../helpers/log-sink.js";

/**
 * Issue 32, whole-file results: an embedded format's output is stored once on the node that
 * signed it (ResultStore.putFile, the API the format layer calls), its record in Redis names
 * that node, and GET /sign on any node streams it from there. Real nodes, real Redis, real
 * files; the output here is random bytes standing in for a signed file (the formats come
 * separately).
 */
const keys = new StoreKeys("signing:");
const logLines: Record<string, unknown>[] = [];
let cluster: TestCluster;
let redis: Redis;
let work: string;

before(async () => {
  const logTo = jsonLogSink(logLines);
  // Three outputs fill a spool: the fourth evicts the least recently used.
  const overrides = { signing: { spool: { maxEntries: 3 } } };
  cluster = await TestCluster.start({ nodes: 2, logTo, overrides });
  redis = new Redis(cluster.redis.url);
  work = mkdtempSync(join(tmpdir(), "signing-file-results-"));
});
after(async () => {
  redis?.disconnect();
  await cluster?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});
beforeEach(() => {
  logLines.length = 0;
});

/** An input and the "signed file" made from it, stored on node `owner` through putFile. */
async function signedFile(owner: number, size = 2 * 1024 * 1024) {
  const input = randomBytes(64);
  const output = randomBytes(size);
  const path = join(work, `out-${sha256(input)}`);
  writeFileSync(path, output);
  const file = await cluster
    .node(owner)
    .results.putFile("gpg", { sha256: sha256(input), sha1: sha1(input) }, path);
  assert.equal(existsSync(path), false, "putFile moved the format layer's temp file into the spool");
  return { input, output, file };
}

function assertServed(res: request.Response, output: Buffer): void {
  assert.equal(res.status, 200, String(res.body));
  assert.equal(res.headers["content-type"], "application/octet-stream");
  assert.equal(res.headers["x-sha1-digest"], sha1(output));
  assert.equal(res.headers["x-sha256-digest"], sha256(output));
  assert.ok(Buffer.compare(res.body as Buffer, output) === 0, "the body is the stored output");
}

function assertUploadAgain(res: request.Response): void {
  assert.equal(res.status, 404);
  assert.equal(res.headers["x-pending"], undefined, "not pending: the client uploads again");
  assert.equal(JSON.parse(String(res.body)).error.code, "NOT_FOUND");
}

const spoolOf = (i: number) => join(cluster.state.dir, `spool-${i}`);
/** As the nodes read it: the file without its final newline. */
const internalSecret = () =>
  Buffer.from(readFileSync(join(cluster.state.dir, "internal-secret"), "utf8").replace(/\r?\n$/, ""));

describe("whole-file results", () => {
  test("any node serves the output, by the input's sha256 or sha1, with the output's digests", async () => {
    const { input, output, file } = await signedFile(0);
    assert.equal(file.owner, cluster.node(0).url);
    for (const node of [0, 1])
      for (const digest of [sha256(input), sha1(input)])
        assertServed(await fetchSignature(cluster.node(node).url, "gpg", digest), output);
  });

  test("Redis holds the record naming the owner, never the output; the spool holds it once, private", async () => {
    const { input, output } = await signedFile(0);
    const record = await redis.hgetall(keys.result("gpg", sha256(input)));
    assert.deepEqual(Object.keys(record).sort(), ["fingerprint", "owner", "sha1", "sha256", "size"]);
    assert.equal(record.owner, cluster.node(0).url);
    assert.equal(record.sha256, sha256(output));
    assert.equal(record.size, String(output.length));
    assert.ok((await redis.ttl(keys.result("gpg", sha256(input)))) > 0);
    assert.equal(statSync(spoolOf(0)).mode & 0o777, 0o700);
    const stored = join(spoolOf(0), `gpg.${sha256(input)}`);
    assert.equal(statSync(stored).mode & 0o777, 0o600);
    assert.ok(Buffer.compare(readFileSync(stored), output) === 0);
  });

  test("an upload of a signed input is a cache hit; the client GETs the file", async () => {
    const { input, output } = await signedFile(1);
    const token = await getToken(cluster.node(0).url, cluster.basicAuth);
    const res = await upload(cluster.node(0).url, { token, nonce: "", data: input, wait: 5 });
    assert.equal(res.status, 202, res.text);
    assert.equal(res.body.status, "cached");
    assertServed(await fetchSignature(cluster.node(0).url, "gpg", sha1(input)), output);
  });

  test("the internal route wants the cluster's credential: 401 without it or with another", async () => {
    const { input, output } = await signedFile(0);
    const path = `/internal/results/gpg/${sha256(input)}`;
    const node = cluster.node(0).url;
    for (const auth of [undefined, "Bearer nope", `Bearer ${randomBytes(32).toString("base64url")}`]) {
      const req = request(node).get(path);
      const res = await (auth ? req.set("Authorization", auth) : req);
      assert.equal(res.status, 401, res.text);
      assert.equal(res.body.error.code, "BAD_CREDENTIALS");
    }
    const ok = await request(node)
      .get(path)
      .set("Authorization", `Bearer ${internalSecret().toString("base64url")}`)
      .buffer(true)
      .parse((r, cb) => {
        const chunks: Buffer[] = [];
        r.on("data", (c: Buffer) => chunks.push(c));
        r.on("end", () => cb(null, Buffer.concat(chunks)));
      });
    assertServed(ok, output);
    const lines = JSON.stringify(logLines);
    assert.ok(!lines.includes(internalSecret().toString("base64url")), "the credential is never logged");
    assert.ok(!lines.includes(internalSecret().toString()), "the credential is never logged");
  });

  test("a spool file whose bytes changed is never served: 404 on every node, a log line, the record dropped", async () => {
    const { input, output } = await signedFile(0);
    const stored = join(spoolOf(0), `gpg.${sha256(input)}`);
    const changed = Buffer.from(output);
    changed[1000] = (changed[1000] as number) ^ 1;
    writeFileSync(stored, changed);
    assertUploadAgain(await fetchSignature(cluster.node(1).url, "gpg", sha256(input)));
    assert.ok(logLines.some((l) => l.event === "spool_file_corrupt" && l.sha256 === sha256(input)));
    assert.equal(await redis.exists(keys.result("gpg", sha256(input))), 0, "the next upload signs again");
    assertUploadAgain(await fetchSignature(cluster.node(0).url, "gpg", sha256(input)));
  });

  test("an output evicted from its owner's spool is a plain 404, and the next upload signs again", async () => {
    const first = await signedFile(1);
    for (let i = 0; i < 3; i++) await signedFile(1, 1024);
    assertUploadAgain(await fetchSignature(cluster.node(0).url, "gpg", sha256(first.input)));
    assert.equal(await redis.exists(keys.result("gpg", sha256(first.input))), 0);
    const token = await getToken(cluster.node(0).url, cluster.basicAuth);
    const res = await upload(cluster.node(0).url, { token, nonce: "", data: first.input });
    assert.equal(res.status, 202, res.text);
    assert.equal(res.body.status, "queued");
  });

  test("a file result record we did not write fails closed: 503 STORE_CORRUPT", async () => {
    const bad: Record<string, string>[] = [
      { fingerprint: "f", owner: "not a url", sha1: "0".repeat(40), sha256: "0".repeat(64), size: "1" },
      { fingerprint: "f", owner: "http://127.0.0.1:1", sha1: "x", sha256: "0".repeat(64), size: "1" },
      {
        fingerprint: "f",
        owner: "http://127.0.0.1:1",
        sha1: "0".repeat(40),
        sha256: "0".repeat(64),
        size: "-1",
      },
      { owner: "http://127.0.0.1:1", output: "inline and a file at once" },
    ];
    for (const fields of bad) {
      const digest = randomBytes(32).toString("hex");
      await redis.hset(keys.result("gpg", digest), fields);
      const res = await request(cluster.node(1).url).get(`/sign/gpg/${digest}`);
      assert.equal(res.status, 503, `${JSON.stringify(fields)}: ${res.text}`);
      assert.equal(res.body.error.code, "STORE_CORRUPT");
    }
  });

  test("an owner that is gone: a plain 404 from the other node, and the record goes", async () => {
    const { input } = await signedFile(0);
    await cluster.node(0).close();
    assertUploadAgain(await fetchSignature(cluster.node(1).url, "gpg", sha1(input)));
    assert.ok(logLines.some((l) => l.event === "owner_unreachable"));
    assert.equal(await redis.exists(keys.result("gpg", sha256(input))), 0);
  });

  // Last: it leaves Redis down.
  test("without Redis the node that signed an output still serves it from its spool", async () => {
    await cluster.redis.kill();
    const { input, output } = await signedFile(1);
    assert.ok(logLines.some((l) => l.event === "file_result_local"));
    for (const digest of [sha256(input), sha1(input)])
      assertServed(await fetchSignature(cluster.node(1).url, "gpg", digest), output);
  });
});
