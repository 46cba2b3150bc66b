import { z } from "zod";
import { PasswordHashError, parsePasswordHash } from "./password-hash.js";

/** A secret is never written in the config itself: it names the file or env var that holds it. */
export const secretRef = z
  .object({ file: z.string().min(1).optional(), env: z.string().min(1).optional() })
  .strict()
  .refine((s) => (s.file === undefined) !== (s.env === undefined), {
    message: "give exactly one of `file` or `env`",
  });

/**
 * A hash scrypt cannot use is refused at start-up, with the reasons: at run time it could only
 * make every POST /token of that issuer fail. The format is read in one place, credentials.ts.
 */
const passwordHash = z.string().superRefine((stored, ctx) => {
  try {
    parsePasswordHash(stored);
  } catch (e) {
    if (!(e instanceof PasswordHashError)) throw e;
    ctx.addIssue({ code: "custom", message: e.message });
  }
});

const cidr = z.union([z.cidrv4(), z.cidrv6()], { error: "must be a CIDR such as 10.0.0.0/8" });
const seconds = z.number().int().positive();

/** The longest a token may live (token.maxDuration's bound, and a revocation's fallback life). */
export const MAX_TOKEN_SECONDS = 30 * 86400;
const ms = z.number().int().positive();

export const redisSchema = z
  .object({
    url: z.string().url().optional(),
    sentinels: z
      .array(z.object({ host: z.string().min(1), port: z.number().int().min(1).max(65535) }).strict())
      .min(1)
      .optional(),
    name: z.string().min(1).optional(),
    /**
     * Not supported: refused with a pointer to Sentinel. One primary carries far more than a
     * build farm needs, and the monitor's snapshot, INFO/ROLE and epoch see one server only.
     */
    cluster: z.unknown().optional(),
    password: secretRef.optional(),
    connectTimeoutMs: ms.default(2000),
  })
  .strict()
  .superRefine((r, ctx) => {
    if (r.cluster !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["cluster"],
        message:
          "Redis Cluster is not supported: one primary carries a build farm's tokens and jobs, and the monitor must see the whole keyspace. For high availability use Redis Sentinel (`sentinels` + `name`; see docs/operations.md)",
      });
      return;
    }
    if ((r.url === undefined) === (r.sentinels === undefined)) {
      ctx.addIssue({ code: "custom", message: "give exactly one of `url` or `sentinels` (+ `name`)" });
    }
    if (r.sentinels && !r.name) {
      ctx.addIssue({ code: "custom", path: ["name"], message: "Sentinel mode needs the master `name`" });
    }
  });

const rateLimit = z
  .object({ ratePerSecond: z.number().positive(), burst: z.number().int().positive() })
  .strict();

/** Letters and digits of any script, spaces and a few marks; no leading space, dot or dash. */
export const DEFAULT_FILENAME_PATTERN = "^[\\p{L}\\p{N}_][\\p{L}\\p{M}\\p{N}\\p{Pd} ._+,()\\[\\]~@]{0,254}$";

const formatBase = {
  enabled: z.boolean().default(true),
  /** Largest upload accepted for this format, in bytes. */
  maxSize: z
    .number()
    .int()
    .positive()
    .default(512 * 1024 * 1024),
  /**
   * Uploaded filenames must match this pattern (a JavaScript regular expression with the `u`
   * flag, so `\\p{L}` is any letter). Path separators and control characters are refused
   * whatever it says. The default takes names like `Firefox Setup 29.0.exe` and `Überblick.pdf`:
   * letters and digits of any script, spaces, dashes and `._+,()[]~@`, not starting with a
   * space, dot or dash.
   */
  filenamePattern: z
    .string()
    .default(DEFAULT_FILENAME_PATTERN)
    .refine(
      (p) => {
        try {
          new RegExp(p, "u");
          return true;
        } catch {
          return false;
        }
      },
      { message: "not a valid regular expression (with the u flag)" },
    ),
};

export const configSchema = z
  .object({
    node: z
      .object({
        /** Names this node in logs, jobs and tokens it issues; defaults to host:port. */
        id: z.string().min(1).optional(),
        host: z.string().default("127.0.0.1"),
        port: z.number().int().min(0).max(65535).default(9110),
        /** Serve plain HTTP (no `tls` section): only behind a TLS-terminating proxy, or for development. */
        allowPlaintext: z.boolean().default(false),
        /** Peers whose X-Forwarded-For is believed (your proxies). Empty: never believed. */
        trustProxy: z.array(cidr).default([]),
        /** Clients allowed to make any request; others get 403 before anything is parsed. */
        allowedClients: z.array(cidr).min(1).default(["0.0.0.0/0", "::/0"]),
      })
      .strict()
      .prefault({}),
    /** HTTPS: certificate chain and key (PEM files); with clientCa, clients must present a certificate it signed. */
    tls: z
      .object({ cert: z.string().min(1), key: z.string().min(1), clientCa: z.string().min(1).optional() })
      .strict()
      .optional(),
    /** Append-only JSON lines of every token issued or revoked and every signature made. */
    audit: z
      .object({ file: z.string().min(1).optional() })
      .strict()
      .prefault({}),
    redis: redisSchema,
    store: z
      .object({
        /** Prefix of every Redis key (DESIGN.md §4). */
        prefix: z.string().default("signing:"),
        commandTimeoutMs: ms.default(500),
        /** What a token check does while Redis is unreachable. */
        downPolicy: z.enum(["hmac", "reject"]).default("hmac"),
        /** What happens to a token lost with Redis once the monitor's grace period is over. */
        orphanPolicy: z.enum(["heal", "reject"]).default("heal"),
        recoveryGraceMs: ms.default(10_000),
        /**
         * A revocation or invalidation is answered once a replica has it (Redis WAIT), or after
         * this long with a retryable 503; no wait when the primary has no replicas.
         */
        replicaAckTimeoutMs: ms.default(1000),
        /** Circuit breakers around Redis (one per purpose: token reads, token writes, jobs). */
        breaker: z
          .object({
            /** Failure percentage over the rolling window that opens a breaker. */
            errorThresholdPercentage: z.number().min(1).max(100).default(50),
            /** Calls in the window before the percentage counts. */
            volumeThreshold: z.number().int().min(1).default(5),
            /** How long an open breaker fails fast before letting one trial call through. */
            resetTimeoutMs: ms.default(5000),
            rollingWindowMs: ms.default(10_000),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    token: z
      .object({
        /** HMAC secrets; the first one signs new tokens, all of them verify (rotation). */
        secrets: z
          .array(
            z
              .object({ kid: z.string().regex(/^[A-Za-z0-9_-]{1,32}$/, "kid must be [A-Za-z0-9_-]{1,32}") })
              .extend(secretRef.shape)
              .strict()
              .refine((s) => (s.file === undefined) !== (s.env === undefined), {
                message: "give exactly one of `file` or `env`",
              }),
          )
          .min(1),
        /** Callers allowed to request tokens (build masters). */
        issuers: z.array(cidr).min(1),
        /** Build-master credentials: user and scrypt hash (`signing-node hash-password`). */
        credentials: z
          .array(
            z
              .object({
                user: z.string().min(1),
                passwordHash,
                /** Where this issuer may call from (within token.issuers); default: anywhere in it. */
                from: z.array(cidr).min(1).optional(),
                /** Build machines this issuer may request tokens for; default: any. */
                slaveIps: z.array(cidr).min(1).optional(),
                /** A lower maximum token lifetime for this issuer, seconds. */
                maxDuration: seconds.optional(),
              })
              .strict(),
          )
          .min(1),
        /** At most 30 days: a revocation whose token's expiry is unknown is kept that long. */
        maxDuration: seconds.max(MAX_TOKEN_SECONDS).default(8 * 3600),
        defaultDuration: seconds.default(2 * 3600),
      })
      .strict()
      .refine((t) => t.defaultDuration <= t.maxDuration, {
        path: ["defaultDuration"],
        message: "must not exceed token.maxDuration",
      }),
    signing: z
      .object({
        /** How long signed results stay in Redis, seconds. */
        resultTtl: seconds.default(3600),
        /** A job whose node died before finishing it is abandoned after this long. */
        jobLeaseMs: ms.default(30_000),
        /** Longest `?wait=` a client may ask for, seconds. */
        maxWait: seconds.default(60),
        /**
         * Uploads being received plus jobs queued or signing on this node; beyond it uploads
         * get 503 OVERLOADED. Bounds memory, sockets and queueing delay.
         */
        maxPending: z.number().int().positive().default(64),
        /** Of those, at most this many from one client address. */
        maxPendingPerIp: z.number().int().positive().default(16),
        /**
         * An upload slower than this, measured over the last `uploadRateWindowMs`, is answered
         * 408 REQUEST_TIMEOUT: a trickling (or silent) upload holds a slot and a socket.
         */
        uploadMinBytesPerSecond: z.number().int().min(1).default(8192),
        /** The window the upload rate is measured over; also the grace an upload has at its start. */
        uploadRateWindowMs: ms.default(10_000),
        /** No longer used (uploadMinBytesPerSecond replaces it): accepted, so old configs start. */
        uploadIdleTimeoutMs: ms.optional(),
        /** Results kept in this node's memory while Redis is unreachable, bytes. */
        localResultBytes: z
          .number()
          .int()
          .positive()
          .default(64 * 1024 * 1024),
        formats: z
          .object({
            gpg: z
              .object({
                ...formatBase,
                keyFile: z.string().min(1),
                passphrase: secretRef.optional(),
              })
              .strict()
              .optional(),
            sshsig: z
              .object({
                ...formatBase,
                keyFile: z.string().min(1),
                namespace: z.string().min(1).default("file"),
              })
              .strict()
              .optional(),
          })
          .strict()
          .refine((f) => Object.values(f).some((v) => v?.enabled), {
            message: "enable at least one format",
          }),
      })
      .strict(),
    /** Per-node request rate limits (token buckets): 429 RATE_LIMITED with Retry-After beyond them. */
    limits: z
      .object({
        tokenPerIp: rateLimit.default({ ratePerSecond: 10, burst: 50 }),
        signPerIp: rateLimit.default({ ratePerSecond: 100, burst: 400 }),
        signPerToken: rateLimit.default({ ratePerSecond: 50, burst: 200 }),
      })
      .strict()
      .prefault({}),
    shutdown: z
      .object({
        /** On SIGTERM, how long in-flight jobs may take before the process exits anyway. */
        timeoutMs: ms.default(30_000),
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
  .strict()
  .refine((c) => c.tls !== undefined || c.node.allowPlaintext, {
    path: ["tls"],
    message: "give tls.cert and tls.key, or set node.allowPlaintext: true (behind a TLS-terminating proxy)",
  });

export type Config = z.infer<typeof configSchema>;
export type SecretRef = z.infer<typeof secretRef>;
