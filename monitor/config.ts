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
    /** The monitor's own HTTP port: /metrics and /readyz. */
    monitor: z
      .object({
        id: z.string().min(1).optional(),
        host: z.string().default("127.0.0.1"),
        port: z.number().int().min(0).max(65535).default(9120),
        /** Snapshots live here (mode 0700), one file: snapshot.json. */
        stateDir: z.string().min(1),
        /** How Redis is watched: every second by default. */
        detectCron: cron.default("* * * * * *"),
        /** How often live tokens, nonces and revocations are snapshotted. */
        snapshotCron: cron.default("*/5 * * * * *"),
        /** What to do when Redis lost its data: put back what the snapshot has, or invalidate. */
        onDataLoss: z.enum(["reseed", "invalidate"]).default("reseed"),
        /** A snapshot older than this fires SnapshotStale. */
        snapshotMaxAgeSeconds: seconds.default(60),
        /** Redis unreachable this long fires RedisUnreachable. */
        unreachableForSeconds: seconds.default(5),
        /** Restart alerts are events: they stay firing this long, then resolve. */
        eventHoldSeconds: seconds.default(600),
      })
      .strict(),
    redis: redisSchema,
    store: z
      .object({ prefix: z.string().default("signing:") })
      .strict()
      .prefault({}),
    /** Signing nodes whose /metrics are scraped for invalid-token spikes. */
    nodes: z.array(z.string().url()).default([]),
    /**
     * InvalidTokenSpike, the same condition as the Prometheus rule of that name (ratio and
     * minimum equal to its thresholds; test/rules/alerts.test.ts holds them together), over the
     * monitor's shorter window: one scrape interval.
     */
    spike: z
      .object({
        scrapeCron: cron.default("*/5 * * * * *"),
        /** Share of token checks, summed over the nodes, that are rejected: above it is a spike. */
        ratio: z.number().gt(0).lt(1).default(0.25),
        /**
         * All token checks per second (every result, summed over the nodes) that the share needs
         * to count: a few bad tokens on an idle cluster are not a spike.
         */
        minChecksPerSecond: z.number().min(0).default(0.1),
        /** The condition must hold this long before the alert fires. */
        forSeconds: z.number().min(0).default(30),
      })
      .strict()
      // Parsed from {}, so the defaults above are the only ones (not a second copy here).
      .prefault({}),
    alerts: z
      .object({
        /**
         * false: the monitor's alerts are only log lines (and
         * signing_monitor_alert_delivery_configured is 0). It must be said: a monitor without a
         * destination would otherwise page nobody and nothing would say so.
         */
        enabled: z.boolean().default(true),
        /** Alertmanager-compatible webhook receiver (webhook payload version 4). */
        webhookUrl: z.string().url().optional(),
        /**
         * An Alertmanager (its base URL): alerts go to its API, <url>/api/v2/alerts, and are
         * re-sent while they fire, as Prometheus does, so that Alertmanager routes them.
         */
        alertmanagerUrl: z.string().url().optional(),
        /** Base of runbook links: runbook_url = <base>/<AlertName>.md */
        runbookBaseUrl: z
          .string()
          .default("https://github.com/signing-cluster/signing-cluster/blob/main/runbooks"),
        timeoutMs: z.number().int().positive().default(5000),
        retries: z.number().int().min(0).default(5),
      })
      .strict()
      .prefault({}),
    log: z
      .object({
        level: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type MonitorConfig = z.infer<typeof monitorConfigSchema>;

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
