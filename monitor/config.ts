import { readFileSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";
import { validate as validCron } from "node-cron";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { applyEnvOverrides, ConfigError, describeIssues, readSecret } from "../src/config/load.js";
import { redisSchema } from "../src/config/schema.js";

const cron = z
  .string()
  .refine((c) => validCron(c), { message: "not a valid cron expression (6 fields: seconds first)" });
const seconds = z.number().positive();

export const monitorConfigSchema = z
  .object({
    monitor: z
      .object({
        id: z
          .string()
          .min(1)
          .optional()
          .describe(
            "names this monitor in logs, alert labels and the epoch lock; default `host:port`, unique as long as two monitors do not share a host and port",
          ),
        host: z
          .string()
          .default("127.0.0.1")
          .describe(
            "listen address of /metrics, /readyz and /status; loopback unless Prometheus scrapes it from elsewhere",
          ),
        port: z
          .number()
          .int()
          .min(0)
          .max(65535)
          .default(9120)
          .describe("listen port (0 picks a free one); 9120 sits next to the nodes' 9110"),
        stateDir: z
          .string()
          .min(1)
          .describe(
            "directory (created with mode 0700) for the token snapshot (snapshot.json) and the alerts it sent (alerts.json); keep it across restarts so a data loss seen after one is still re-seeded",
          ),
        detectCron: cron
          .default("* * * * * *")
          .describe(
            "when Redis is looked at (cron, seconds first); every second, so a data loss is settled well inside the nodes' store.recoveryGraceMs (10 s by default)",
          ),
        snapshotCron: cron
          .default("*/5 * * * * *")
          .describe(
            "when live tokens, nonce chains and revocations are snapshotted (cron, seconds first); every 5 s bounds the tokens a data loss can take with it",
          ),
        onDataLoss: z
          .enum(["reseed", "invalidate"])
          .default("reseed")
          .describe(
            "after Redis lost its data: `reseed` puts back what the snapshot holds (builds go on), `invalidate` makes every token issued before the loss fail with 401 TOKEN_INVALIDATED",
          ),
        snapshotMaxAgeSeconds: seconds
          .default(60)
          .describe(
            "a snapshot older than this fires SnapshotStale, s; a minute is twelve missed 5 s snapshots, not one slow one",
          ),
        unreachableForSeconds: seconds
          .default(5)
          .describe(
            "Redis unreachable this long fires RedisUnreachable, s; 5 s rides out a reconnect but pages before builds queue up",
          ),
        eventHoldSeconds: seconds
          .default(600)
          .describe(
            "restart alerts (RedisRestarted, RedisRestartedWithDataLoss) are events: they stay firing this long, then resolve, s; ten minutes to be seen on a dashboard",
          ),
      })
      .strict()
      .describe("the monitor itself: where it listens, where it keeps state, how often it looks"),
    redis: redisSchema,
    store: z
      .object({
        prefix: z
          .string()
          .default("signing:")
          .describe("key prefix of the cluster's records in Redis; the same as the nodes' store.prefix"),
      })
      .strict()
      .prefault({}),
    nodes: z
      .array(z.string().url())
      .default([])
      .describe(
        "signing nodes' base URLs, whose /metrics are scraped for invalid-token spikes; none: InvalidTokenSpike is left to Prometheus",
      ),
    spike: z
      .object({
        scrapeCron: cron
          .default("*/5 * * * * *")
          .describe(
            "when the nodes are scraped (cron, seconds first); every 5 s, three times Prometheus' 15 s, so the monitor sees a burst first",
          ),
        ratio: z
          .number()
          .gt(0)
          .lt(1)
          .default(0.25)
          .describe(
            "share of token checks, summed over the nodes, that are rejected: above it is a spike; 0.25 as the Prometheus rule InvalidTokenSpike",
          ),
        minChecksPerSecond: z
          .number()
          .min(0)
          .default(0.1)
          .describe(
            "all token checks per second (every result, all nodes) needed for the share to count: a few bad tokens on an idle cluster are no spike; as the Prometheus rule",
          ),
        forSeconds: z
          .number()
          .min(0)
          .default(30)
          .describe(
            "the condition must hold this long before InvalidTokenSpike fires, s; 30 s, half the Prometheus rule's `for: 1m`, so the monitor pages first and a shorter burst pages nobody",
          ),
      })
      .strict()
      // Parsed from {}, so the defaults above are the only ones (not a second copy here).
      .prefault({})
      .describe(
        "InvalidTokenSpike as the Prometheus rule of that name computes it (test/rules/alerts.test.ts holds the two together), over the monitor's shorter window: one scrape interval",
      ),
    alerts: z
      .object({
        enabled: z
          .boolean()
          .default(true)
          .describe(
            "false: alerts are only log lines (signing_monitor_alert_delivery_configured 0); must be said, as a monitor with no destination would page nobody silently",
          ),
        webhookUrl: z
          .string()
          .url()
          .optional()
          .describe(
            "an Alertmanager-compatible webhook receiver (payload version 4); its URL is never logged",
          ),
        alertmanagerUrl: z
          .string()
          .url()
          .optional()
          .describe(
            "an Alertmanager's base URL: alerts go to <url>/api/v2/alerts and are re-sent while they fire, as Prometheus does",
          ),
        runbookBaseUrl: z
          .string()
          .default("https://github.com/signing-cluster/signing-cluster/blob/main/runbooks")
          .describe("base of each alert's runbook_url: `<base>/<AlertName>.md`"),
        timeoutMs: z
          .number()
          .int()
          .positive()
          .default(5000)
          .describe("one delivery attempt gives up after this long, ms"),
        minFiringSeconds: z
          .number()
          .min(0)
          .default(75)
          .describe(
            "a fired alert stays firing at least this long before its resolve is sent, s; 75 s outlives the pager routes' group_interval (1m in prometheus/alertmanager.yml; a group kept open by resolved alerts notifies only at its ticks) and group_wait (30 s), plus one 15 s evaluation interval, so a condition that clears at once still reaches someone",
          ),
        retries: z
          .number()
          .int()
          .min(0)
          .default(5)
          .describe(
            "attempts after the first, with backoff from 0.5 s doubling (up to 30 s): five ride out about 15 s of a receiver restarting",
          ),
      })
      .strict()
      .prefault({})
      .describe("where the monitor's alerts go: a destination, or `enabled: false` said in so many words"),
    log: z
      .object({
        level: z
          .enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"])
          .default("info")
          .describe("the lowest level logged (JSON lines on stdout)"),
      })
      .strict()
      .prefault({}),
  })
  .strict();

/** The monitor's configuration as validated: every default filled in (docs/configuration.md). */
export type MonitorConfig = z.infer<typeof monitorConfigSchema>;

/** A loaded configuration and the Redis password read from its file or environment, kept apart. */
export interface LoadedMonitorConfig {
  config: MonitorConfig;
  redisPassword: string | undefined;
}

/**
 * Where alerts go must be decided: a destination, or `alerts: { enabled: false }` said in so
 * many words. Read from the raw object, so that it is listed with the schema's problems.
 */
function alertDestinationProblem(alerts: unknown): string | undefined {
  const a = typeof alerts === "object" && alerts !== null ? (alerts as Record<string, unknown>) : {};
  const set = ["webhookUrl", "alertmanagerUrl"].filter((k) => a[k] !== undefined && a[k] !== "");
  if (a.enabled === false)
    return set.length ? `alerts: enabled is false but alerts.${set[0]} is set: remove one` : undefined;
  if (set.length) return undefined;
  return "alerts: no alert destination, so the monitor's alerts would only be log lines: set alerts.webhookUrl (an Alertmanager-compatible webhook receiver) or alerts.alertmanagerUrl (an Alertmanager), or alerts: { enabled: false } to run without";
}

/** Validates a raw monitor configuration; SIGNING_MONITOR__a__b=value overrides key a.b. */
export function buildMonitorConfig(
  raw: unknown,
  baseDir: string,
  env: NodeJS.ProcessEnv = process.env,
): LoadedMonitorConfig {
  const object = typeof raw === "object" && raw !== null ? structuredClone(raw) : {};
  applyEnvOverrides(object as Record<string, unknown>, env, "SIGNING_MONITOR__");
  const parsed = monitorConfigSchema.safeParse(object);
  const destination = alertDestinationProblem((object as Record<string, unknown>).alerts);
  if (!parsed.success)
    throw new ConfigError([...describeIssues(parsed.error), ...(destination ? [destination] : [])]);
  const config = parsed.data;
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(baseDir, p));
  config.monitor.stateDir = abs(config.monitor.stateDir);
  const problems: string[] = destination ? [destination] : [];
  if (config.redis.password?.file) config.redis.password.file = abs(config.redis.password.file);
  const redisPassword = config.redis.password
    ? readSecret(config.redis.password, "redis.password", env, problems)
    : undefined;
  if (problems.length) throw new ConfigError(problems);
  return { config, redisPassword };
}

export function loadMonitorConfigFile(
  file: string,
  env: NodeJS.ProcessEnv = process.env,
): LoadedMonitorConfig {
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(file, "utf8"));
  } catch (e) {
    throw new ConfigError([
      `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message.split("\n")[0]}`,
    ]);
  }
  return buildMonitorConfig(raw, dirname(resolve(file)), env);
}
