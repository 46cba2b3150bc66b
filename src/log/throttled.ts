import type { Logger } from "pino";

/**
 * A warning that can repeat thousands of times a minute (one per request during an outage),
 * logged at most once per `key` per `intervalMs`. The line that is logged carries `suppressed`:
 * how many of the same key were dropped since the previous one, so the log still says how much
 * happened; lines dropped after the last one logged are counted by the caller's metrics only.
 */
export class ThrottledWarning {
  private readonly last = new Map<string, { atMs: number; suppressed: number }>();

  constructor(
    private readonly log: Logger,
    private readonly intervalMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Logs `fields` at warn level unless a line of this `key` was logged within the interval. */
  warn(key: string, fields: Record<string, unknown>): void {
    const nowMs = this.now();
    const seen = this.last.get(key);
    if (seen && nowMs - seen.atMs < this.intervalMs) {
      seen.suppressed++;
      return;
    }
    this.log.warn({ ...fields, suppressed: seen?.suppressed ?? 0 });
    this.last.set(key, { atMs: nowMs, suppressed: 0 });
  }
}
