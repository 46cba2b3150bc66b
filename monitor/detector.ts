/** Detection: is Redis reachable, and did it restart, fail over or lose its data? */
import type { Logger } from "pino";
import { ConnectionHealth } from "../src/store/connection-health.js";
import { ensureOrRepairEpoch } from "../src/store/epoch.js";
import type { StoreKeys } from "../src/store/keys.js";
import type { RedisClient } from "../src/store/redis.js";
import type { Alerter } from "./alerts.js";
import { secondsAgo } from "./clock.js";
import { classify, type Finding, type Observation, parseInfoServer } from "./detect.js";
import type { EventAlerts } from "./event-alerts.js";
import type { MonitorMetrics } from "./metrics.js";
import type { RecentEvent } from "./recent.js";
import type { Settler } from "./settler.js";
import type { Snapshotter } from "./snapshotter.js";

/** Since when Redis has not been reached, and the last reason. */
export interface Unreachable {
  since: number;
  error: string;
}

/** An outage as the detector follows it: with the /status event it told, revised as it learns. */
interface Outage extends Unreachable {
  told: RecentEvent;
}

/** What the Detector looks at and hands its findings to. */
export interface DetectorOptions {
  redis: RedisClient;
  keys: StoreKeys;
  log: Logger;
  metrics: MonitorMetrics;
  alerter: Alerter;
  events: EventAlerts;
  settler: Settler;
  snapshotter: Snapshotter;
  /** Redis unreachable this long fires RedisUnreachable (monitor.unreachableForSeconds). */
  unreachableForMs: number;
}

/**
 * Detection: one pass looks at Redis (INFO server, ROLE, the epoch), says whether it is
 * reachable (RedisUnreachable), and classifies what changed since the last pass: a restart or
 * failover is an event, a data loss goes to the settler. One pass at a time, whoever asks.
 */
export class Detector {
  private prev: Observation | undefined;
  private knownEpochId: string | undefined;
  private down: Outage | undefined;
  /** The epoch whose data loss was counted, so a retried one is counted once. */
  private countedLoss: string | undefined;
  private lastPass = 0;
  private running: Promise<void> | undefined;
  /** The connection's own error: commands refused meanwhile only say the stream is closed. */
  private readonly connection: ConnectionHealth;
  private readonly lookNow = () => {
    this.pass().catch((err: Error) => this.o.log.warn({ event: "detect_failed", err: err.message }));
  };

  constructor(private readonly o: DetectorOptions) {
    // A data loss that happened while the monitor was down is still recognised.
    this.knownEpochId = o.snapshotter.current?.epochId;
    this.connection = new ConnectionHealth(o.redis);
    // Registered after ConnectionHealth's own listener, so it reads the error just recorded.
    o.redis.on("error", () => {
      const failure = this.connection.lastFailure;
      if (this.down && failure && o.redis.status !== "ready") this.explain(this.down, failure.message);
    });
  }

  /**
   * A lost connection (Redis down) and a reconnect (Redis restarted, or Sentinel switched the
   * primary: the client follows +switch-master) are looked at now, not at the next tick.
   */
  watchConnection(): void {
    this.o.redis.on("ready", this.lookNow);
    this.o.redis.on("close", this.lookNow);
  }

  /** Before the monitor's own disconnect, which is no outage. */
  unwatchConnection(): void {
    this.o.redis.off("ready", this.lookNow);
    this.o.redis.off("close", this.lookNow);
  }

  get unreachable(): Unreachable | undefined {
    return this.down && { since: this.down.since, error: this.down.error };
  }

  /** The last look at Redis that succeeded, if any. */
  get lastObservation(): Observation | undefined {
    return this.prev;
  }

  /** When the last pass began (ms since the epoch; 0 before the first). */
  get lastPassAt(): number {
    return this.lastPass;
  }

  /** The epoch snapshots may be taken in: the one last seen and settled; none before a look. */
  knownEpoch(): string | undefined {
    return this.prev ? this.knownEpochId : undefined;
  }

  /** The pass running now, if any: shutdown waits for it. */
  get passing(): Promise<void> | undefined {
    return this.running;
  }

  /** Runs one pass, or joins the one running. */
  pass(): Promise<void> {
    this.running ??= this.look().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async look(): Promise<void> {
    const now = Date.now();
    this.lastPass = now;
    this.o.snapshotter.checkAge(now);
    let cur: Observation;
    try {
      cur = await this.observe(now);
    } catch (err) {
      this.unreachableNow(err as Error, now);
      return;
    }
    this.reachable();
    // Not marked known until handled, so a failure, or another monitor still at it, is
    // looked at again on the next pass.
    const handled = await this.act(classify(this.prev, cur, this.knownEpochId), cur);
    this.prev = cur;
    if (handled) this.knownEpochId = cur.epoch.id;
  }

  private async observe(now: number): Promise<Observation> {
    const { redis, keys } = this.o;
    const [info, role] = await Promise.all([redis.info("server"), redis.call("ROLE") as Promise<unknown[]>]);
    const server = parseInfoServer(info);
    const roleName = Array.isArray(role) ? String(role[0]) : "unknown";
    if (roleName !== "master") throw new Error(`connected to a ${roleName}, not the master`);
    // A record that is not a valid epoch is replaced by a fresh one: handled as a data loss.
    return { at: now, ...server, role: roleName, epoch: await ensureOrRepairEpoch(redis, keys, now) };
  }

  private unreachableNow(err: Error, now: number): void {
    this.o.metrics.redisUp.set(0);
    const error = this.reason(err);
    let down = this.down;
    if (down === undefined) {
      this.o.log.warn({ event: "redis_unreachable", err: error });
      down = { since: now, error, told: this.o.events.note("RedisUnreachable", unreachableText(error)) };
      this.down = down;
    } else this.explain(down, error);
    if (now - down.since < this.o.unreachableForMs) return;
    this.o.alerter.fire("RedisUnreachable", {
      summary: "The signing cluster's Redis is unreachable",
      description: `The monitor has not reached the Redis master for ${secondsAgo(down.since)}s: ${error}. Nodes follow store.downPolicy meanwhile.`,
    });
  }

  /**
   * The connection's error often comes after the first refused command (the pass its close
   * started): the outage's event then says the cause, in its place.
   */
  private explain(down: Outage, error: string): void {
    if (down.error === error) return;
    down.error = error;
    this.o.events.revise(down.told, unreachableText(error));
  }

  /**
   * Why Redis is not reached: with the connection up, the command's error (a replica, a
   * timeout); with it down, the connection's own (`connect ECONNREFUSED …`), as a command
   * refused meanwhile only says the stream is not writeable.
   */
  private reason(err: Error): string {
    const { status } = this.o.redis;
    if (status === "ready") return err.message;
    return this.connection.lastFailure?.message ?? `no connection (ioredis: ${status})`;
  }

  private reachable(): void {
    this.o.metrics.redisUp.set(1);
    if (this.down === undefined) return;
    const seconds = secondsAgo(this.down.since);
    this.o.log.info({ event: "redis_reachable", downSeconds: seconds });
    this.o.events.note("RedisReachable", `Redis reachable again after ${seconds}s`);
    this.o.alerter.resolve("RedisUnreachable");
    this.down = undefined;
  }

  /** Acts on a finding; false when a data loss is not handled yet. */
  private async act(finding: Finding, cur: Observation): Promise<boolean> {
    if (finding.kind === "data_loss") {
      this.countLoss(cur, finding.previousEpochId);
      return this.o.settler.onDataLoss(cur, finding.previousEpochId);
    }
    if (finding.kind === "restart" || finding.kind === "failover") this.restarted(finding.kind, cur);
    return true;
  }

  private countLoss(cur: Observation, previousEpochId: string): void {
    if (this.countedLoss === cur.epoch.id) return;
    this.countedLoss = cur.epoch.id;
    this.o.metrics.restarts.inc({ kind: "data_loss" });
    this.o.log.warn({
      event: "redis_data_loss",
      runId: cur.runId,
      previousEpoch: previousEpochId,
      epoch: cur.epoch.id,
    });
  }

  private restarted(kind: "restart" | "failover", cur: Observation): void {
    const prev = this.prev;
    this.o.metrics.restarts.inc({ kind });
    this.o.log.warn({
      event: `redis_${kind}`,
      runId: cur.runId,
      previousRunId: prev?.runId,
      epoch: cur.epoch.id,
    });
    this.o.events.event("RedisRestarted", {
      summary:
        kind === "failover"
          ? "Redis failed over to another server, data intact"
          : "Redis restarted, data intact",
      description: `Redis run_id changed ${prev?.runId.slice(0, 8)} → ${cur.runId.slice(0, 8)} (up ${cur.uptimeSeconds}s); the epoch ${cur.epoch.id} is unchanged, so no token was lost. Nothing to do unless it repeats.`,
    });
  }
}

const unreachableText = (error: string) => `the monitor cannot reach the Redis master: ${error}`;
