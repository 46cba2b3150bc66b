import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import request from "supertest";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { getToken, upload } from "../helpers/api.js";
import { jsonLogSink } from "../helpers/log-sink.js";

/**
 * Issue 29 item 5: while Redis is down, readiness names the connection's own error and since
 * when, cause first, and the breaker_open log line carries the error that opened the breaker.
 */
test("Redis down: /readyz leads with the connection error and since when; breaker_open says why", async () => {
  const lines: Record<string, unknown>[] = [];
  const logTo = jsonLogSink(lines);
  const cluster = await TestCluster.start({
    nodes: 1,
    logTo,
    overrides: { store: { breaker: { volumeThreshold: 2, resetTimeoutMs: 30_000 } } },
  });
  try {
    const url = cluster.node(0).url;
    const token = await getToken(url, cluster.basicAuth);
    const port = cluster.redis.port;
    await cluster.redis.kill();
    const before = Date.now();
    for (let i = 0; i < 6; i++) await upload(url, { token, nonce: "", data: randomBytes(16) });
    await sleep(300);
    const ready = await request(url).get("/readyz");
    const detail = ready.body.checks.redis.detail as string;
    assert.equal(ready.body.checks.redis.ok, false);
    assert.match(
      detail,
      new RegExp(`^Redis connection: connect ECONNREFUSED 127\\.0\\.0\\.1:${port}, failing since \\d{4}-`),
    );
    const since = Date.parse(/failing since (\S+)/.exec(detail)?.[1] ?? "");
    assert.ok(since >= before - 2000 && since <= Date.now(), detail);
    const opened = lines.find((l) => l.event === "breaker_open");
    assert.ok(opened, "a breaker opened");
    assert.match(String(opened.err), /ECONNREFUSED|Connection is closed|Stream isn't writeable/);
    assert.notEqual(opened.err, "");
  } finally {
    await cluster.stop();
  }
});
