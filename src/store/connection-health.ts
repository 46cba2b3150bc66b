import type { RedisClient } from "./redis.js";

/** The connection's last failure: what it was, and since when it has been failing. */
export interface ConnectionFailure {
  message: string;
  /** When the current run of failures began (ms since the epoch). */
  since: number;
}

/**
 * Remembers why a Redis connection is failing, from the client's own error events, until it
 * is ready again. A command failing fast while the connection is down only says "Stream isn't
 * writeable" or "Breaker is open"; the connection's error says what is wrong (`connect
 * ECONNREFUSED 10.0.0.5:6379`, `getaddrinfo ENOTFOUND redis-a`), and operators need that one.
 */
export class ConnectionHealth {
  private failing: ConnectionFailure | undefined;

  constructor(client: RedisClient, now: () => number = Date.now) {
    client.on("error", (err: Error) => {
      this.failing = { message: err.message, since: this.failing?.since ?? now() };
    });
    client.on("ready", () => {
      this.failing = undefined;
    });
  }

  get lastFailure(): ConnectionFailure | undefined {
    return this.failing;
  }

  /** "connect ECONNREFUSED … since 2026-12-06T18:00:00.000Z (93 s)", or undefined when fine. */
  describe(now = Date.now()): string | undefined {
    const f = this.failing;
    if (!f) return undefined;
    return `${f.message}, failing since ${new Date(f.since).toISOString()} (${Math.round((now - f.since) / 1000)} s)`;
  }
}
