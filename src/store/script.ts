import type { Redis } from "ioredis";

type RedisClient = Redis;
type Arg = string | number | Buffer;
type Pipeline = ReturnType<RedisClient["pipeline"]>;
type Scripted = Record<string, (...args: Arg[]) => Promise<unknown>>;

/** Every script of the project, to be defined on each client as it is made (see defineScripts). */
const ALL: LuaScript[] = [];

/**
 * Makes every script a command of `client` before it sends anything: ioredis' auto-pipelining
 * batches the commands of one tick into a pipeline made when the first was sent, and a command
 * defined after that is missing from it (ioredis #1931: "results[i] is not iterable", thrown
 * as an uncaught exception).
 */
export function defineScripts(client: RedisClient): void {
  for (const script of ALL) script.define(client);
}

/**
 * One Lua script, loaded the ioredis way (`defineCommand`, as BullMQ does): ioredis sends it by
 * its SHA1 (EVALSHA) and falls back to EVAL when Redis does not know it yet (a restarted Redis
 * has an empty script cache), in one round trip in the common case. Scripts are defined on the
 * clients createRedisClient makes as they are made (defineScripts), on any other client at
 * first use, and are then commands of that client and of its pipelines.
 */
export class LuaScript {
  constructor(
    /** The command's name on the client: unique among the project's scripts. */
    private readonly name: string,
    private readonly numberOfKeys: number,
    private readonly lua: string,
  ) {
    ALL.push(this);
  }

  run(client: RedisClient, keys: string[], args: Arg[]): Promise<unknown> {
    return (this.on(client) as unknown as Scripted)[this.name]?.(
      ...this.keysOf(keys),
      ...args,
    ) as Promise<unknown>;
  }

  /** Queues the script on a pipeline of a client it was defined on (see `define`). */
  addTo(pipe: Pipeline, keys: string[], args: Arg[]): void {
    (pipe as unknown as Scripted)[this.name]?.(...this.keysOf(keys), ...args);
  }

  /** Makes the script a command of `client` (and of the pipelines made after). */
  define(client: RedisClient): void {
    this.on(client);
  }

  private on(client: RedisClient): RedisClient {
    if (typeof (client as unknown as Scripted)[this.name] !== "function")
      client.defineCommand(this.name, { numberOfKeys: this.numberOfKeys, lua: this.lua });
    return client;
  }

  private keysOf(keys: string[]): string[] {
    if (keys.length !== this.numberOfKeys)
      throw new Error(`script ${this.name} takes ${this.numberOfKeys} keys, not ${keys.length}`);
    return keys;
  }
}
