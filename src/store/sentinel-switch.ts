import { setTimeout as sleep } from "node:timers/promises";
import { Redis, type RedisOptions } from "ioredis";

/** One Sentinel, as the `redis.sentinels` configuration lists it. */
export interface SentinelAddress {
  host: string;
  port: number;
}

const SWITCH = "+switch-master";
/** The leader Sentinel has sent REPLICAOF NO ONE to the replica it chose. */
const PROMOTING = "+failover-state-wait-promotion";
/** How long a promotion is watched for before it is left to the Sentinels' announcement. */
const PROMOTION_WATCH_MS = 5000;
const PROMOTION_POLL_MS = 20;

type Options = Omit<RedisOptions, "replyMapping" | "natMap"> & { sentinels: SentinelAddress[]; name: string };

/**
 * A Sentinel-mode client that moves to the new primary as soon as it is one, also when the old
 * primary died.
 *
 * ioredis' own failoverDetector hears `+switch-master` too, but all it does is end the current
 * connection: when the primary died that connection is already gone, and the client found the
 * new primary only at its next retry, up to a second later (retries back off to 1 s), in every
 * node and the monitor. This client subscribes on each Sentinel itself and, while it is waiting
 * to retry, connects at once.
 *
 * `+switch-master` itself comes late: the leader announces `+failover-state-wait-promotion`
 * right after it sends REPLICAOF NO ONE, but waits for the replica's next INFO reply (once a
 * second) before it announces the switch. A client whose primary is gone watches that replica
 * instead, and once ROLE says it is a master, connects to it: Sentinels still name the old
 * primary until the switch, so their answer is mapped to the promoted replica meanwhile.
 */
export class SentinelFollowingRedis extends Redis {
  private readonly subscribers: Redis[];
  /** The `ip:port` of the last primary followed: every Sentinel sends each announcement. */
  private followed: string | undefined;
  /** Old primary `ip:port` → the replica seen promoted, for the Sentinels' answers. */
  private readonly detours: Map<string, SentinelAddress>;
  private watching: string | undefined;
  /** A primary to follow once the connection attempt under way is over. */
  private followAfterAttempt = false;
  private closed = false;

  constructor(options: Options) {
    const detours = new Map<string, SentinelAddress>();
    super({
      ...options,
      failoverDetector: false,
      natMap: (key: string) => detours.get(key) ?? null,
      // The ready check is what refuses a server that is not (or no longer) a master.
      enableReadyCheck: true,
    });
    this.detours = detours;
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
      sub.on("message", (channel: string, message: string) => {
        if (this.closed) return;
        if (channel === SWITCH) this.onSwitch(options.name, message);
        else this.onPromoting(options, message);
      });
      sub.subscribe(SWITCH, PROMOTING).catch(() => {});
      return sub;
    });
    this.on("reconnecting", () => {
      if (!this.followAfterAttempt) return;
      this.followAfterAttempt = false;
      this.connectNow();
    });
    this.on("ready", () => {
      if (!this.followAfterAttempt) return;
      this.followAfterAttempt = false;
      this.leaveUnlessOn(this.followed);
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
    this.closed = true;
    this.followAfterAttempt = false;
    for (const sub of this.subscribers) sub.disconnect();
  }

  /** `message` is "<name> <old-ip> <old-port> <new-ip> <new-port>". */
  private onSwitch(name: string, message: string): void {
    const [master, oldIp, oldPort, ip, port] = message.split(" ");
    if (master !== name) return;
    this.detours.delete(`${oldIp}:${oldPort}`); // the Sentinels name the new primary themselves
    const to = `${ip}:${port}`;
    if (to === this.followed) return;
    if (this.status === "ready") {
      this.followed = to;
      this.leaveUnlessOn(to); // the old primary is alive (a manual failover): leave it
    } else {
      this.follow(to);
    }
  }

  /** `message` is "slave <ip>:<port> <ip> <port> @ <name> <old-ip> <old-port>". */
  private onPromoting(options: Options, message: string): void {
    const [, , ip, port, , master, oldIp, oldPort] = message.split(" ");
    const to = `${ip}:${port}`;
    // A primary that still answers is left to +switch-master: it may be a manual failover.
    if (master !== options.name || this.status === "ready" || to === this.watching || to === this.followed)
      return;
    this.watching = to;
    const replica = { host: ip as string, port: Number(port) };
    this.watchPromotion(options, `${oldIp}:${oldPort}`, replica)
      .catch(() => {})
      .finally(() => {
        if (this.watching === to) this.watching = undefined;
      });
  }

  private async watchPromotion(options: Options, from: string, replica: SentinelAddress): Promise<void> {
    const to = `${replica.host}:${replica.port}`;
    const probe = new Redis({
      ...replica,
      username: options.username,
      password: options.password,
      // The same transport as the client's own connection to a primary.
      ...(options.enableTLSForSentinelMode && options.tls ? { tls: options.tls } : {}),
      connectTimeout: options.connectTimeout,
      commandTimeout: 250,
      // The promotion ends with CLIENT KILL: the probe reconnects and asks again.
      retryStrategy: () => PROMOTION_POLL_MS,
      maxRetriesPerRequest: 1,
      disconnectTimeout: 100,
    });
    probe.on("error", () => {});
    const until = Date.now() + PROMOTION_WATCH_MS;
    const lookingFor = () =>
      !this.closed && this.status !== "ready" && this.followed !== to && Date.now() < until;
    try {
      while (lookingFor()) {
        const role = await probe.call("ROLE").catch(() => undefined);
        if (!lookingFor()) return;
        if (Array.isArray(role) && role[0] === "master") {
          this.detours.set(from, replica);
          // By then the Sentinels name it themselves, or gave the failover up.
          setTimeout(() => {
            if (this.detours.get(from) === replica) this.detours.delete(from);
          }, PROMOTION_WATCH_MS).unref();
          this.follow(to);
          return;
        }
        await sleep(PROMOTION_POLL_MS);
      }
    } finally {
      probe.disconnect();
    }
  }

  /** Connects to the primary now rather than at the pending retry. */
  private follow(to: string): void {
    if (this.closed) return;
    this.followed = to;
    if (this.status === "reconnecting") this.connectNow();
    // An attempt is under way (a dead host that drops packets runs to its connect timeout):
    // when it fails, skip the back-off; when it lands elsewhere, leave.
    else if (this.status === "connecting" || this.status === "connect") this.followAfterAttempt = true;
  }

  private leaveUnlessOn(to: string | undefined): void {
    const here = `${this.stream?.remoteAddress}:${this.stream?.remotePort}`;
    if (to !== undefined && here !== to) super.disconnect(true);
  }

  private connectNow(): void {
    if (this.closed) return;
    // The retry that is pending would start a second attempt after this one, which a later
    // disconnect() could not cancel (ioredis keeps only one timer): cancel it first.
    const retry = this as unknown as { reconnectTimeout?: NodeJS.Timeout | null };
    if (retry.reconnectTimeout) clearTimeout(retry.reconnectTimeout);
    retry.reconnectTimeout = null;
    this.connect().catch(() => {});
  }
}
