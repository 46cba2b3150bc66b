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

  /** Makes sure Redis has the script, before it is sent by its sha in a pipeline. */
  async load(client: RedisClient): Promise<void> {
    await client.script("LOAD", this.source);
  }

  /** Queues the script on a pipeline (after load: a pipeline cannot fall back to EVAL). */
  addTo(pipe: ReturnType<RedisClient["pipeline"]>, keys: string[], args: (string | number | Buffer)[]): void {
    pipe.evalsha(this.sha, keys.length, ...keys, ...args);
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
