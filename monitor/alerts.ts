import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import { type AlertName, isAlertName, SEVERITY } from "./alert-names.js";
import { type FiringAlert, readAlertState, writeAlertState } from "./alert-state.js";
import { type Delivery, DeliveryQueue } from "./delivery-queue.js";
import type { MonitorMetrics } from "./metrics.js";

export { type AlertName, isAlertName, SEVERITY } from "./alert-names.js";

/** What an alert says: its summary and description annotations. */
export interface AlertText {
  summary: string;
  description: string;
}

/** An alert the receivers were told fires: resolving it must repeat its labels and start. */
interface Active {
  labels: Record<string, string>;
  startsAt: string;
  text: AlertText;
}

type Destination = "webhook" | "alertmanager";

/** The time and the timers the Alerter holds alerts by: the real ones, or a test's. */
export interface AlerterClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(timer: unknown): void;
}

const realClock: AlerterClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (t) => clearTimeout(t as NodeJS.Timeout),
};

/** Where alerts go, how hard delivery tries, and how they are labelled and held. */
export interface AlerterOptions {
  webhookUrl?: string;
  alertmanagerUrl?: string;
  runbookBaseUrl: string;
  timeoutMs: number;
  retries: number;
  monitorId: string;
  log: Logger;
  metrics: MonitorMetrics;
  /** The alerts firing now, kept here (written atomically) so a restarted monitor resolves them. */
  stateFile?: string;
  /** How often firing alerts are re-sent to Alertmanager: 60 s, Prometheus' resend delay. */
  resendMs?: number;
  /**
   * A fired alert stays firing at least this long from its start before its resolve is sent
   * (alerts.minFiringSeconds): a receiver that batches, as Alertmanager does for group_wait,
   * must still see it firing when it notifies. 0: resolved as soon as it is said.
   */
  minFiringMs?: number;
  clock?: AlerterClock;
}

/**
 * Alerts for Alertmanager-compatible webhook receivers (payload version 4), sent once when an
 * alert starts firing and once when it resolves, and for Alertmanager's API, where firing
 * alerts are re-sent as Prometheus does (Alertmanager resolves an alert nobody repeats). Every
 * alert is also a log line, so nothing depends on a destination being up. Deliveries retry
 * with exponential backoff, each destination in its own queue (changes first, in order; then
 * at most one re-send per alert), each sent only once the state file says it.
 */
export class Alerter {
  private readonly active = new Map<AlertName, Active>();
  /** Firing when an earlier run of this monitor stopped, and no check has said since. */
  private readonly inherited = new Map<AlertName, Active>();
  private readonly queues = new Map<Destination, DeliveryQueue>();
  private saving: Promise<void> = Promise.resolve();
  private readonly resendTimer: NodeJS.Timeout | undefined;
  private readonly resendMs: number;
  /** Resolves said before the alert had fired for minFiringMs: sent when that is over. */
  private readonly heldResolves = new Map<AlertName, { timer: unknown; text: AlertText | undefined }>();
  private readonly clock: AlerterClock;
  private closed = false;
  /** Re-sends given up in a row: Alertmanager lets the alerts expire at four (their endsAt). */
  private resendFailuresInARow = 0;

  constructor(private readonly opts: AlerterOptions) {
    this.resendMs = opts.resendMs ?? 60_000;
    this.clock = opts.clock ?? realClock;
    opts.metrics.alertDeliveryConfigured.set(opts.webhookUrl || opts.alertmanagerUrl ? 1 : 0);
    if (opts.alertmanagerUrl) {
      this.resendTimer = setInterval(() => this.resend(), this.resendMs);
      this.resendTimer.unref();
    }
  }

  /** Every alert firing now (this run's and those inherited from the last), for status. */
  firing(): { alert: AlertName; severity: "page" | "ticket"; since: string; summary: string }[] {
    return [...this.active, ...this.inherited].map(([alert, a]) => ({
      alert,
      severity: SEVERITY[alert],
      since: a.startsAt,
      summary: a.text.summary,
    }));
  }

  isFiring(name: AlertName): boolean {
    return this.active.has(name) || this.inherited.has(name);
  }

  /** Fires the alert; one firing already (or held before its resolve) goes on firing. */
  fire(name: AlertName, text: AlertText): void {
    if (this.refusedAfterClose(name, "firing")) return;
    if (this.cancelHeldResolve(name)) this.opts.log.info({ event: "alert_firing_again", alert: name });
    if (this.active.has(name)) return;
    const before = this.inherited.get(name);
    this.inherited.delete(name);
    // Still firing since the previous run: the same alert (labels, start), told again.
    const alert = {
      labels: before?.labels ?? this.labels(name),
      startsAt: before?.startsAt ?? new Date(this.clock.now()).toISOString(),
      text,
    };
    this.active.set(name, alert);
    const since = before ? { since: before.startsAt } : {};
    this.opts.log.warn({ event: "alert_firing", alert: name, severity: SEVERITY[name], ...since, ...text });
    this.saveThenSend(name, "firing", alert);
  }

  /**
   * Resolves the alert once it has fired for minFiringMs (at once if it has); firing it again
   * meanwhile keeps it firing. A resolve already held is not held again.
   */
  resolve(name: AlertName, text?: AlertText): void {
    if (this.refusedAfterClose(name, "resolved")) return;
    const alert = this.active.get(name) ?? this.inherited.get(name);
    if (!alert) return;
    const held = this.heldResolves.get(name);
    if (held) {
      held.text = text ?? held.text;
      return;
    }
    const wait = Date.parse(alert.startsAt) + (this.opts.minFiringMs ?? 0) - this.clock.now();
    if (wait <= 0) {
      this.resolveNow(name, text);
      return;
    }
    this.opts.log.info({ event: "alert_resolve_held", alert: name, heldMs: wait });
    const timer = this.clock.setTimeout(() => {
      const entry = this.heldResolves.get(name);
      this.heldResolves.delete(name);
      this.resolveNow(name, entry?.text);
    }, wait);
    this.heldResolves.set(name, { timer, text });
  }

  /**
   * A new occurrence of an event: the one firing is resolved at once (no hold: the new one
   * follows straight away, so receivers see one firing either way) and the new one fired.
   */
  refire(name: AlertName, text: AlertText): void {
    if (this.refusedAfterClose(name, "firing")) return;
    this.cancelHeldResolve(name);
    if (this.isFiring(name)) this.resolveNow(name);
    this.fire(name, text);
  }

  /** Whether a resolve is waiting for the alert's minimum firing time. */
  isResolveHeld(name: AlertName): boolean {
    return this.heldResolves.has(name);
  }

  private cancelHeldResolve(name: AlertName): boolean {
    const held = this.heldResolves.get(name);
    if (!held) return false;
    this.clock.clearTimeout(held.timer);
    this.heldResolves.delete(name);
    return true;
  }

  private resolveNow(name: AlertName, text?: AlertText): void {
    const alert = this.active.get(name) ?? this.inherited.get(name);
    if (!alert) return;
    this.active.delete(name);
    this.inherited.delete(name);
    const final = text ? { ...alert, text } : alert;
    this.opts.log.info({ event: "alert_resolved", alert: name, ...final.text });
    this.saveThenSend(name, "resolved", final);
  }

  /**
   * Reads back what an earlier run left firing. Those alerts count as firing (isFiring) until
   * a check fires or resolves them, or reconcile() decides.
   */
  async restore(): Promise<{ name: AlertName; startsAt: string }[]> {
    if (!this.opts.stateFile) return [];
    for (const a of await readAlertState(this.opts.stateFile, this.opts.log)) {
      if (!isAlertName(a.name)) {
        this.opts.log.warn({ event: "alert_state_unknown", alert: a.name });
        continue;
      }
      const { summary, description } = a;
      this.inherited.set(a.name, { labels: a.labels, startsAt: a.startsAt, text: { summary, description } });
    }
    if (this.inherited.size)
      this.opts.log.info({ event: "alerts_inherited", alerts: [...this.inherited.keys()] });
    return [...this.inherited].map(([name, a]) => ({ name, startsAt: a.startsAt }));
  }

  /**
   * An inherited alert no check has fired or resolved yet: fired again if its condition still
   * holds, else resolved. False when there was nothing to decide.
   */
  reconcile(name: AlertName, holds: boolean): boolean {
    const alert = this.inherited.get(name);
    if (!alert) return false;
    if (holds) this.fire(name, alert.text);
    else this.resolve(name);
    return true;
  }

  /** Notifications waiting to be sent, over every destination (not those being sent). */
  queued(): number {
    return [...this.queues.values()].reduce((n, q) => n + q.waiting, 0);
  }

  /** Resolves when every queued delivery and state write has been attempted. */
  async flush(): Promise<void> {
    await this.saving;
    await Promise.all([...this.queues.values()].map((q) => q.drained()));
  }

  /**
   * Stops re-sending; held resolves are dropped: the state file keeps those alerts firing, and
   * so does a change said after close (work that outlived shutdown), which is not sent.
   */
  close(): void {
    this.closed = true;
    clearInterval(this.resendTimer);
    for (const q of this.queues.values()) q.dropResends();
    for (const name of [...this.heldResolves.keys()]) this.cancelHeldResolve(name);
  }

  private refusedAfterClose(name: AlertName, status: string): boolean {
    if (this.closed) this.opts.log.warn({ event: "alert_after_close", alert: name, status });
    return this.closed;
  }

  private labels(name: AlertName): Record<string, string> {
    return {
      alertname: name,
      severity: SEVERITY[name],
      service: "signing-cluster",
      monitor: this.opts.monitorId,
    };
  }

  /**
   * The firing set, as receivers know it, for the next start-up, written in call order; the
   * change is sent once it is written, so a monitor killed in between resolves it next time.
   */
  private saveThenSend(name: AlertName, status: "firing" | "resolved", alert: Active): void {
    const file = this.opts.stateFile;
    if (!file) {
      this.send(name, status, alert);
      return;
    }
    const alerts: FiringAlert[] = [...this.inherited, ...this.active].map(([name, a]) => ({
      name,
      labels: a.labels,
      startsAt: a.startsAt,
      ...a.text,
    }));
    this.saving = this.saving
      .then(() => writeAlertState(file, alerts))
      .catch((err: Error) =>
        this.opts.log.error({ event: "alert_state_write_failed", file, err: err.message }),
      )
      .then(() => this.send(name, status, alert));
  }

  private send(name: AlertName, status: "firing" | "resolved", alert: Active): void {
    if (this.opts.webhookUrl) {
      const endsAt =
        status === "resolved" ? new Date(this.clock.now()).toISOString() : "0001-01-01T00:00:00Z";
      const body = webhookPayload(name, status, alert, this.annotations(name, alert), endsAt);
      this.enqueue("webhook", { kind: "notify", url: this.opts.webhookUrl, name, status, body });
    }
    this.sendToAlertmanager(name, status, alert, "notify");
  }

  private sendToAlertmanager(
    name: AlertName,
    status: "firing" | "resolved",
    alert: Active,
    kind: Delivery["kind"],
  ): void {
    if (!this.opts.alertmanagerUrl) return;
    // Firing: valid for four re-send intervals, as Prometheus sends them; resolved: ends now.
    const ends = this.clock.now() + (status === "resolved" ? 0 : 4 * this.resendMs);
    const endsAt = new Date(ends).toISOString();
    const { labels, startsAt } = alert;
    const body = JSON.stringify([
      { labels, annotations: this.annotations(name, alert), startsAt, endsAt, generatorURL: "" },
    ]);
    const url = `${this.opts.alertmanagerUrl.replace(/\/$/, "")}/api/v2/alerts`;
    this.enqueue("alertmanager", { kind, url, name, status, body });
  }

  private annotations(name: AlertName, alert: Active): Record<string, string> {
    return { ...alert.text, runbook_url: `${this.opts.runbookBaseUrl}/${name}.md` };
  }

  /** Alertmanager forgets a firing alert that is not repeated before its endsAt; a webhook does not. */
  private resend(): void {
    for (const [name, alert] of this.active) this.sendToAlertmanager(name, "firing", alert, "resend");
  }

  private enqueue(to: Destination, d: Delivery): void {
    let queue = this.queues.get(to);
    if (!queue) {
      queue = new DeliveryQueue((d) => this.deliver(to, d));
      this.queues.set(to, queue);
    }
    queue.push(d);
  }

  private async deliver(to: Destination, d: Delivery): Promise<void> {
    // Resolved since it was queued: repeating it firing would undo the resolve.
    if (d.kind === "resend" && !this.active.has(d.name)) return;
    const delivered = await this.attempt(to, d);
    if (to === "alertmanager") this.countResends(delivered, d.kind);
    if (delivered) return;
    this.opts.metrics.alertDeliveryFailures.inc({ alert: d.name, kind: d.kind });
    const fields = { alert: d.name, status: d.status, destination: to, kind: d.kind };
    this.opts.log.error({ event: "alert_undelivered", ...fields, attempts: this.opts.retries + 1 });
  }

  private countResends(delivered: boolean, kind: Delivery["kind"]): void {
    if (delivered) this.resendFailuresInARow = 0;
    else if (kind === "resend") this.resendFailuresInARow++;
    this.opts.metrics.alertResendFailuresInARow.set(this.resendFailuresInARow);
  }

  /** Posts with retries and backoff; true once delivered. */
  private async attempt(to: Destination, d: Delivery): Promise<boolean> {
    // The URL is not logged: a webhook's may carry a token.
    const fields = { alert: d.name, status: d.status, destination: to, kind: d.kind };
    for (let attempt = 0; attempt <= this.opts.retries; attempt++) {
      try {
        const res = await fetch(d.url, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: d.body,
          signal: AbortSignal.timeout(this.opts.timeoutMs),
        });
        if (res.ok) {
          this.opts.metrics.alertsSent.inc({ alert: d.name });
          return true;
        }
        this.opts.log.warn({ event: "alert_delivery_failed", ...fields, http: res.status, attempt });
      } catch (err) {
        this.opts.log.warn({
          event: "alert_delivery_failed",
          ...fields,
          err: (err as Error).message,
          attempt,
        });
      }
      if (attempt < this.opts.retries) await sleep(Math.min(30_000, 500 * 2 ** attempt));
    }
    return false;
  }
}

/** Alertmanager's webhook payload (version 4), one alert per notification. */
function webhookPayload(
  name: AlertName,
  status: "firing" | "resolved",
  alert: Active,
  annotations: Record<string, string>,
  endsAt: string,
): string {
  const labels = alert.labels;
  const fingerprint = createHash("sha256").update(JSON.stringify(labels)).digest("hex").slice(0, 16);
  return JSON.stringify({
    version: "4",
    groupKey: `{}:{alertname="${name}"}`,
    truncatedAlerts: 0,
    status,
    receiver: "signing-monitor",
    groupLabels: { alertname: name },
    commonLabels: labels,
    commonAnnotations: annotations,
    externalURL: "",
    alerts: [
      { status, labels, annotations, startsAt: alert.startsAt, endsAt, generatorURL: "", fingerprint },
    ],
  });
}
