import { Counter, collectDefaultMetrics, Gauge, Registry } from "prom-client";
import { SEVERITY } from "./alert-names.js";

/** The monitor's metrics (DESIGN.md §8). */
export class MonitorMetrics {
  readonly registry = new Registry();
  readonly redisUp = new Gauge({
    name: "signing_monitor_redis_up",
    help: "1 when the monitor reaches the Redis master, else 0.",
    registers: [this.registry],
  });
  readonly restarts = new Counter({
    name: "signing_monitor_redis_restarts_total",
    help: "Redis restarts seen, by kind: data_loss, restart (no loss), failover (new master, no loss).",
    labelNames: ["kind"] as const,
    registers: [this.registry],
  });
  readonly reseeded = new Counter({
    name: "signing_monitor_tokens_reseeded_total",
    help: "Tokens put back into Redis from the snapshot after a data loss.",
    registers: [this.registry],
  });
  readonly invalidated = new Counter({
    name: "signing_monitor_tokens_invalidated_total",
    help: "Live tokens (per the snapshot) invalidated after a data loss.",
    registers: [this.registry],
  });
  readonly snapshotAge = new Gauge({
    name: "signing_monitor_snapshot_age_seconds",
    help: "Age of the last snapshot written (or loaded at start-up).",
    registers: [this.registry],
  });
  readonly snapshotTokens = new Gauge({
    name: "signing_monitor_snapshot_tokens",
    help: "Live tokens in the last snapshot.",
    registers: [this.registry],
  });
  readonly alertsSent = new Counter({
    name: "signing_monitor_alerts_sent_total",
    help: "Alert notifications delivered to the webhook (firing and resolved), by alert.",
    labelNames: ["alert"] as const,
    registers: [this.registry],
  });
  readonly alertDeliveryFailures = new Counter({
    name: "signing_monitor_alert_delivery_failures_total",
    help: "Alert notifications given up after every retry, by alert and kind: notify (firing or resolved: nobody was told) or resend (a firing alert repeated to Alertmanager, which already has it).",
    labelNames: ["alert", "kind"] as const,
    registers: [this.registry],
  });
  readonly alertResendFailuresInARow = new Gauge({
    name: "signing_monitor_alert_resend_failures_consecutive",
    help: "Re-sends to Alertmanager given up in a row since its last delivery: at four re-send intervals Alertmanager lets the monitor's firing alerts expire.",
    registers: [this.registry],
  });
  readonly alertDeliveryConfigured = new Gauge({
    name: "signing_monitor_alert_delivery_configured",
    help: "1 when the monitor sends its alerts somewhere (alerts.webhookUrl or alerts.alertmanagerUrl), 0 when they are only logged (alerts.enabled false).",
    registers: [this.registry],
  });
  readonly invalidTokenRate = new Gauge({
    name: "signing_monitor_invalid_token_rate",
    help: "Rejected token checks per second across the scraped nodes, by result, at the last scrape.",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });
  readonly tokenCheckRate = new Gauge({
    name: "signing_monitor_token_check_rate",
    help: "All token checks per second (every result) across the scraped nodes, at the last scrape.",
    registers: [this.registry],
  });
  readonly invalidTokenRatio = new Gauge({
    name: "signing_monitor_invalid_token_ratio",
    help: "Share of token checks rejected across the scraped nodes, at the last scrape: InvalidTokenSpike's ratio.",
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    // Known label values at zero from the start: an absent series is not a zero in PromQL.
    for (const kind of ["data_loss", "restart", "failover"]) this.restarts.inc({ kind }, 0);
    for (const alert of Object.keys(SEVERITY)) {
      this.alertsSent.inc({ alert }, 0);
      for (const kind of ["notify", "resend"]) this.alertDeliveryFailures.inc({ alert, kind }, 0);
    }
  }
}
