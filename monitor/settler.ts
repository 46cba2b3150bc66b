/** Settling a data loss: re-seed from the snapshot or invalidate, then mark the epoch. */
import type { Logger } from "pino";
import { lockEpoch, reseed, unlockEpoch } from "../src/recovery/restore.js";
import type { Snapshot } from "../src/recovery/snapshot.js";
import { ensureEpoch, setEpochState } from "../src/store/epoch.js";
import type { StoreKeys } from "../src/store/keys.js";
import type { RedisClient } from "../src/store/redis.js";
import { secondsAgo } from "./clock.js";
import type { Observation } from "./detect.js";
import type { EventAlerts } from "./event-alerts.js";
import type { MonitorMetrics } from "./metrics.js";
import type { Snapshotter } from "./snapshotter.js";

/** What the Settler acts on and through. */
export interface SettlerOptions {
  redis: RedisClient;
  keys: StoreKeys;
  log: Logger;
  metrics: MonitorMetrics;
  events: EventAlerts;
  snapshotter: Snapshotter;
  /** Who holds the epoch's lock while settling: this monitor's id. */
  monitorId: string;
  /** monitor.onDataLoss: put back what the snapshot has, or invalidate what was issued before. */
  onDataLoss: "reseed" | "invalidate";
}

/**
 * Settling one data loss: under the new epoch's lock (one monitor at a time), re-seed from the
 * snapshot or invalidate the tokens issued before, mark the epoch decided (which ends the
 * nodes' grace), and tell everyone with RedisRestartedWithDataLoss.
 */
export class Settler {
  /** The epoch whose lock this monitor took: released at shutdown rather than left to its TTL. */
  private locked: string | undefined;

  constructor(private readonly o: SettlerOptions) {}

  /** Gives up the epoch lock this monitor holds, if any, so another monitor need not wait for it. */
  async release(): Promise<void> {
    const epochId = this.locked;
    if (epochId === undefined) return;
    this.locked = undefined;
    await unlockEpoch(this.o.redis, this.o.keys, epochId).catch((err: Error) =>
      this.o.log.warn({ event: "epoch_unlock_failed", epoch: epochId, err: err.message }),
    );
  }

  /** Acts on a data loss; false when another monitor holds it (look again next tick). */
  async onDataLoss(cur: Observation, previousEpochId: string): Promise<boolean> {
    const { redis, keys, log } = this.o;
    const base = `Redis (run_id ${cur.runId.slice(0, 8)}, up ${cur.uptimeSeconds}s) came back without its data: epoch ${previousEpochId} was replaced by ${cur.epoch.id}.`;
    if (cur.epoch.state !== "fresh") {
      log.info({ event: "data_loss_already_settled", epoch: cur.epoch.id, state: cur.epoch.state });
      this.o.events.event("RedisRestartedWithDataLoss", {
        summary: "Redis restarted and lost its data (already handled)",
        description: `${base} The epoch is already ${cur.epoch.state} (another monitor or an operator acted).`,
      });
      return true;
    }
    if (!(await lockEpoch(redis, keys, cur.epoch.id, this.o.monitorId))) {
      log.debug({ event: "data_loss_other_monitor", epoch: cur.epoch.id });
      return false;
    }
    this.locked = cur.epoch.id;
    try {
      await this.settle(cur, base);
    } catch (err) {
      // Let the next tick (ours or another monitor's) try again from the start.
      await unlockEpoch(redis, keys, cur.epoch.id).catch(() => {});
      this.locked = undefined;
      throw err;
    }
    return true;
  }

  private async settle(cur: Observation, base: string): Promise<void> {
    const snapshot = this.o.snapshotter.current;
    let description: string;
    if (this.o.onDataLoss === "invalidate") description = await this.invalidate(cur, base, snapshot);
    else if (snapshot && snapshot.epochId !== cur.epoch.id)
      description = await this.reseed(cur, base, snapshot);
    else description = this.nothingToReseed(cur, base, snapshot);
    this.o.events.event("RedisRestartedWithDataLoss", {
      summary: "Redis restarted and lost its data",
      description,
    });
  }

  private async reseed(cur: Observation, base: string, snapshot: Snapshot): Promise<string> {
    const started = Date.now();
    const r = await reseed(this.o.redis, this.o.keys, snapshot);
    // An operator's earlier invalidation (minIat) stays in force in the new epoch.
    const lost = await this.settleEpoch(cur, "restored", snapshot.minIat || undefined);
    this.o.metrics.reseeded.inc(r.tokens);
    const ms = Date.now() - started;
    this.o.log.warn({ event: "reseeded", epoch: cur.epoch.id, ...r, ms, settled: !lost });
    return `${base} Re-seeded ${r.tokens} tokens, ${r.revoked} revocations and ${r.nonces} nonce chains from the snapshot taken ${secondsAgo(snapshot.takenAt)}s before (${r.skippedExpired} expired entries skipped) in ${ms} ms; tokens issued after that snapshot heal on first use.${lost ? ` ${lost}` : " Builds should not notice."}`;
  }

  private nothingToReseed(cur: Observation, base: string, snapshot: Snapshot | undefined): string {
    this.o.log.error({
      event: "reseed_impossible",
      epoch: cur.epoch.id,
      reason: snapshot ? "snapshot is from the new epoch" : "no snapshot",
    });
    return `${base} No snapshot from before the loss: nothing to re-seed. Nodes answer 503 STORE_RECOVERING for lost tokens for store.recoveryGraceMs, then apply their store.orphanPolicy.`;
  }

  private async invalidate(cur: Observation, base: string, snapshot: Snapshot | undefined): Promise<string> {
    const now = Date.now();
    // Tokens issued before the loss, not those the new epoch issued since: nodes refuse every
    // token issued before minIat. Whole seconds, as tokens carry their issue time.
    const lossAt = Math.floor(cur.epoch.createdAt / 1000) * 1000;
    const lost = await this.settleEpoch(cur, "invalidated", lossAt);
    const live = snapshot ? snapshot.tokens.filter((t) => t.expiresAt > now).length : 0;
    if (!lost) this.o.metrics.invalidated.inc(live);
    this.o.log.warn({ event: "invalidated", epoch: cur.epoch.id, tokens: live, settled: !lost });
    return lost
      ? `${base} monitor.onDataLoss is invalidate, but this monitor did not settle it. ${lost}`
      : `${base} monitor.onDataLoss is invalidate: every token issued before ${new Date(lossAt).toISOString()} (${live} live per the last snapshot) now gets 401 TOKEN_INVALIDATED; build masters must fetch new tokens.`;
  }

  /** Marks the new epoch decided, if nobody else did first; says who did when not us. */
  private async settleEpoch(
    cur: Observation,
    state: "restored" | "invalidated",
    minIatMs?: number,
  ): Promise<string | undefined> {
    const { redis, keys } = this.o;
    const change = { id: cur.epoch.id, state, onlyIfFresh: true } as const;
    if (await setEpochState(redis, keys, minIatMs ? { ...change, minIatMs } : change)) return undefined;
    const now = await ensureEpoch(redis, keys);
    this.o.log.warn({
      event: "settle_lost",
      epoch: cur.epoch.id,
      wanted: state,
      found: `${now.id} ${now.state}`,
    });
    return now.id === cur.epoch.id
      ? `Someone else (another monitor or an operator) settled it first: the epoch is ${now.state}.`
      : `Redis lost its data again meanwhile (epoch ${now.id}): the next check handles that.`;
  }
}
