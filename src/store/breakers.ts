import CircuitBreaker from "opossum";
import type { Logger } from "pino";
import type { NodeMetrics } from "../metrics/node-metrics.js";
import { classifyStoreError, isOutage, StoreCorruptError } from "./errors.js";

export { StoreCorruptError, StoreUnavailableError } from "./errors.js";

export type BreakerName = "token_reads" | "token_writes" | "jobs";
export const BREAKER_NAMES: readonly BreakerName[] = ["token_reads", "token_writes", "jobs"];

/** Store operations, the `op` label of the store metrics. */
export const STORE_OPS = [
  "ping",
  "epoch_ensure",
  "token_save",
  "token_check",
  "token_heal",
  "token_revoke",
  "job_resolve_sha1",
  "job_lookup",
  "job_claim",
  "job_renew",
  "job_release",
  "job_complete",
  "job_fail",
  "result_file_put",
  "result_file_drop",
] as const;
export type StoreOp = (typeof STORE_OPS)[number];

/** How the store's breakers trip and recover: `store.commandTimeoutMs` and `store.breaker.*`. */
export interface BreakerSettings {
  /** A Redis command's own timeout; a call through a breaker gets twice this. */
  commandTimeoutMs: number;
  /** Failure percentage over the rolling window that opens a breaker. */
  errorThresholdPercentage: number;
  /** Calls in the window before the percentage counts. */
  volumeThreshold: number;
  /** How long an open breaker fails fast before letting one trial call through. */
  resetTimeoutMs: number;
  /** The window failures are counted over. */
  rollingWindowMs: number;
}

type Action = () => Promise<unknown>;

/**
 * One opossum breaker per purpose, created once. An open breaker turns store calls into
 * StoreUnavailableError within microseconds, so requests follow `store.downPolicy` instead of
 * waiting out timeouts.
 */
export class StoreBreakers {
  private readonly breakers = new Map<BreakerName, CircuitBreaker<[Action], unknown>>();

  constructor(
    settings: BreakerSettings,
    private readonly metrics: NodeMetrics,
    private readonly log: Logger,
  ) {
    for (const op of STORE_OPS) metrics.storeCorrupt.inc({ op }, 0);
    for (const name of BREAKER_NAMES) {
      const breaker = new CircuitBreaker<[Action], unknown>((fn: Action) => fn(), {
        name,
        // ioredis enforces commandTimeout per command; this bounds an operation of a few.
        timeout: settings.commandTimeoutMs * 2,
        errorThresholdPercentage: settings.errorThresholdPercentage,
        volumeThreshold: settings.volumeThreshold,
        resetTimeout: settings.resetTimeoutMs,
        rollingCountTimeout: settings.rollingWindowMs,
        // Only outages count against a breaker: unexpected data is not Redis being down, and
        // opening on it would turn a corrupt key into degraded acceptance for everyone.
        errorFilter: (err: unknown) => !isOutage(err),
        // Nothing reads opossum's latency percentiles or snapshots, and they are not free: with
        // percentiles on, every failure sorts every call latency in the window to decide whether
        // to open, and the snapshot timer does the same each second: in the first second of a
        // Redis restart, when every call fails at once, that sorting is most of a node's work.
        rollingPercentilesEnabled: false,
        enableSnapshots: false,
      });
      const state = (v: number) => metrics.breakerState.set({ breaker: name }, v);
      const event = (e: string) => metrics.breakerEvents.inc({ breaker: name, event: e });
      state(0);
      // The error that opened it goes with the breaker_open line: "Breaker is open" is all the
      // calls after it say.
      let lastFailure = "";
      breaker.on("failure", (err: Error) => {
        lastFailure = err?.message ?? String(err);
      });
      breaker.on("timeout", () => {
        lastFailure = `no answer in ${settings.commandTimeoutMs * 2} ms`;
      });
      breaker.on("open", () => {
        state(2);
        event("open");
        log.warn({ event: "breaker_open", breaker: name, err: lastFailure });
      });
      breaker.on("halfOpen", () => {
        state(1);
        event("half_open");
      });
      breaker.on("close", () => {
        state(0);
        event("close");
        log.info({ event: "breaker_closed", breaker: name });
      });
      breaker.on("success", () => event("success"));
      breaker.on("failure", () => event("failure"));
      breaker.on("timeout", () => event("timeout"));
      breaker.on("reject", () => event("reject"));
      this.breakers.set(name, breaker);
    }
  }

  /** Runs one store operation through the breaker for its purpose, timing it as `op`. */
  async run<T>(name: BreakerName, op: StoreOp, fn: () => Promise<T>): Promise<T> {
    const end = this.metrics.storeCommand.startTimer({ op });
    try {
      return (await (this.breakers.get(name) as CircuitBreaker<[Action], unknown>).fire(fn)) as T;
    } catch (err) {
      const sorted = classifyStoreError(op, err);
      if (sorted instanceof StoreCorruptError) {
        this.metrics.storeCorrupt.inc({ op });
        this.log.error({ event: "store_corrupt", op, key: sorted.key, reason: sorted.reason });
      }
      throw sorted;
    } finally {
      end();
    }
  }

  /** For readiness: name → "closed" | "half_open" | "open". */
  states(): Record<BreakerName, "closed" | "half_open" | "open"> {
    const out = {} as Record<BreakerName, "closed" | "half_open" | "open">;
    for (const [name, b] of this.breakers)
      out[name] = b.opened ? "open" : b.halfOpen ? "half_open" : "closed";
    return out;
  }

  shutdown(): void {
    for (const b of this.breakers.values()) b.shutdown();
  }
}
