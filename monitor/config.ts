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
      .default({ prefix: "signing:" }),
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
        /** Alertmanager-compatible webhook; alerts are always logged as well. */
        webhookUrl: z.string().url().optional(),
        /** Base of runbook links: runbook_url = <base>/<AlertName>.md */
        runbookBaseUrl: z
          .string()
          .default("https://github.com/signing-cluster/signing-cluster/blob/main/runbooks"),
        timeoutMs: z.number().int().positive().default(5000),
        retries: z.number().int().min(0).default(5),
      })
      .strict()
      .default({
        runbookBaseUrl: "https://github.com/signing-cluster/signing-cluster/blob/main/runbooks",
        timeoutMs: 5000,
        retries: 5,
      }),
    log: z
      .object({
        level: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
      })
      .strict()
      .default({ level: "info" }),
  })
  .strict();

export type MonitorConfig = z.infer<typeof monitorConfigSchema>;

export interface LoadedMonitorConfig {
  config: MonitorConfig;
  redisPassword: string | undefined;
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
  if (!parsed.success) throw new ConfigError(describeIssues(parsed.error));
  const config = parsed.data;
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(baseDir, p));
  config.monitor.stateDir = abs(config.monitor.stateDir);
  const problems: string[] = [];
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
