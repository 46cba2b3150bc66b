/** Raising, holding and resolving the monitor's alerts, and keeping events for /status. */
import { join } from "node:path";
import type { Logger } from "pino";
import { Alerter, type AlertName, type AlertText } from "./alerts.js";
import type { MonitorConfig } from "./config.js";
import type { MonitorMetrics } from "./metrics.js";
import type { RecentEvent, RecentEvents } from "./recent.js";

/**
 * Raising and resolving the monitor's alerts, and telling `/status` what happened: events
 * (a restart, a data loss) fire at once and resolve after their hold; what an earlier run
 * left firing is reconciled at start-up. Delivery itself is the Alerter's (alerts.ts).
 */
export function createAlerter(
  config: MonitorConfig,
  monitorId: string,
  log: Logger,
  metrics: MonitorMetrics,
): Alerter {
  const { webhookUrl, alertmanagerUrl, runbookBaseUrl, timeoutMs, retries, minFiringSeconds } = config.alerts;
  return new Alerter({
    ...(webhookUrl ? { webhookUrl } : {}),
    ...(alertmanagerUrl ? { alertmanagerUrl } : {}),
    stateFile: join(config.monitor.stateDir, "alerts.json"),
    runbookBaseUrl,
    timeoutMs,
    retries,
    minFiringMs: minFiringSeconds * 1000,
    monitorId,
    log,
    metrics,
  });
}

/** What EventAlerts raises alerts through and keeps events in. */
export interface EventAlertsOptions {
  alerter: Alerter;
  recent: RecentEvents;
  /** How long an event alert stays firing before it resolves (monitor.eventHoldSeconds). */
  holdMs: number;
}

/** What holds now, for the alerts an earlier run left firing. */
export interface InheritedConditions {
  redisUnreachable: boolean;
  /** Nodes are scraped, so the spike watcher decides InvalidTokenSpike itself. */
  spikeWatched: boolean;
}

export class EventAlerts {
  private readonly timers = new Map<AlertName, NodeJS.Timeout>();
  private closed = false;

  constructor(private readonly o: EventAlertsOptions) {}

  /** An event: fired (again, if it still fires) now, kept for /status, resolved after the hold. */
  event(name: AlertName, text: AlertText): void {
    this.o.recent.add(name, text.summary, text.description);
    this.o.alerter.refire(name, text);
    this.resolveIn(name, this.o.holdMs);
  }

  /** Something worth telling in /status that is no alert of its own; revise() words it better. */
  note(kind: string, summary: string): RecentEvent {
    return this.o.recent.add(kind, summary);
  }

  revise(event: RecentEvent, summary: string): void {
    this.o.recent.revise(event, summary);
  }

  /**
   * What the previous run left firing and the first detection did not fire or resolve itself
   * (SnapshotStale it always does): fired again while it holds, resolved if not.
   */
  reconcileInherited(inherited: { name: AlertName; startsAt: string }[], now: InheritedConditions): void {
    const { alerter } = this.o;
    for (const { name, startsAt } of inherited) {
      if (name === "RedisUnreachable") alerter.reconcile(name, now.redisUnreachable);
      else if (name === "RedisRestarted" || name === "RedisRestartedWithDataLoss") {
        const left = Date.parse(startsAt) + this.o.holdMs - Date.now();
        if (alerter.reconcile(name, left > 0) && left > 0) this.resolveIn(name, left);
      } else if (name === "InvalidTokenSpike" && !now.spikeWatched) alerter.reconcile(name, false);
    }
  }

  /** Drops the pending resolves, and arms none later: the state file keeps those alerts firing. */
  close(): void {
    this.closed = true;
    for (const t of this.timers.values()) clearTimeout(t);
  }

  private resolveIn(name: AlertName, ms: number): void {
    if (this.closed) return;
    clearTimeout(this.timers.get(name));
    this.timers.set(
      name,
      setTimeout(() => this.o.alerter.resolve(name), ms),
    );
  }
}
