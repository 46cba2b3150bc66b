import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { Writable } from "node:stream";
import { describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import request from "supertest";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { DEGRADED_WARNING_INTERVAL_MS } from "../../src/tokens/service.js";
import { fetchSignature, getToken, upload } from "../helpers/api.js";
import { sample } from "../helpers/metrics.js";
import { rawRequest } from "../helpers/raw-http.js";
import { gpgVerify } from "../helpers/verify.js";

const BREAKER = {
  volumeThreshold: 2,
  resetTimeoutMs: 1500,
  errorThresholdPercentage: 50,
  rollingWindowMs: 10_000,
};

async function breakerState(url: string, breaker = "token_reads"): Promise<number | undefined> {
  return sample((await request(url).get("/metrics")).text, "signing_store_breaker_state", { breaker });
}

async function until<T>(
  what: string,
  fn: () => Promise<T>,
  ok: (v: T) => boolean,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(v)})`);
    await sleep(50);
  }
}

/** A node's log lines, parsed, and its raw text (to look for what must never be in it). */
function logSink(): { sink: Writable; lines: Record<string, unknown>[]; raw: () => string } {
  const lines: Record<string, unknown>[] = [];
  let raw = "";
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      raw += chunk.toString();
      for (const l of chunk.toString().split("\n").filter(Boolean)) lines.push(JSON.parse(l));
      done();
    },
  });
  return { sink, lines, raw: () => raw };
}

describe("Redis paused under downPolicy hmac", () => {
  test("signing goes on, the breaker goes 0 → 2 → 1 → 0, and nonces are enforced again after", async () => {
    const log = logSink();
    const cluster = await TestCluster.start({
      nodes: 1,
      logTo: log.sink,
      overrides: {
        store: { commandTimeoutMs: 300, downPolicy: "hmac", breaker: { ...BREAKER, resetTimeoutMs: 3000 } },
      },
    });
    try {
      const url = cluster.node(0).url;
      const gpgKey = readFileSync(cluster.state.keys.gpg.publicKeyFile, "utf8");
      const token = await getToken(url, cluster.basicAuth);
      const first = await upload(url, { token, nonce: "", data: randomBytes(100), wait: 10 });
      assert.equal(first.status, 202);
      const n1 = first.headers["x-nonce"] as string;
      assert.equal(await breakerState(url), 0);

      cluster.redis.pause();
      // Outage: uploads with a valid token are still signed, and the signature is collected here.
      let nonce = n1;
      const seen: (number | undefined)[] = [];
      for (let i = 0; i < 4; i++) {
        const data = randomBytes(200);
        const res = await upload(url, { token, nonce, data, wait: 10 });
        assert.equal(res.status, 202, res.text);
        nonce = res.headers["x-nonce"] as string;
        const sig = await fetchSignature(url, "gpg", res.body.sha256);
        assert.equal(sig.status, 200, `signature during the outage: ${sig.status}`);
        const v = gpgVerify(gpgKey, data, sig.body);
        assert.ok(v.ok, v.output);
        seen.push(await breakerState(url));
      }
      assert.ok(seen.includes(2), `open after repeated timeouts (states seen: ${seen.join(",")})`);
      const ready = await request(url).get("/readyz");
      assert.equal(ready.status, 200);
      assert.equal(ready.body.status, "degraded");
      const metrics = (await request(url).get("/metrics")).text;
      assert.ok((sample(metrics, "signing_token_checks_total", { result: "degraded" }) ?? 0) >= 4);
      assertDegradedWarnings(log.lines, log.raw(), token);

      // No traffic: after resetTimeout the breaker lets one trial call through (half-open).
      await until(
        "half-open",
        () => breakerState(url),
        (s) => s === 1,
        5000,
      );
      cluster.redis.resume();
      const data = randomBytes(50);
      const after = await until(
        "an upload checked against Redis again",
        () => upload(url, { token, nonce, data }),
        (r) => r.status === 202,
      );
      await until(
        "closed",
        () => breakerState(url),
        (s) => s === 0,
        5000,
      );

      // Nonce checks are enforced again: the degraded-mode nonces cannot be replayed.
      const next = after.headers["x-nonce"] as string;
      const replay = await upload(url, { token, nonce, data: randomBytes(50) });
      assert.equal(replay.status, 403, replay.text);
      assert.equal(replay.body.error.code, "NONCE_MISMATCH");
      assert.equal((await upload(url, { token, nonce: n1, data: randomBytes(50) })).status, 403);
      assert.equal((await upload(url, { token, nonce: next, data: randomBytes(50) })).status, 202);
      const events = (await request(url).get("/metrics")).text;
      for (const event of ["open", "half_open", "close", "failure"]) {
        assert.ok(
          (sample(events, "signing_store_breaker_events_total", { breaker: "token_reads", event }) ?? 0) >= 1,
          event,
        );
      }
    } finally {
      cluster.redis.resume();
      await cluster.stop();
    }
  });
});

/**
 * Each degraded acceptance says why at warn level (event token_check_degraded, a reason and the
 * store's error), at most once per reason in DEGRADED_WARNING_INTERVAL_MS; never the token.
 */
function assertDegradedWarnings(lines: Record<string, unknown>[], raw: string, token: string): void {
  const warnings = lines.filter((l) => l.event === "token_check_degraded");
  assert.ok(warnings.length >= 1, "a token_check_degraded line");
  for (const w of warnings) {
    assert.equal(w.level, 40, "at warn level");
    assert.ok(
      ["timeout", "breaker_open", "connection", "redis_refused"].includes(String(w.reason)),
      String(w.reason),
    );
    assert.match(String(w.err), /store unavailable for token_check: \S/);
    assert.equal(w.op, "token_check");
    assert.equal(typeof w.suppressed, "number");
  }
  for (const reason of new Set(warnings.map((w) => w.reason))) {
    const times = warnings.filter((w) => w.reason === reason).map((w) => Date.parse(String(w.time)));
    for (let i = 1; i < times.length; i++)
      assert.ok(
        (times[i] as number) - (times[i - 1] as number) >= DEGRADED_WARNING_INTERVAL_MS,
        `${reason}: one line per ${DEGRADED_WARNING_INTERVAL_MS} ms`,
      );
  }
  assert.ok(!raw.includes(token), "the token is never logged");
}

describe("Redis down under downPolicy reject", () => {
  test("a fast 503 STORE_UNAVAILABLE once the breaker is open; readiness fails; recovery after restart", async () => {
    const cluster = await TestCluster.start({
      nodes: 1,
      overrides: {
        store: { commandTimeoutMs: 1000, downPolicy: "reject", recoveryGraceMs: 500, breaker: BREAKER },
      },
    });
    try {
      const url = cluster.node(0).url;
      const token = await getToken(url, cluster.basicAuth);
      cluster.redis.pause();
      const timings: number[] = [];
      for (let i = 0; i < 6; i++) {
        const started = Date.now();
        const res = await upload(url, { token, nonce: "", data: randomBytes(64) });
        timings.push(Date.now() - started);
        assert.equal(res.status, 503, res.text);
        assert.equal(res.body.error.code, "STORE_UNAVAILABLE");
        assert.ok(res.headers["retry-after"]);
      }
      assert.equal(await breakerState(url), 2);
      // The first calls waited for the command timeout; with the breaker open, no waiting.
      const last = timings.slice(-3);
      assert.ok(
        Math.max(...last) < 200,
        `open-breaker answers took ${last.join(", ")} ms (command timeout 1000 ms)`,
      );
      const notReady = await request(url).get("/readyz");
      assert.equal(notReady.status, 503);
      assert.equal(notReady.body.checks.redis.ok, false);
      const tokenDuringOutage = await request(url)
        .post("/token")
        .set("Authorization", cluster.basicAuth)
        .type("form")
        .send({ slave_ip: "127.0.0.1" });
      assert.equal(tokenDuringOutage.status, 503);
      assert.equal(tokenDuringOutage.body.error.code, "STORE_UNAVAILABLE");

      // Killed and restarted empty: a new token works once the breaker closes.
      await cluster.redis.restart();
      await until(
        "ready",
        async () => (await request(url).get("/readyz")).body.status,
        (s) => s === "ok",
        10_000,
      );
      const fresh = await getToken(url, cluster.basicAuth);
      assert.equal((await upload(url, { token: fresh, nonce: "", data: randomBytes(64) })).status, 202);
    } finally {
      cluster.redis.resume();
      await cluster.stop();
    }
  });
});

describe("backpressure and rate limits", () => {
  test("more concurrent uploads than maxPending: 503 OVERLOADED with Retry-After, never a crash", async () => {
    const cluster = await TestCluster.start({
      nodes: 1,
      // No waiting in line (admission.test.ts covers it): the bounce itself is the subject.
      overrides: { signing: { maxPending: 3, admissionWaitMs: 0 } },
    });
    try {
      const url = cluster.node(0).url;
      const tokens = await Promise.all(Array.from({ length: 24 }, () => getToken(url, cluster.basicAuth)));
      const rssBefore = process.memoryUsage().rss;
      const results = await Promise.all(
        tokens.map((token) => upload(url, { token, nonce: "", data: randomBytes(4 * 1024 * 1024) })),
      );
      const statuses = results.map((r) => r.status);
      const overloaded = results.filter((r) => r.status === 503);
      assert.ok(overloaded.length > 0, `some uploads refused: ${statuses.join(",")}`);
      assert.ok(statuses.filter((s) => s === 202).length >= 3, statuses.join(","));
      assert.deepEqual(
        new Set(statuses.filter((s) => s !== 202 && s !== 503)),
        new Set(),
        statuses.join(","),
      );
      for (const r of overloaded) {
        assert.equal(r.body.error.code, "OVERLOADED");
        assert.equal(r.headers["retry-after"], "1");
      }
      const metrics = (await request(url).get("/metrics")).text;
      assert.equal(
        sample(metrics, "signing_requests_total", { format: "gpg", outcome: "overloaded" }),
        overloaded.length,
      );
      // 24 × 4 MiB went in; the node holds at most maxPending of them (on disk, not in memory).
      const grownMiB = (process.memoryUsage().rss - rssBefore) / 2 ** 20;
      assert.ok(grownMiB < 200, `RSS grew ${grownMiB.toFixed(0)} MiB`);
      assert.equal((await request(url).get("/readyz")).status, 200);
    } finally {
      await cluster.stop();
    }
  });

  test("uploads that go silent get 408 after uploadRateWindowMs and give their slots back", async () => {
    const cluster = await TestCluster.start({
      nodes: 1,
      overrides: { signing: { maxPending: 2, uploadRateWindowMs: 500, admissionWaitMs: 0 } },
    });
    try {
      const url = cluster.node(0).url;
      const stalled = [0, 1].map(() =>
        rawRequest(
          cluster.node(0).port,
          "POST /sign/gpg HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 9000\r\n\r\n--b\r\n",
          { end: false, timeoutMs: 5000 },
        ),
      );
      await sleep(100);
      const token = await getToken(url, cluster.basicAuth);
      const refused = await upload(url, { token, nonce: "", data: randomBytes(10) });
      assert.equal(refused.status, 503, "both slots are held");
      for (const res of await Promise.all(stalled)) {
        assert.equal(res.status, 408, res.body);
        assert.equal(JSON.parse(res.body).error.code, "REQUEST_TIMEOUT");
      }
      assert.equal(
        (await upload(url, { token, nonce: "", data: randomBytes(10) })).status,
        202,
        "slots were released",
      );
    } finally {
      await cluster.stop();
    }
  });

  test("per-IP limits on POST /token and POST /sign answer 429 with Retry-After", async () => {
    const cluster = await TestCluster.start({
      nodes: 1,
      overrides: {
        // Refills slow enough that a loaded machine's scrypt checks cannot let a token back in.
        limits: {
          tokenPerIp: { ratePerSecond: 0.05, burst: 4 },
          signPerIp: { ratePerSecond: 0.05, burst: 2 },
        },
      },
    });
    try {
      const url = cluster.node(0).url;
      const token = await getToken(url, cluster.basicAuth);
      const tokenAnswers = [];
      for (let i = 0; i < 5; i++) {
        tokenAnswers.push(
          await request(url)
            .post("/token")
            .auth(cluster.state.issuer.user, "wrong")
            .type("form")
            .send({ slave_ip: "127.0.0.1" }),
        );
      }
      assert.deepEqual(
        tokenAnswers.map((r) => r.status),
        [401, 401, 401, 429, 429],
      );
      assert.equal(tokenAnswers[4]?.body.error.code, "RATE_LIMITED");
      assert.ok(Number(tokenAnswers[4]?.headers["retry-after"]) >= 1);

      const signAnswers = [];
      for (let i = 0; i < 3; i++)
        signAnswers.push(await upload(url, { token, nonce: "", data: randomBytes(8) }));
      assert.equal(signAnswers[2]?.status, 429);
      assert.equal(signAnswers[2]?.body.error.code, "RATE_LIMITED");
    } finally {
      await cluster.stop();
    }
  });
});
