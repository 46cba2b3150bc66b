import { createHash } from "node:crypto";
import type { RedisClient } from "./redis.js";

/**
 * A Lua script run by EVALSHA, falling back to EVAL when Redis does not know it (a restarted
 * Redis has an empty script cache): one round trip in the common case.
 */
export class LuaScript {
  private readonly sha: string;

  constructor(private readonly source: string) {
    this.sha = createHash("sha1").update(source).digest("hex");
  }

  async run(client: RedisClient, keys: string[], args: (string | number | Buffer)[]): Promise<unknown> {
    try {
      return await client.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (e) {
      if (!(e instanceof Error) || !e.message.startsWith("NOSCRIPT")) throw e;
      return client.eval(this.source, keys.length, ...keys, ...args);
    }
  }
}
