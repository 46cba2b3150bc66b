import { REJECTED_TOKEN_RESULTS } from "../src/tokens/service.js";

/** Sums of signing_token_checks_total by result, read from one node's /metrics text. */
export function rejectedCounts(metricsText: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of metricsText.matchAll(/^signing_token_checks_total\{result="([a-z_]+)"\} (\S+)$/gm)) {
    const result = m[1] as string;
    if ((REJECTED_TOKEN_RESULTS as readonly string[]).includes(result)) out.set(result, Number(m[2]));
  }
  return out;
}

export interface SpikeReading {
  /** Rejected checks per second across all nodes, total and by result. */
  rate: number;
  byResult: Map<string, number>;
  /** Transition to announce, if any. */
  change?: "fire" | "resolve";
}

/**
 * Turns successive counter readings from every node into a rate of rejected token checks, and
 * decides when it is a spike: above `ratePerSecond` continuously for `forMs`.
 */
export class SpikeDetector {
  private readonly last = new Map<string, { at: number; counts: Map<string, number> }>();
  private aboveSince: number | undefined;
  private firing = false;

  constructor(
    private readonly ratePerSecond: number,
    private readonly forMs: number,
  ) {}

  /** `readings`: node → counts, for the nodes that answered this round. */
  update(now: number, readings: Map<string, Map<string, number>>): SpikeReading {
    const byResult = new Map<string, number>();
    for (const [node, counts] of readings) {
      const prev = this.last.get(node);
      this.last.set(node, { at: now, counts });
      if (!prev || now <= prev.at) continue;
      const dt = (now - prev.at) / 1000;
      for (const [result, value] of counts) {
        const before = prev.counts.get(result) ?? 0;
        // A counter that went down means the node restarted: everything since is new.
        const delta = value >= before ? value - before : value;
        byResult.set(result, (byResult.get(result) ?? 0) + delta / dt);
      }
    }
    const rate = [...byResult.values()].reduce((a, b) => a + b, 0);
    let change: SpikeReading["change"];
    if (rate > this.ratePerSecond) {
      this.aboveSince ??= now;
      if (!this.firing && now - this.aboveSince >= this.forMs) {
        this.firing = true;
        change = "fire";
      }
    } else {
      this.aboveSince = undefined;
      if (this.firing) {
        this.firing = false;
        change = "resolve";
      }
    }
    return { rate, byResult, ...(change ? { change } : {}) };
  }
}
