import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import type { RunningMonitor } from "../../monitor/monitor.js";
import { ProcessCluster } from "../../scripts/process-cluster.js";
import { p99, SigningLoad } from "../../scripts/signing-load.js";
import { getToken, upload } from "../helpers/api.js";
import { startTestMonitor } from "../helpers/monitor.js";
import { WebhookReceiver } from "../helpers/webhook.js";

const CLIENTS = 6;
let cluster: ProcessCluster;
let webhook: WebhookReceiver;
const work = mkdtempSync(join(tmpdir(), "signing-restart-"));

before(async () => {
  cluster = await ProcessCluster.start({ nodes: 3, env: { SIGNING__signing__jobLeaseMs: "3000" } });
  webhook = await WebhookReceiver.start();
});
after(async () => {
  await cluster?.stop();
  await webhook?.close();
  rmSync(work, { recursive: true, force: true });
});

const auth = () =>
  `Basic ${Buffer.from(`${cluster.state.issuer.user}:${cluster.state.issuer.password}`).toString("base64")}`;

async function clientsWithTokens(tag: string): Promise<{ tokenFile: string; nonceFile: string }[]> {
  return Promise.all(
    Array.from({ length: CLIENTS }, async (_, i) => {
      const tokenFile = join(work, `${tag}-token-${i}`);
      writeFileSync(tokenFile, await getToken(cluster.urls[i % 3] as string, auth()));
      return { tokenFile, nonceFile: join(work, `${tag}-nonce-${i}`) };
    }),
  );
}

async function snapshotHolds(monitor: RunningMonitor, tokens: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (((await monitor.metrics.snapshotTokens.get()).values[0]?.value ?? 0) >= tokens) return;
    await sleep(100);
  }
  throw new Error("the monitor never snapshotted the tokens");
}

/** Kills Redis (no persistence) and starts it again empty; returns when it accepts connections. */
async function dataLossRestart(): Promise<number> {
  await cluster.redis.kill();
  await sleep(300);
  await cluster.redis.restart();
  return Date.now();
}

async function epochStateAfter(since: number, want: string): Promise<number> {
  const redis = new Redis(cluster.redis.url, { maxRetriesPerRequest: 1 });
  try {
    for (;;) {
      if ((await redis.hget("signing:epoch", "state").catch(() => null)) === want) return Date.now() - since;
      if (Date.now() - since > 15_000) throw new Error(`epoch never became ${want}`);
      await sleep(20);
    }
  } finally {
    redis.disconnect();
  }
}

/**
 * Until its breakers close again after the outage, a node under `downPolicy: hmac` checks
 * tokens by their MAC alone (store.downPolicy, docs/configuration.md); /readyz says "ok" once it reads Redis.
 */
async function readsRedisAgain(url: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const body = (await (await fetch(`${url}/readyz`)).json()) as { status?: string };
    if (body.status === "ok") return;
    if (Date.now() > deadline) throw new Error(`${url} still ${body.status} after the outage`);
    await sleep(100);
  }
}

describe("Redis restarts empty in the middle of a signing load", () => {
  test("onDataLoss: reseed — zero failed jobs, re-seeded within 2 s, alert posted", async (t) => {
    const monitor = await startTestMonitor({
      redisUrl: cluster.redis.url,
      nodes: cluster.urls,
      webhookUrl: webhook.url,
    });
    let load: SigningLoad | undefined;
    try {
      const clients = await clientsWithTokens("reseed");
      await snapshotHolds(monitor, CLIENTS);
      load = new SigningLoad(work, clients, {
        nodes: cluster.urls,
        maxTimeMs: 60_000,
        requestTimeoutMs: 10_000,
      });
      await sleep(2000);
      const before = load.result.signed;
      const accepting = await dataLossRestart();
      const reseededAfterMs = await epochStateAfter(accepting, "restored");
      await sleep(4000);
      const r = await load.stop();
      t.diagnostic(
        `reseed: ${r.signed} signed (${r.signed - before} around and after the restart), ${r.failed} failed, ${r.retries} retries, p99 ${p99(r.latenciesMs)} ms; epoch restored ${reseededAfterMs} ms after Redis accepted connections`,
      );
      assert.equal(r.failed, 0, r.errors.join("\n"));
      assert.ok(r.signed - before > CLIENTS, "signing went on through the restart");
      assert.ok(reseededAfterMs <= 2000, `re-seeded ${reseededAfterMs} ms after Redis came back`);
      assert.equal(
        (await monitor.metrics.restarts.get()).values.find((v) => v.labels.kind === "data_loss")?.value,
        1,
      );
      assert.ok(((await monitor.metrics.reseeded.get()).values[0]?.value ?? 0) >= CLIENTS);
      const alert = await webhook.waitFor("RedisRestartedWithDataLoss", "firing");
      assert.equal(alert.labels.severity, "page");
      assert.match(alert.annotations.description ?? "", /Re-seeded \d+ tokens/);
      assert.match(alert.annotations.runbook_url ?? "", /runbooks\/RedisRestartedWithDataLoss\.md$/);
    } finally {
      await load?.stop(); // a failed assertion must not leave the load signing into a removed directory
      await monitor.close();
    }
  });

  test("onDataLoss: invalidate — 401 TOKEN_INVALIDATED, and signtool recovers with a new token", async (t) => {
    const monitor = await startTestMonitor({
      redisUrl: cluster.redis.url,
      nodes: cluster.urls,
      webhookUrl: webhook.url,
      monitor: { onDataLoss: "invalidate" },
    });
    let load: SigningLoad | undefined;
    try {
      const clients = await clientsWithTokens("invalidate");
      const oldToken = await getToken(cluster.urls[0] as string, auth());
      await snapshotHolds(monitor, CLIENTS);
      const issuer = {
        user: cluster.state.issuer.user,
        password: cluster.state.issuer.password,
        slaveIp: "127.0.0.1",
        durationSeconds: 3600,
      };
      load = new SigningLoad(work, clients, {
        nodes: cluster.urls,
        maxTimeMs: 60_000,
        requestTimeoutMs: 10_000,
        issuer,
      });
      await sleep(1500);
      const accepting = await dataLossRestart();
      await epochStateAfter(accepting, "invalidated");
      await readsRedisAgain(cluster.urls[1] as string);
      const refused = await upload(cluster.urls[1] as string, {
        token: oldToken,
        nonce: "",
        data: Buffer.from("x"),
      });
      assert.equal(refused.status, 401, refused.text);
      assert.equal(refused.body.error.code, "TOKEN_INVALIDATED");
      assert.match(refused.body.error.message, /fetch a new token/);
      await sleep(3000);
      const r = await load.stop();
      t.diagnostic(
        `invalidate: ${r.signed} signed, ${r.failed} failed, ${r.retries} retries (token refetches included)`,
      );
      assert.equal(r.failed, 0, r.errors.join("\n"));
      const alert = await webhook.waitFor("RedisRestartedWithDataLoss", "firing");
      assert.ok(alert);
      assert.ok(
        webhook
          .alerts("RedisRestartedWithDataLoss", "firing")
          .some((a) => /invalidate/.test(a.annotations.description ?? "")),
      );
    } finally {
      await load?.stop();
      await monitor.close();
    }
  });
});
