/** Watching the nodes' token checks for an invalid-token spike. */
import { REJECTED_TOKEN_RESULTS } from "../src/tokens/service.js";
import type { Alerter, AlertText } from "./alerts.js";
import type { MonitorConfig } from "./config.js";
import type { MonitorMetrics } from "./metrics.js";
import type { TokenRates } from "./recent.js";
import { checkCounts, SpikeDetector, type SpikeReading } from "./spike.js";

/** The nodes to scrape, the spike condition, and where readings and the alert go. */
export interface SpikeWatcherOptions {
  /** Signing nodes' base URLs, whose /metrics are read. */
  nodes: string[];
  spike: MonitorConfig["spike"];
  alerter: Alerter;
  metrics: MonitorMetrics;
  /** Keeps each scrape's rates for `signing-admin status`. */
  tokenRates: TokenRates;
}

/**
 * Watching the nodes for invalid-token spikes: each scrape reads every node's token-check
 * counters, turns them into rates (SpikeDetector), exports them, and fires or resolves
 * InvalidTokenSpike.
 */
export class SpikeWatcher {
  private readonly detector: SpikeDetector;
  private scrapes = 0;

  constructor(private readonly o: SpikeWatcherOptions) {
    this.detector = new SpikeDetector({
      ratio: o.spike.ratio,
      minChecksPerSecond: o.spike.minChecksPerSecond,
      forMs: o.spike.forSeconds * 1000,
    });
  }

  async scrape(): Promise<void> {
    const r = this.detector.update(Date.now(), await this.readNodes());
    this.export(r);
    const { alerter } = this.o;
    if (r.change === "fire") alerter.fire("InvalidTokenSpike", spikeText(r, this.o.spike));
    else if (r.change === "resolve") alerter.resolve("InvalidTokenSpike");
    // The second scrape is the first with rates: a spike the previous run left firing still
    // holds, or it is over.
    if (++this.scrapes === 2 && alerter.reconcile("InvalidTokenSpike", r.above)) {
      if (r.above) this.detector.resumeFiring(Date.now());
    }
  }

  /** Each node's token-check counts, for the nodes that answered. */
  private async readNodes(): Promise<Map<string, Map<string, number>>> {
    const readings = new Map<string, Map<string, number>>();
    await Promise.all(
      this.o.nodes.map(async (node) => {
        try {
          const res = await fetch(`${node.replace(/\/$/, "")}/metrics`, {
            signal: AbortSignal.timeout(2000),
          });
          if (res.ok) readings.set(node, checkCounts(await res.text()));
        } catch {
          // A node that does not answer is the business of SigningNodeDown, not of this alert.
        }
      }),
    );
    return readings;
  }

  private export(r: SpikeReading): void {
    const { metrics } = this.o;
    for (const result of REJECTED_TOKEN_RESULTS)
      metrics.invalidTokenRate.set({ result }, r.byResult.get(result) ?? 0);
    metrics.tokenCheckRate.set(r.checksPerSecond);
    metrics.invalidTokenRatio.set(r.ratio);
    this.o.tokenRates.add(Date.now(), r.checksPerSecond, r.rejectedPerSecond);
  }
}

const percent = (share: number) => `${(share * 100).toFixed(0)}%`;

/** The webhook text of InvalidTokenSpike: the share, the volume, the condition, by result. */
function spikeText(r: SpikeReading, c: MonitorConfig["spike"]): AlertText {
  const detail = [...r.byResult]
    .filter(([, v]) => v > 0)
    .map(([k, v]) => `${k} ${v.toFixed(1)}/s`)
    .join(", ");
  return {
    summary: `Signing nodes reject more than ${percent(c.ratio)} of token checks`,
    description: `${percent(r.ratio)} of ${r.checksPerSecond.toFixed(1)} token checks/s are rejected (threshold ${percent(c.ratio)} above ${c.minChecksPerSecond} checks/s for ${c.forSeconds}s): ${detail}.`,
  };
}
