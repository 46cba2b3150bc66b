import { Redis, type RedisOptions } from "ioredis";

export interface SentinelAddress {
  host: string;
  port: number;
}

const CHANNEL = "+switch-master";

/**
 * A Sentinel-mode client that moves to the new primary as soon as a Sentinel announces
 * `+switch-master` for its master, also when the old primary died.
 *
 * ioredis' own failoverDetector hears the announcement too, but all it does is end the current
 * connection: when the primary died that connection is already gone, and the client found the
 * new primary only at its next retry, up to a second later (retries back off to 1 s), in every
 * node and the monitor. This client subscribes on each Sentinel itself and, while it is waiting
 * to retry, connects at once. A connection attempt already under way (a dead host that drops
 * packets instead of refusing them) still runs to its connect timeout first.
 */
export class SentinelFollowingRedis extends Redis {
  private readonly subscribers: Redis[];
  /** The `ip:port` of the last announcement acted on: every Sentinel sends each one. */
  private followed: string | undefined;

  constructor(options: Omit<RedisOptions, "replyMapping"> & { sentinels: SentinelAddress[]; name: string }) {
    super({ ...options, failoverDetector: false });
    this.subscribers = options.sentinels.map((s) => {
      const sub = new Redis({
        host: s.host,
        port: s.port,
        lazyConnect: true,
        connectTimeout: options.connectTimeout,
        // The SUBSCRIBE waits for a Sentinel that is down, however long it stays down.
        maxRetriesPerRequest: null,
        retryStrategy: (attempt: number) => Math.min(100 * 2 ** attempt, 2000),
      });
      sub.on("error", () => {}); // a Sentinel that is down is the others' to cover
      sub.on("message", (_channel: string, message: string) => this.onSwitch(options.name, message));
      sub.subscribe(CHANNEL).catch(() => {});
      return sub;
    });
    // quit() ends the client without calling disconnect().
    this.once("end", () => this.closeSubscribers());
  }

  override disconnect(reconnect = false): void {
    // A client closed while it waits to retry never emits "end": close the subscriptions here.
    if (!reconnect) this.closeSubscribers();
    super.disconnect(reconnect);
  }

  private closeSubscribers(): void {
    for (const sub of this.subscribers) sub.disconnect();
  }

  /** `message` is "<name> <old-ip> <old-port> <new-ip> <new-port>". */
  private onSwitch(name: string, message: string): void {
    const [master, , , ip, port] = message.split(" ");
    const to = `${ip}:${port}`;
    if (master !== name || to === this.followed) return;
    if (this.status === "reconnecting") {
      this.followed = to;
      // The retry that is pending would start a second attempt after this one, which a later
      // disconnect() could not cancel (ioredis keeps only one timer): cancel it first.
      const retry = this as unknown as { reconnectTimeout?: NodeJS.Timeout | null };
      if (retry.reconnectTimeout) clearTimeout(retry.reconnectTimeout);
      retry.reconnectTimeout = null;
      this.connect().catch(() => {});
    } else if (this.status === "ready") {
      this.followed = to;
      const here = `${this.stream?.remoteAddress}:${this.stream?.remotePort}`;
      if (here !== to) super.disconnect(true); // the old primary is alive: leave it
    }
  }
}
