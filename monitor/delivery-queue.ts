/** The order in which one destination is sent the monitor's alert notifications. */
import type { AlertName } from "./alert-names.js";

/** One notification to post: a change (firing, resolved) or a re-send of a firing alert. */
export interface Delivery {
  kind: "notify" | "resend";
  name: AlertName;
  status: "firing" | "resolved";
  url: string;
  body: string;
}

/**
 * One destination's notifications, sent one at a time. Changes go first, in the order they
 * were said; re-sends (keep-alives for Alertmanager) after them, at most one waiting per
 * alert: a receiver that hangs makes the re-sends wait, never pile up, and a new page never
 * queues behind stale re-sends. A change drops the alert's waiting re-send, which would say
 * an older state.
 */
export class DeliveryQueue {
  private readonly changes: Delivery[] = [];
  private readonly resends = new Map<AlertName, Delivery>();
  private busy = false;
  private idle: Promise<void> = Promise.resolve();

  constructor(private readonly deliver: (d: Delivery) => Promise<void>) {}

  push(d: Delivery): void {
    if (d.kind === "notify") {
      this.resends.delete(d.name);
      this.changes.push(d);
    } else this.resends.set(d.name, d);
    if (this.busy) return;
    this.busy = true;
    this.idle = this.run();
  }

  /** How many wait (not counting the one being sent). */
  get waiting(): number {
    return this.changes.length + this.resends.size;
  }

  /** Drops the waiting re-sends (at shutdown: they only keep alive what Alertmanager knows). */
  dropResends(): void {
    this.resends.clear();
  }

  /** Resolves when every notification pushed so far has been attempted. */
  drained(): Promise<void> {
    return this.idle;
  }

  private next(): Delivery | undefined {
    const change = this.changes.shift();
    if (change) return change;
    const [first] = this.resends.values();
    if (first) this.resends.delete(first.name);
    return first;
  }

  private async run(): Promise<void> {
    try {
      for (let d = this.next(); d; d = this.next()) await this.deliver(d).catch(() => {});
    } finally {
      this.busy = false;
    }
  }
}
