import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";

export { freePort, RedisServer as TestRedis } from "../../scripts/redis-server.js";

/** Resolves once the primary at `primaryUrl` has a replica that is online; throws after ~10 s. */
export async function waitForReplica(primaryUrl: string): Promise<void> {
  const client = new Redis(primaryUrl);
  try {
    for (let i = 0; i < 100; i++) {
      const info = await client.info("replication");
      if (/connected_slaves:1/.test(info) && /state=online/.test(info)) return;
      await sleep(100);
    }
    throw new Error("the replica never caught up with the primary");
  } finally {
    client.disconnect();
  }
}
