/** The token snapshot: loading, taking and writing it, and watching its age. */
import { renameSync } from "node:fs";
import type { Logger } from "pino";
import {
  readSnapshot,
  type Snapshot,
  SnapshotCorruptError,
  takeSnapshot,
  writeSnapshot,
} from "../src/recovery/snapshot.js";
import { ensureEpoch } from "../src/store/epoch.js";
import type { StoreKeys } from "../src/store/keys.js";
import type { RedisClient } from "../src/store/redis.js";
import type { Alerter } from "./alerts.js";
import { secondsAgo } from "./clock.js";
import type { MonitorMetrics } from "./metrics.js";

/** Where the snapshot lives and what the Snapshotter reads, writes and reports through. */
export interface SnapshotterOptions {
  /** The snapshot file (snapshot.json in monitor.stateDir). */
  file: string;
  redis: RedisClient;
  keys: StoreKeys;
  log: Logger;
  metrics: MonitorMetrics;
  alerter: Alerter;
  /** A snapshot older than this fires SnapshotStale (monitor.snapshotMaxAgeSeconds). */
  maxAgeSeconds: number;
}

/**
 * The monitor's copy of live tokens, nonce chains and revocations: loaded at start-up, taken
 * on schedule while Redis holds the epoch the monitor knows (never the empty store after a
 * loss), and watched for age (SnapshotStale). The settler re-seeds from `current`.
 */
export class Snapshotter {
  private snapshot: Snapshot | undefined;
  private readonly startedAt = Date.now();

  constructor(private readonly o: SnapshotterOptions) {}

  get current(): Snapshot | undefined {
    return this.snapshot;
  }

  /** Reads the last run's snapshot; a corrupt one is set aside (kept as evidence) and ignored. */
  async load(): Promise<void> {
    const { file, log } = this.o;
    try {
      this.snapshot = await readSnapshot(file);
      if (this.snapshot)
        log.info({
          event: "snapshot_loaded",
          file,
          tokens: this.snapshot.tokens.length,
          ageSeconds: secondsAgo(this.snapshot.takenAt),
        });
    } catch (err) {
      if (!(err instanceof SnapshotCorruptError)) throw err;
      // Keep the evidence, start without it: a monitor that refuses to start detects nothing.
      const aside = `${file}.corrupt-${Date.now()}`;
      renameSync(file, aside);
      log.error({ event: "snapshot_corrupt", file, movedTo: aside, reason: err.message });
    }
  }

  /**
   * Takes and writes a snapshot of `knownEpochId` (the epoch the detector last saw and
   * settled); nothing when there is none yet or Redis holds another epoch now.
   */
  async take(knownEpochId: string | undefined): Promise<Snapshot | undefined> {
    const { redis, keys, metrics } = this.o;
    if (knownEpochId === undefined) return undefined;
    const epoch = await ensureEpoch(redis, keys);
    // Never replace the snapshot of lost tokens with a snapshot of the empty store.
    if (epoch.id !== knownEpochId) return undefined;
    if (this.snapshot && this.snapshot.epochId !== epoch.id && epoch.state === "fresh") return undefined;
    const snap = await takeSnapshot(redis, keys, epoch.id, epoch.minIat);
    if ((await ensureEpoch(redis, keys)).id !== epoch.id) return undefined;
    await writeSnapshot(this.o.file, snap);
    this.snapshot = snap;
    metrics.snapshotTokens.set(snap.tokens.length);
    metrics.snapshotAge.set(0);
    this.o.log.debug({
      event: "snapshot_written",
      tokens: snap.tokens.length,
      revoked: snap.revoked.length,
      nonces: snap.nonces.length,
    });
    return snap;
  }

  /**
   * Snapshot age, with or without Redis. What counts for SnapshotStale runs from the later of
   * the snapshot and this run's start: a snapshot left by an earlier run is old because the
   * monitor was down, not because snapshots fail, until this run has had its time to take one.
   * The gauge says the snapshot's own age.
   */
  checkAge(now: number): void {
    const { snapshot, o } = this;
    o.metrics.snapshotAge.set((now - (snapshot?.takenAt ?? this.startedAt)) / 1000);
    const age = (now - Math.max(snapshot?.takenAt ?? 0, this.startedAt)) / 1000;
    if (age <= o.maxAgeSeconds) {
      o.alerter.resolve("SnapshotStale");
      return;
    }
    o.alerter.fire("SnapshotStale", {
      summary: "The monitor's token snapshot is stale",
      description: this.staleDescription(age),
    });
  }

  private staleDescription(age: number): string {
    const { snapshot, o } = this;
    const limit = `(limit ${o.maxAgeSeconds}s)`;
    if (snapshot && snapshot.takenAt >= this.startedAt)
      return `The last snapshot (${o.file}) is ${Math.round(age)}s old ${limit}: a data loss now would lose the tokens issued since.`;
    const earlier = snapshot ? `; the one an earlier run left is ${secondsAgo(snapshot.takenAt)}s old` : "";
    return `No snapshot written in ${Math.round(age)}s since start-up ${limit} to ${o.file}${earlier}: a data loss now would lose the tokens issued since.`;
  }
}
