import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { followSwitchMaster } from "../../src/store/sentinel-switch.js";
import { TestRedis } from "../helpers/redis.js";

const NAME = "signing-switch";
let primary: TestRedis;
let replica: TestRedis;
let sentinels: TestRedis[] = [];

before(async () => {
  primary = await TestRedis.start();
  replica = await TestRedis.start(["--replicaof", "127.0.0.1", String(primary.port)]);
  sentinels = await Promise.all([0, 1, 2].map(() => TestRedis.startSentinel(primary.port, NAME)));
  const probe = new Redis(primary.url);
  try {
    for (let i = 0; !/state=online/.test(await probe.info("replication")); i++) {
      assert.ok(i < 100, "the replica never caught up");
      await sleep(100);
    }
  } finally {
    probe.disconnect();
  }
});
after(async () => {
  for (const s of [...sentinels, replica, primary]) await s?.stop();
});

function readyOn(client: Redis): Promise<void> {
  return new Promise((resolve) => client.once("ready", () => resolve()));
}

/** Whether `p` settles within `ms`. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([p.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

test("a client whose primary died moves to the new one on +switch-master, not on its next retry", async () => {
  // A retry a minute away: only the +switch-master subscription can bring it back in time.
  const client = new Redis({
    sentinels: sentinels.map((s) => ({ host: "127.0.0.1", port: s.port })),
    name: NAME,
    retryStrategy: () => 60_000,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
  });
  client.on("error", () => {});
  followSwitchMaster(
    client,
    sentinels.map((s) => ({ host: "127.0.0.1", port: s.port })),
    NAME,
  );
  try {
    await readyOn(client);
    assert.equal(Number((await client.info("server")).match(/tcp_port:(\d+)/)?.[1]), primary.port);

    const reconnecting = new Promise<number>((resolve) => client.once("reconnecting", resolve));
    const back = readyOn(client);
    await primary.kill();
    assert.equal(await reconnecting, 60_000, "the client waits a minute before its next retry");
    // Sentinel needs ~2 s (down-after-milliseconds 1000) to fail over.
    assert.ok(await within(back, 20_000), "connected again before its next retry");

    const info = await client.info("server");
    assert.equal(
      Number(info.match(/tcp_port:(\d+)/)?.[1]),
      replica.port,
      "connected to the promoted replica",
    );
    assert.equal((await client.role())[0], "master");
  } finally {
    client.disconnect();
  }
});
