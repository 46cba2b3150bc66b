import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import type { MonitorMetrics } from "./metrics.js";

export type AlertName =
  | "RedisRestartedWithDataLoss"
  | "RedisRestarted"
  | "RedisUnreachable"
  | "InvalidTokenSpike"
  | "SnapshotStale";

export const SEVERITY: Record<AlertName, "page" | "ticket"> = {
  RedisRestartedWithDataLoss: "page",
  RedisRestarted: "ticket",
  RedisUnreachable: "page",
  InvalidTokenSpike: "page",
  SnapshotStale: "ticket",
};

export interface AlertText {
  summary: string;
  description: string;
}

interface Active {
  startsAt: string;
  text: AlertText;
}

export interface AlerterOptions {
  webhookUrl?: string;
  runbookBaseUrl: string;
  timeoutMs: number;
  retries: number;
  monitorId: string;
  log: Logger;
  metrics: MonitorMetrics;
}

/**
 * Alerts as Alertmanager's webhook receivers expect them (payload version 4). An alert is sent
 * once when it starts firing (not again while it fires) and once when it resolves. Every alert
 * is also a log line, so nothing depends on the webhook being up. Deliveries retry with
 * exponential backoff, in order.
 */
export class Alerter {
  private readonly active = new Map<AlertName, Active>();
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly opts: AlerterOptions) {}

  isFiring(name: AlertName): boolean {
    return this.active.has(name);
  }

  fire(name: AlertName, text: AlertText): void {
    if (this.active.has(name)) return;
    const alert = { startsAt: new Date().toISOString(), text };
    this.active.set(name, alert);
    this.opts.log.warn({ event: "alert_firing", alert: name, severity: SEVERITY[name], ...text });
    this.send(name, "firing", alert, "0001-01-01T00:00:00Z");
  }

  resolve(name: AlertName, text?: AlertText): void {
    const alert = this.active.get(name);
    if (!alert) return;
    this.active.delete(name);
    const final = text ? { ...alert, text } : alert;
    this.opts.log.info({ event: "alert_resolved", alert: name, ...final.text });
    this.send(name, "resolved", final, new Date().toISOString());
  }

  /** Resolves when every queued delivery has been attempted. */
  flush(): Promise<void> {
    return this.queue;
  }

  private send(name: AlertName, status: "firing" | "resolved", alert: Active, endsAt: string): void {
    const url = this.opts.webhookUrl;
    if (!url) return;
    const labels = {
      alertname: name,
      severity: SEVERITY[name],
      service: "signing-cluster",
      monitor: this.opts.monitorId,
    };
    const fingerprint = createHash("sha256").update(JSON.stringify(labels)).digest("hex").slice(0, 16);
    const annotations = { ...alert.text, runbook_url: `${this.opts.runbookBaseUrl}/${name}.md` };
    const payload = {
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
    };
    const body = JSON.stringify(payload);
    this.queue = this.queue.then(() => this.deliver(url, name, status, body));
  }

  private async deliver(url: string, name: AlertName, status: string, body: string): Promise<void> {
    for (let attempt = 0; attempt <= this.opts.retries; attempt++) {
      try {
        const res = await fetch(url, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body,
          signal: AbortSignal.timeout(this.opts.timeoutMs),
        });
        if (res.ok) {
          this.opts.metrics.alertsSent.inc({ alert: name });
          return;
        }
        this.opts.log.warn({
          event: "alert_delivery_failed",
          alert: name,
          status,
          http: res.status,
          attempt,
        });
      } catch (err) {
        this.opts.log.warn({
          event: "alert_delivery_failed",
          alert: name,
          status,
          err: (err as Error).message,
          attempt,
        });
      }
      if (attempt < this.opts.retries) await sleep(Math.min(30_000, 500 * 2 ** attempt));
    }
    this.opts.log.error({ event: "alert_undelivered", alert: name, status });
  }
}
