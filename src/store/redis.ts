import { Redis } from "ioredis";
import type { Config } from "../config/schema.js";
import { StoreUnavailableError } from "./errors.js";
import { defineScripts } from "./script.js";
import { SentinelFollowingRedis } from "./sentinel-switch.js";

export type RedisClient = Redis;

/**
 * Which Redis (a URL or Sentinels), how long a command may take, and the password read from its
 * secret.
 */
export interface RedisClientOptions {
  redis: Config["redis"];
  /** Every command fails after this (`store.commandTimeoutMs`). */
  commandTimeoutMs: number;
  password?: string | undefined;
}

/**
 * The one place a Redis client is made. Every command is bounded: it fails after
 * `commandTimeoutMs`, is retried at most once across a reconnect, and is refused at once
 * while the connection is down (no offline queue), so no request waits on a dead Redis.
 */
export function createRedisClient({ redis, commandTimeoutMs, password }: RedisClientOptions): RedisClient {
  const common = {
    commandTimeout: commandTimeoutMs,
    connectTimeout: redis.connectTimeoutMs,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    enableAutoPipelining: true,
    // Reconnect quickly but not in a tight loop: Redis restarts take about a second.
    retryStrategy: (attempt: number) => Math.min(50 * 2 ** attempt, 1000),
    password,
  };
  // Sentinel's +switch-master moves the client to the new primary at once, instead of on its
  // next retry against a dead one (SentinelFollowingRedis says why not failoverDetector).
  const client = redis.sentinels
    ? new SentinelFollowingRedis({ ...common, sentinels: redis.sentinels, name: redis.name as string })
    : new Redis(redis.url as string, common);
  defineScripts(client);
  return client;
}

/** Resolves when the client is connected, rejects after `timeoutMs`. */
export function waitForReady(client: RedisClient, timeoutMs: number): Promise<void> {
  if (client.status === "ready") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off("ready", onReady);
      reject(new StoreUnavailableError("connect", `Redis not ready after ${timeoutMs} ms`));
    }, timeoutMs);
    const onReady = () => {
      clearTimeout(timer);
      resolve();
    };
    client.once("ready", onReady);
  });
}
