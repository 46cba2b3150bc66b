import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { Redis } from "ioredis";
import { createRedisClient, waitForReady } from "../../src/store/redis.js";
import { TestRedis } from "../helpers/redis.js";

let redis: TestRedis;
before(async () => {
  redis = await TestRedis.start();
});
after(async () => {
  await redis?.stop();
});

// V8 keeps optimised code per object shape: a field added to the client on its first
// reconnect deoptimises every store call mid-outage (src/store/redis.ts says what it cost).
test("a Redis client keeps the same fields across a Redis restart with commands in flight", async () => {
  const client = createRedisClient({
    redis: { url: redis.url, connectTimeoutMs: 1000 },
    commandTimeoutMs: 1000,
  }) as Redis;
  client.on("error", () => {});
  let stop = false;
  try {
    await waitForReady(client, 5000);
    const before = Reflect.ownKeys(client).map(String).sort();

    // Commands in flight when the connection drops make ioredis keep them for a resend.
    const load = (async () => {
      while (!stop) await Promise.allSettled(Array.from({ length: 50 }, (_, i) => client.set(`k${i}`, "v")));
    })();
    await sleep(50);
    await redis.restart();
    // The client may not have seen the close yet: retry until a write reaches the new process.
    for (let i = 0; ; i++) {
      const ok = await client.set("after", "restart").then(
        () => true,
        () => false,
      );
      if (ok) break;
      assert.ok(i < 100, "the client never reconnected");
      await sleep(50);
    }
    stop = true;
    await load;

    assert.equal(await client.get("after"), "restart", "the client reconnected to the new process");
    assert.deepEqual(Reflect.ownKeys(client).map(String).sort(), before);
  } finally {
    stop = true; // a failed assertion must not leave the load loop spinning
    client.disconnect();
  }
});
