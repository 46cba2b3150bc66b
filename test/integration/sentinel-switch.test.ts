import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { waitForReady } from "../../src/store/redis.js";
import { SentinelFollowingRedis } from "../../src/store/sentinel-switch.js";
import { TestRedis, waitForReplica } from "../helpers/redis.js";

const NAME = "signing-switch";
let primary: TestRedis;
let replica: TestRedis;
let sentinels: TestRedis[] = [];

before(async () => {
  primary = await TestRedis.start();
  replica = await TestRedis.start(["--replicaof", "127.0.0.1", String(primary.port)]);
  await waitForReplica(primary.url);
  sentinels = await Promise.all([0, 1, 2].map(() => TestRedis.startSentinel(primary.port, NAME)));
});
after(async () => {
  for (const s of [...sentinels, replica, primary]) await s?.stop();
});

const portOf = async (client: SentinelFollowingRedis) =>
  Number((await client.info("server")).match(/tcp_port:(\d+)/)?.[1]);

test("a client whose primary died moves to the new one on +switch-master, not on its next retry", async () => {
  // A plain Redis listed last stands for a Sentinel whose announcement comes late: the test
  // publishes on it. The real Sentinels come first, so the client asks them for the primary.
  const late = await TestRedis.start();
  const announce = new Redis(late.url);
  // A retry a minute away: only the +switch-master subscription can bring it back in time.
  const client = new SentinelFollowingRedis({
    sentinels: [...sentinels, late].map((s) => ({ host: "127.0.0.1", port: s.port })),
    name: NAME,
    retryStrategy: () => 60_000,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
  });
  client.on("error", () => {});
  try {
    await waitForReady(client, 10_000);
    assert.equal(await portOf(client), primary.port);

    const reconnecting = new Promise<number>((resolve) => client.once("reconnecting", resolve));
    let readies = 0;
    client.on("ready", () => readies++);
    await primary.kill();
    assert.equal(await reconnecting, 60_000, "the client waits a minute before its next retry");
    // Sentinel needs ~2 s (down-after-milliseconds 1000) to fail over.
    await waitForReady(client, 20_000);
    assert.equal(await portOf(client), replica.port, "connected to the promoted replica");
    assert.equal((await client.role())[0], "master");

    // Every Sentinel announces each switch, some late; other masters' switches are not ours.
    const subscribed = async () =>
      Number(((await announce.call("PUBSUB", "NUMSUB", "+switch-master")) as [string, number])[1]);
    for (let i = 0; i < 50 && (await subscribed()) < 1; i++) await sleep(100);
    await announce.publish("+switch-master", `${NAME} 127.0.0.1 ${primary.port} 127.0.0.1 ${replica.port}`);
    await announce.publish("+switch-master", `other-master 127.0.0.1 1 127.0.0.1 2`);
    await sleep(500);
    assert.equal(client.status, "ready", "the repeated announcement left the new connection be");
    assert.equal(readies, 1, "connected once to the new primary");
  } finally {
    client.disconnect();
    announce.disconnect();
    await late.stop();
  }
});

/** Until every Sentinel names `port` as the primary (10 s at most). */
async function sentinelsName(port: number): Promise<void> {
  const asks = sentinels.map((s) => new Redis(s.port));
  try {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const named = await Promise.all(
        asks.map(async (a) =>
          Number(((await a.call("SENTINEL", "get-master-addr-by-name", NAME)) as string[])[1]),
        ),
      );
      if (named.every((p) => p === port)) return;
      if (Date.now() > deadline) throw new Error(`Sentinels name ports ${named.join(", ")}, not ${port}`);
      await sleep(100);
    }
  } finally {
    for (const a of asks) a.disconnect();
  }
}

test("a client closed while it waits to retry closes its Sentinel subscriptions too", async () => {
  // The first test's client followed the promotion before the Sentinels announced it. This one
  // asks them: had it asked before the switch and subscribed after, it would wait its minute.
  await sentinelsName(replica.port);
  const client = new SentinelFollowingRedis({
    sentinels: sentinels.map((s) => ({ host: "127.0.0.1", port: s.port })),
    name: NAME,
    retryStrategy: () => 60_000,
    enableOfflineQueue: false,
  });
  client.on("error", () => {});
  const sentinel = sentinels[0] as TestRedis;
  const probe = new Redis(sentinel.port);
  try {
    await waitForReady(client, 10_000);
    const subscribers = async () =>
      ((await probe.call("CLIENT", "LIST")) as string).split("\n").filter((l) => /\bsub=[1-9]/.test(l))
        .length;
    const before = await subscribers();
    assert.ok(before >= 1, "subscribed on the Sentinel");
    // Its primary (the replica the first test promoted) goes away for good: it waits to retry.
    const reconnecting = new Promise((resolve) => client.once("reconnecting", resolve));
    await replica.kill();
    await reconnecting;
    client.disconnect();
    for (let i = 0; i < 50 && (await subscribers()) >= before; i++) await sleep(100);
    assert.equal(await subscribers(), before - 1, "its subscription on the Sentinel is gone");
  } finally {
    probe.disconnect();
    client.disconnect();
  }
});

const PROMOTING = "+failover-state-wait-promotion";

/**
 * A primary and its replica, a Sentinel that keeps naming the primary (it would wait a minute
 * to call it down), and a plain Redis standing for the leader Sentinel, on which the test
 * announces a promotion. The client's retry is a minute away: only following can bring it back.
 */
async function promotionRig(name: string) {
  const servers: TestRedis[] = [];
  const started = async (s: Promise<TestRedis>) => {
    servers.unshift(await s);
    return servers[0] as TestRedis;
  };
  const old = await started(TestRedis.start());
  const next = await started(TestRedis.start(["--replicaof", "127.0.0.1", String(old.port)]));
  const sentinel = await started(TestRedis.startSentinel(old.port, name, 60_000));
  const leader = await started(TestRedis.start());
  const announce = new Redis(leader.url);
  const client = new SentinelFollowingRedis({
    sentinels: [sentinel, leader].map((s) => ({ host: "127.0.0.1", port: s.port })),
    name,
    retryStrategy: () => 60_000,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
  });
  client.on("error", () => {});
  const stop = async () => {
    client.disconnect();
    announce.disconnect();
    for (const s of servers) await s.stop();
  };
  try {
    await waitForReplica(old.url);
    await waitForReady(client, 10_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    old,
    next,
    sentinel,
    client,
    /** Kills the primary; resolves once the client waits to retry and hears the leader. */
    async killPrimary() {
      const reconnecting = new Promise<number>((resolve) => client.once("reconnecting", resolve));
      await old.kill();
      assert.equal(await reconnecting, 60_000, "the client waits a minute before its next retry");
      const subscribed = async () =>
        Number(((await announce.call("PUBSUB", "NUMSUB", PROMOTING)) as [string, number])[1]);
      for (let i = 0; i < 50 && (await subscribed()) < 1; i++) await sleep(100);
    },
    promoting: (master: string) =>
      announce.publish(
        PROMOTING,
        `slave 127.0.0.1:${next.port} 127.0.0.1 ${next.port} @ ${master} 127.0.0.1 ${old.port}`,
      ),
    /** What the leader Sentinel sends to the replica it chose. */
    async promote() {
      const r = new Redis(next.port);
      await r.call("REPLICAOF", "NO", "ONE");
      r.disconnect();
    },
    stop,
  };
}

test("a client whose primary died connects to the replica being promoted, before the switch is announced", async () => {
  const name = "signing-promote";
  const rig = await promotionRig(name);
  const ask = new Redis(rig.sentinel.port);
  try {
    await rig.killPrimary();
    await rig.promoting("other-master");
    await rig.promoting(name);
    await sleep(300);
    assert.equal(rig.client.status, "reconnecting", "a replica that is not promoted yet is not followed");

    await rig.promote();
    await waitForReady(rig.client, 2000);
    assert.equal(await portOf(rig.client), rig.next.port, "connected to the promoted replica");
    assert.equal((await rig.client.role())[0], "master");
    const named = (await ask.call("SENTINEL", "get-master-addr-by-name", name)) as string[];
    assert.equal(Number(named[1]), rig.old.port, "before any Sentinel names it");
  } finally {
    ask.disconnect();
    await rig.stop();
  }
});

test("a client closed while it watches a promotion stays closed", async () => {
  const name = "signing-promote-closed";
  const rig = await promotionRig(name);
  const probe = new Redis(rig.next.port);
  try {
    await rig.killPrimary();
    await rig.promote();
    await rig.promoting(name);
    // Closed as its first ROLE is on the way: the answer (master) must not reopen it.
    const watch = rig.client as unknown as { watching?: string };
    while (!watch.watching) await sleep(0);
    rig.client.disconnect();
    await sleep(500);
    assert.equal(rig.client.status, "reconnecting", "never connected again after disconnect()");
    const roleProbes = async () =>
      ((await probe.call("CLIENT", "LIST")) as string).split("\n").filter((l) => /\bcmd=role\b/.test(l))
        .length;
    for (let i = 0; i < 50 && (await roleProbes()) > 0; i++) await sleep(20);
    assert.equal(await roleProbes(), 0, "its ROLE probe is closed");
  } finally {
    probe.disconnect();
    await rig.stop();
  }
});
