import { REJECTED_TOKEN_RESULTS } from "../src/tokens/service.js";

const REJECTED: ReadonlySet<string> = new Set(REJECTED_TOKEN_RESULTS);

/**
 * signing_token_checks_total by result, every result, read from one node's /metrics text: the
 * spike condition is a share of all checks, so the accepted ones count too.
 */
export function checkCounts(metricsText: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of metricsText.matchAll(/^signing_token_checks_total\{result="([a-z_]+)"\} (\S+)$/gm)) {
    out.set(m[1] as string, Number(m[2]));
  }
  return out;
}

/**
 * InvalidTokenSpike's condition, the same as the Prometheus rule's (test/rules/alerts.test.ts
 * ties the two): rejected / all token checks above `ratio` while all checks run above
 * `minChecksPerSecond`, continuously for `forMs`.
 */
export interface SpikeCondition {
  ratio: number;
  minChecksPerSecond: number;
  forMs: number;
}

export interface SpikeReading {
  /** All token checks per second across the nodes that answered, every result. */
  checksPerSecond: number;
  /** Rejected token checks per second, total and by (rejected) result. */
  rejectedPerSecond: number;
  byResult: Map<string, number>;
  /** rejectedPerSecond / checksPerSecond; 0 when there were no checks. */
  ratio: number;
  /** The condition holds at this reading (fired only once it has held for forMs). */
  above: boolean;
  /** Transition to announce, if any. */
  change?: "fire" | "resolve";
}

type Counts = Map<string, number>;

/** Per-second increase of each result's counter between two readings of one node. */
function ratesBetween(prev: Counts, counts: Counts, seconds: number): Counts {
  const out = new Map<string, number>();
  for (const [result, value] of counts) {
    const before = prev.get(result) ?? 0;
    // A counter that went down means the node restarted: everything since is new.
    out.set(result, (value >= before ? value - before : value) / seconds);
  }
  return out;
}

/**
 * Turns successive counter readings from every node into the share of token checks that are
 * rejected, and decides when it is a spike (see SpikeCondition).
 */
export class SpikeDetector {
  private readonly last = new Map<string, { at: number; counts: Counts }>();
  private aboveSince: number | undefined;
  private firing = false;

  constructor(private readonly condition: SpikeCondition) {}

  /** `readings`: node → counts of every result (checkCounts), for the nodes that answered. */
  update(now: number, readings: Map<string, Counts>): SpikeReading {
    const rates = this.rates(now, readings);
    let checksPerSecond = 0;
    const byResult = new Map<string, number>();
    for (const [result, rate] of rates) {
      checksPerSecond += rate;
      if (REJECTED.has(result)) byResult.set(result, rate);
    }
    const rejectedPerSecond = [...byResult.values()].reduce((a, b) => a + b, 0);
    const ratio = checksPerSecond > 0 ? rejectedPerSecond / checksPerSecond : 0;
    const above = checksPerSecond > this.condition.minChecksPerSecond && ratio > this.condition.ratio;
    const change = this.hold(now, above);
    return { checksPerSecond, rejectedPerSecond, byResult, ratio, above, ...(change ? { change } : {}) };
  }

  /** The alert fires already (the previous run fired it, and it still holds): only resolve it. */
  resumeFiring(now: number): void {
    this.firing = true;
    this.aboveSince ??= now;
  }

  /** Per-second rates by result, summed over the nodes that have an earlier reading. */
  private rates(now: number, readings: Map<string, Counts>): Counts {
    const sum = new Map<string, number>();
    for (const [node, counts] of readings) {
      const prev = this.last.get(node);
      this.last.set(node, { at: now, counts });
      if (!prev || now <= prev.at) continue;
      for (const [result, rate] of ratesBetween(prev.counts, counts, (now - prev.at) / 1000))
        sum.set(result, (sum.get(result) ?? 0) + rate);
    }
    return sum;
  }

  /** Fires once the condition has held for forMs; resolves as soon as it stops holding. */
  private hold(now: number, above: boolean): SpikeReading["change"] {
    if (above) {
      this.aboveSince ??= now;
      if (this.firing || now - this.aboveSince < this.condition.forMs) return undefined;
      this.firing = true;
      return "fire";
    }
    this.aboveSince = undefined;
    if (!this.firing) return undefined;
    this.firing = false;
    return "resolve";
  }
}
