import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { connect, type Socket } from "node:net";
import { after, before, describe, test } from "node:test";
import request from "supertest";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { getToken, sha256, upload } from "../helpers/api.js";
import { jsonLogSink } from "../helpers/log-sink.js";
import { sample } from "../helpers/metrics.js";

/**
 * Issue 31 item 3: at signing.maxPending an upload waits in a FIFO queue (before its body is
 * read) for up to signing.admissionWaitMs, then answers 503 OVERLOADED. Nodes with room for one
 * upload, whose place a raw upload that never finishes holds until the test lets it go.
 */

const HEAD =
  "POST /sign/gpg HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 900000\r\n\r\n";

/** An upload that sends its headers and `body`, then neither finishes nor leaves until told. */
function openUpload(port: number, body = "--b\r\n"): { socket: Socket; answer: Promise<string> } {
  const socket = connect(port, "127.0.0.1");
  socket.on("error", () => {});
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  const answer = new Promise<string>((resolve) =>
    socket.on("close", () => resolve(Buffer.concat(chunks).toString("latin1"))),
  );
  socket.write(HEAD + body);
  return { socket, answer };
}

async function scrape(url: string): Promise<string> {
  return (await request(url).get("/metrics")).text;
}

async function metric(url: string, name: string): Promise<number> {
  return sample(await scrape(url), name) ?? 0;
}

/** Polls until the metric has the value; fails after a generous time (no timing asserted). */
async function untilMetric(url: string, name: string, want: number): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const got = await metric(url, name);
    if (got === want) return;
    if (Date.now() > deadline) assert.fail(`${name} stayed ${got}, wanted ${want}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const queued = (url: string, n: number) => untilMetric(url, "signing_admission_queue", n);

describe("uploads wait in line for a place", () => {
  const logLines: Record<string, unknown>[] = [];
  let cluster: TestCluster;
  let url: string;
  let port: number;

  before(async () => {
    const logTo = jsonLogSink(logLines);
    cluster = await TestCluster.start({
      nodes: 1,
      logTo,
      overrides: {
        signing: {
          ...{ maxPending: 1, maxPendingPerIp: 10, admissionWaitMs: 60_000, admissionQueueMax: 3 },
          // The holding upload never finishes: it must not time out while a test runs.
          uploadRateWindowMs: 120_000,
        },
      },
    });
    url = cluster.node(0).url;
    port = cluster.node(0).port;
  });
  after(() => cluster?.stop());

  test("in the order they came, each when a place frees; a full queue refuses at once", async (t) => {
    const holder = openUpload(port);
    t.after(() => holder.socket.destroy());
    await untilMetric(url, "signing_inflight_jobs", 1);
    const waitsBefore = await metric(url, "signing_admission_wait_seconds_count");
    const files = [0, 1, 2].map(() => randomBytes(2000));
    const tokens = await Promise.all([...files, 0].map(() => getToken(url, cluster.basicAuth)));
    const answers: Promise<request.Response>[] = [];
    for (const [i, data] of files.entries()) {
      answers.push(upload(url, { token: tokens[i] as string, nonce: "", data, wait: 30 }).then((r) => r));
      await queued(url, i + 1);
    }
    // The queue holds admissionQueueMax: one more is refused without waiting for a place.
    const refused = await upload(url, { token: tokens[3] as string, nonce: "", data: randomBytes(10) });
    assert.equal(refused.status, 503);
    assert.equal(refused.body.error.code, "OVERLOADED");
    assert.equal(await metric(url, "signing_admission_queue"), 3, "the three still wait");

    holder.socket.destroy();
    for (const r of await Promise.all(answers)) {
      assert.equal(r.status, 202, r.text);
      assert.ok(r.body.signature, "signed");
    }
    // One place: each upload is submitted (logged) before the next one is admitted.
    const order = logLines
      .filter((l) => l.event === "upload")
      .map((l) => files.findIndex((f) => sha256(f) === l.sha256));
    assert.deepEqual(order, [0, 1, 2]);
    await queued(url, 0);
    await untilMetric(url, "signing_inflight_jobs", 0);
    // Three waits ended with a place and one refusal was decided at once; each is observed.
    assert.equal((await metric(url, "signing_admission_wait_seconds_count")) - waitsBefore, 4);
  });

  test("a client that leaves while it waits gives its place in line back at once", async () => {
    const holder = openUpload(port);
    try {
      await untilMetric(url, "signing_inflight_jobs", 1);
      const leaving = openUpload(port);
      await queued(url, 1);
      leaving.socket.destroy();
      await queued(url, 0);
      // Its place in line is free: the queue takes its full length again.
      const tokens = await Promise.all([0, 1, 2].map(() => getToken(url, cluster.basicAuth)));
      const answers = tokens.map((token) =>
        upload(url, { token, nonce: "", data: randomBytes(100), wait: 30 }).then((r) => r),
      );
      await queued(url, 3);
      holder.socket.destroy();
      for (const r of await Promise.all(answers)) assert.equal(r.status, 202, r.text);
      await untilMetric(url, "signing_inflight_jobs", 0);
    } finally {
      holder.socket.destroy();
    }
  });

  test("a node that stops refuses its waiters with 503 SHUTTING_DOWN", async () => {
    const holder = openUpload(port);
    try {
      await untilMetric(url, "signing_inflight_jobs", 1);
      const waiting = upload(url, {
        token: await getToken(url, cluster.basicAuth),
        nonce: "",
        data: randomBytes(10),
      }).then((r) => r);
      await queued(url, 1);
      const closing = cluster.node(0).close();
      const r = await waiting;
      assert.equal(r.status, 503);
      assert.equal(r.body.error.code, "SHUTTING_DOWN");
      holder.socket.destroy();
      await closing;
    } finally {
      holder.socket.destroy();
    }
  });
});

describe("a wait that outlasts signing.admissionWaitMs", () => {
  let cluster: TestCluster;
  let url: string;
  let port: number;

  before(async () => {
    cluster = await TestCluster.start({
      nodes: 1,
      overrides: { signing: { maxPending: 1, admissionWaitMs: 300, uploadRateWindowMs: 120_000 } },
    });
    url = cluster.node(0).url;
    port = cluster.node(0).port;
  });
  after(() => cluster?.stop());

  test("ends in 503 OVERLOADED with Retry-After and the JSON error body, its body unread", async (t) => {
    const holder = openUpload(port);
    t.after(() => holder.socket.destroy());
    await untilMetric(url, "signing_inflight_jobs", 1);
    const before = await scrape(url);
    const token = await getToken(url, cluster.basicAuth);
    const r = await upload(url, { token, nonce: "", data: randomBytes(10) });
    assert.equal(r.status, 503);
    assert.deepEqual(Object.keys(r.body), ["error"]);
    assert.equal(r.body.error.code, "OVERLOADED");
    assert.equal(r.body.error.retryable, true);
    assert.match(r.body.error.message, /as much work/);
    assert.equal(r.headers["retry-after"], "1");
    assert.equal(r.headers.connection, "close", "its body is not read");
    const after = await scrape(url);
    const delta = (name: string, labels: Record<string, string> = {}) =>
      (sample(after, name, labels) ?? 0) - (sample(before, name, labels) ?? 0);
    assert.equal(delta("signing_admission_wait_seconds_count"), 1);
    // It waited, not bounced: libuv arms the 300 ms timer from the loop's cached time, which a
    // busy machine leaves stale, so the wait measured by the clock can come out somewhat shorter.
    assert.ok(delta("signing_admission_wait_seconds_sum") >= 0.15, "it waited admissionWaitMs");
    assert.equal(delta("signing_requests_total", { format: "gpg", outcome: "overloaded" }), 1);
    assert.equal(sample(after, "signing_admission_queue"), 0);
    // The token was never looked at: the body was not read.
    assert.equal(delta("signing_token_checks_total", { result: "valid" }), 0);
    holder.socket.destroy();
    await untilMetric(url, "signing_inflight_jobs", 0);
    assert.equal((await upload(url, { token, nonce: "", data: randomBytes(10) })).status, 202);
  });

  test("a client that left after sending more than the node buffers is let go when its wait ends", async (t) => {
    const holder = openUpload(port);
    t.after(() => holder.socket.destroy());
    await untilMetric(url, "signing_inflight_jobs", 1);
    const waitsBefore = await metric(url, "signing_admission_wait_seconds_count");
    // Past the request's buffer its socket is paused, so its close is seen only when read.
    const big = openUpload(port, `--b\r\n${"x".repeat(256 * 1024)}`);
    await queued(url, 1);
    big.socket.destroy();
    await queued(url, 0);
    assert.equal((await metric(url, "signing_admission_wait_seconds_count")) - waitsBefore, 1);
    assert.equal(await metric(url, "signing_inflight_jobs"), 1, "only the holder has a place");
    holder.socket.destroy();
    await untilMetric(url, "signing_inflight_jobs", 0);
  });
});
