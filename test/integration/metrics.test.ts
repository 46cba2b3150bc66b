import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import request from "supertest";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { fetchSignature, getToken, sha256, upload } from "../helpers/api.js";
import { powershellScript } from "../helpers/authenticode.js";
import { sample, types } from "../helpers/metrics.js";

let cluster: TestCluster;
before(async () => {
  cluster = await TestCluster.start({ nodes: 1 });
});
after(() => cluster?.stop());

// DESIGN.md §8: the names and types dashboards and alert rules depend on.
const EXPECTED: Record<string, string> = {
  signing_tokens_issued_total: "counter",
  signing_token_checks_total: "counter",
  signing_requests_total: "counter",
  signing_duration_seconds: "histogram",
  signing_bytes_total: "counter",
  signing_cache_hits_total: "counter",
  signing_inflight_jobs: "gauge",
  signing_admission_wait_seconds: "histogram",
  signing_admission_queue: "gauge",
  signing_worker_pool_queue: "gauge",
  signing_store_breaker_state: "gauge",
  signing_store_breaker_events_total: "counter",
  signing_store_command_duration_seconds: "histogram",
  signing_http_request_duration_seconds: "histogram",
  signing_key_operations_total: "counter",
  signing_key_operation_duration_seconds: "histogram",
  signing_spool_bytes: "gauge",
  signing_spool_entries: "gauge",
  signing_spool_quota_bytes: "gauge",
  signing_spool_evictions_total: "counter",
  process_cpu_seconds_total: "counter",
  process_resident_memory_bytes: "gauge",
  nodejs_eventloop_lag_seconds: "gauge",
};

const scrape = async () => {
  const res = await request(cluster.node(0).url).get("/metrics");
  assert.equal(res.status, 200);
  assert.match(res.headers["content-type"] ?? "", /^text\/plain; version=0\.0\.4/);
  return res.text;
};

test("every DESIGN.md §8 metric is exported with its type", async () => {
  const found = types(await scrape());
  for (const [name, type] of Object.entries(EXPECTED)) {
    // prom-client names counters without the _total suffix in TYPE lines.
    assert.equal(found.get(name) ?? found.get(name.replace(/_total$/, "")), type, name);
  }
});

test("counters move when their events happen, with bounded labels only", async () => {
  const url = cluster.node(0).url;
  const before = await scrape();
  const get = (text: string, name: string, labels: Record<string, string> = {}) =>
    sample(text, name, labels) ?? 0;

  const token = await getToken(url, cluster.basicAuth);
  const data = randomBytes(5000);
  assert.equal((await upload(url, { token, nonce: "", data, wait: 30 })).status, 202);
  const t2 = await getToken(url, cluster.basicAuth);
  assert.equal((await upload(url, { token: t2, nonce: "", data })).body.status, "cached");
  assert.equal((await upload(url, { token: "garbage", nonce: "", data })).status, 401);
  // The chain moved on: the empty nonce again, for another file, is a replay.
  assert.equal((await upload(url, { token: t2, nonce: "", data: randomBytes(10) })).status, 403);
  assert.equal((await fetchSignature(url, "gpg", "a".repeat(40))).status, 404);
  const after = await scrape();

  const delta = (name: string, labels: Record<string, string> = {}) =>
    get(after, name, labels) - get(before, name, labels);
  assert.equal(delta("signing_tokens_issued_total"), 2);
  assert.equal(delta("signing_token_checks_total", { result: "valid" }), 2);
  assert.equal(delta("signing_token_checks_total", { result: "malformed" }), 1);
  assert.equal(delta("signing_token_checks_total", { result: "nonce_mismatch" }), 1);
  assert.equal(delta("signing_requests_total", { format: "gpg", outcome: "queued" }), 1);
  assert.equal(delta("signing_requests_total", { format: "gpg", outcome: "cached" }), 1);
  assert.equal(delta("signing_requests_total", { format: "gpg", outcome: "rejected" }), 2);
  assert.equal(delta("signing_cache_hits_total", { format: "gpg" }), 1);
  assert.equal(delta("signing_bytes_total", { format: "gpg" }), 5000);
  assert.equal(delta("signing_duration_seconds_count", { format: "gpg" }), 1);
  assert.ok(delta("signing_store_command_duration_seconds_count", { op: "token_check" }) >= 3);
  assert.ok(delta("signing_store_breaker_events_total", { breaker: "token_reads", event: "success" }) >= 3);
  assert.equal(
    delta("signing_http_request_duration_seconds_count", { route: "POST /sign/:format", status: "202" }),
    2,
  );
  assert.equal(
    delta("signing_http_request_duration_seconds_count", {
      route: "GET /sign/:format/:digest",
      status: "404",
    }),
    1,
  );
  // One raw signature by the gpg key (the cached upload signed nothing), timed.
  const gpgFile = { format: "gpg", backend: "file" };
  assert.equal(delta("signing_key_operations_total", { ...gpgFile, result: "ok" }), 1);
  assert.equal(delta("signing_key_operation_duration_seconds_count", gpgFile), 1);
  assert.ok(delta("signing_key_operation_duration_seconds_sum", gpgFile) > 0);
  // Every result and both formats' series exist from the start, at zero until they happen.
  for (const result of ["unavailable", "error"])
    assert.equal(sample(after, "signing_key_operations_total", { ...gpgFile, result }), 0, result);
  assert.notEqual(
    sample(after, "signing_key_operations_total", { format: "sshsig", backend: "file", result: "ok" }),
    undefined,
  );
  assert.equal(get(after, "signing_inflight_jobs"), 0);
  for (const breaker of ["token_reads", "token_writes", "jobs"]) {
    assert.equal(get(after, "signing_store_breaker_state", { breaker }), 0, breaker);
  }
  // No raw paths, IPs or digests in any label.
  assert.doesNotMatch(after, /="[^"]*(127\.0\.0\.1|[0-9a-f]{40})[^"]*"/);
});

/**
 * Whole-file results (authenticode): the spool's use and evictions, and where each GET's signed
 * file came from, on two real nodes with real osslsigncode and a spool that keeps one output.
 */
describe("the spool and whole-file results", () => {
  let two: TestCluster;
  before(async () => {
    const overrides = { signing: { spool: { maxEntries: 1, maxBytes: 1 << 20 } } };
    two = await TestCluster.start({ nodes: 2, authenticode: true, overrides });
  });
  after(() => two?.stop());

  const scrapeOf = async (i: number) => (await request(two.node(i).url).get("/metrics")).text;
  const fetches = (text: string, result: string) =>
    sample(text, "signing_file_result_fetches_total", { format: "authenticode", result });
  /** A PowerShell script of its own (a comment line makes it another input), signed on node 0. */
  async function signOnNode0(): Promise<Buffer> {
    const script = Buffer.concat([
      powershellScript(),
      Buffer.from(`# ${randomBytes(8).toString("hex")}\r\n`),
    ]);
    const token = await getToken(two.node(0).url, two.basicAuth);
    const args = { token, nonce: "", data: script, filename: "install.ps1", wait: 30, acceptFile: true };
    const res = await upload(two.node(0).url, { format: "authenticode", ...args });
    // ?wait answers with the signed file itself: not a GET, so not in the fetch counts below.
    assert.equal(res.status, 200, res.text);
    return script;
  }

  test("every series is there from the start: the quota, levels at zero, evictions and GETs at zero", async () => {
    const text = await scrapeOf(1);
    assert.equal(sample(text, "signing_spool_quota_bytes"), 1 << 20);
    assert.equal(sample(text, "signing_spool_bytes"), 0);
    assert.equal(sample(text, "signing_spool_entries"), 0);
    for (const limit of ["bytes", "entries"])
      assert.equal(sample(text, "signing_spool_evictions_total", { limit }), 0, limit);
    for (const result of ["local", "peer", "missing", "unreachable"])
      assert.equal(fetches(text, result), 0, result);
  });

  test("local, peer, missing after an eviction, unreachable once the owner is gone", async () => {
    const first = await signOnNode0();
    const [before0, before1] = [await scrapeOf(0), await scrapeOf(1)];
    const signedSize = Number(
      (await fetchSignature(two.node(0).url, "authenticode", sha256(first))).header["content-length"],
    );
    assert.equal((await fetchSignature(two.node(1).url, "authenticode", sha256(first))).status, 200);
    const served0 = await scrapeOf(0);
    assert.equal(sample(served0, "signing_spool_entries"), 1);
    assert.equal(sample(served0, "signing_spool_bytes"), signedSize, "the signed file's bytes");
    const d = (after: string, before: string, result: string) =>
      (fetches(after, result) ?? 0) - (fetches(before, result) ?? 0);
    assert.equal(d(served0, before0, "local"), 1, "node 0 served its own spool");
    const served1 = await scrapeOf(1);
    assert.equal(d(served1, before1, "peer"), 1, "node 1 streamed it from node 0");

    // maxEntries 1: the next signed file evicts the first; node 1 asks node 0, which has it no more.
    const second = await signOnNode0();
    const evicted = await scrapeOf(0);
    assert.equal(
      (sample(evicted, "signing_spool_evictions_total", { limit: "entries" }) ?? 0) -
        (sample(served0, "signing_spool_evictions_total", { limit: "entries" }) ?? 0),
      1,
    );
    assert.equal(sample(evicted, "signing_spool_entries"), 1);
    assert.equal((await fetchSignature(two.node(1).url, "authenticode", sha256(first))).status, 404);
    const missing = await scrapeOf(1);
    assert.equal(d(missing, served1, "missing"), 1);

    // The owner stopped: node 1 cannot reach it for the second file.
    await two.node(0).close();
    assert.equal((await fetchSignature(two.node(1).url, "authenticode", sha256(second))).status, 404);
    const gone = await scrapeOf(1);
    assert.equal(d(gone, missing, "unreachable"), 1);
    assert.equal(d(gone, before1, "local") + d(gone, before1, "peer"), 1, "nothing else counted");
  });
});
