import { type Request, type Response, Router } from "express";
import type { NodeMetrics } from "../../metrics/node-metrics.js";
import type { SigningService } from "../../signing/service.js";
import type { FormatName } from "../../signing/signer.js";
import { BREAKER_NAMES, type StoreBreakers } from "../../store/breakers.js";
import type { ConnectionHealth } from "../../store/connection-health.js";
import type { RedisClient } from "../../store/redis.js";
import { ApiError } from "../errors.js";
import type { Lifecycle } from "../lifecycle.js";
import { otherMethodsRefused } from "./methods.js";
import type { FormatLimits } from "./sign.js";

/**
 * What the formats, keys, health, metrics and version routes read: the node's parts, built by
 * startNode.
 */
export interface MetaRouteDeps {
  signing: SigningService;
  limits: ReadonlyMap<FormatName, FormatLimits>;
  redis: RedisClient;
  /** Why the connection to Redis fails, when it does. */
  redisHealth: ConnectionHealth;
  breakers: StoreBreakers;
  lifecycle: Lifecycle;
  metrics: NodeMetrics;
  downPolicy: "hmac" | "reject";
  version: { version: string; commit: string; builtAt: string; node: string };
}

/**
 * Keys are loaded at start-up; an OpenPGP key may expire while the node runs, and a key
 * backend (a PKCS#11 token) may fail: each key is tried through its breaker, so a node the load
 * balancer took out still notices its token is back. A format that cannot sign degrades the
 * node; none that can makes it unavailable.
 */
async function keysCheck(deps: MetaRouteDeps) {
  const now = Date.now();
  const problems = await Promise.all(
    [...deps.limits.keys()].map(async (format) => {
      const signer = deps.signing.signer(format);
      const at = signer.expiresAt;
      if (at && at.getTime() <= now) return `${format} key expired at ${at.toISOString()}`;
      const backend = await signer.key.check();
      return backend.ok ? undefined : `${format} key (${signer.key.backend}): ${backend.detail}`;
    }),
  );
  const failing = problems.filter((p) => p !== undefined);
  return {
    ok: deps.limits.size > failing.length,
    impaired: failing.length > 0,
    detail: failing.length ? failing.join("; ") : `${deps.limits.size} formats loaded`,
  };
}

/**
 * Pings Redis through every breaker: a half-open breaker gets its trial call from the probe,
 * so a node that the load balancer took out (no traffic) still closes its breakers and
 * becomes ready again once Redis is back.
 */
async function redisCheck(
  breakers: StoreBreakers,
  redis: RedisClient,
  health: ConnectionHealth,
): Promise<{ ok: boolean; detail: string }> {
  const results = await Promise.all(
    BREAKER_NAMES.map(async (name) => {
      try {
        await breakers.run(name, "ping", () => redis.ping());
        return undefined;
      } catch (err) {
        return `${name}: ${(err as Error).message}`;
      }
    }),
  );
  const problems = results.filter((r) => r !== undefined);
  if (problems.length === 0) return { ok: true, detail: "ping ok through every breaker" };
  // The cause first: the connection's own error, then what each breaker saw of it.
  const cause = health.describe();
  return { ok: false, detail: [...(cause ? [`Redis connection: ${cause}`] : []), ...problems].join("; ") };
}

/**
 * Whether Redis may evict keys: with a memory limit and a policy other than noeviction, it may
 * drop a revocation marker, and a revoked token whose record then goes missing would heal.
 */
async function evictionCheck(redis: RedisClient): Promise<{ ok: boolean; detail: string }> {
  let info: string;
  try {
    info = await redis.info("memory");
  } catch {
    return { ok: true, detail: "not known (Redis did not answer INFO memory)" };
  }
  const field = (name: string) => new RegExp(`^${name}:(.*)$`, "m").exec(info)?.[1]?.trim();
  const policy = field("maxmemory_policy") ?? "unknown";
  const limit = Number(field("maxmemory") ?? 0);
  if (limit === 0 || policy === "noeviction") return { ok: true, detail: `maxmemory-policy ${policy}` };
  return {
    ok: false,
    detail: `maxmemory-policy ${policy} with maxmemory ${limit}: Redis may evict revocation markers; set noeviction`,
  };
}

/** What /readyz reports, check by check. */
interface ReadinessChecks {
  redis: { ok: boolean; detail: string };
  eviction: { ok: boolean; detail: string };
  keys: { ok: boolean; impaired: boolean; detail: string };
  lifecycle: { ok: boolean; detail: string };
}

async function readinessChecks(deps: MetaRouteDeps): Promise<ReadinessChecks> {
  const shuttingDown = deps.lifecycle.shuttingDown;
  return {
    redis: await redisCheck(deps.breakers, deps.redis, deps.redisHealth),
    eviction: await evictionCheck(deps.redis),
    keys: await keysCheck(deps),
    lifecycle: { ok: !shuttingDown, detail: shuttingDown ? "shutting down" : "serving" },
  };
}

/**
 * Ready = this node can sign. Without Redis it still can under downPolicy hmac (tokens are
 * checked by MAC, results kept locally), so an outage of Redis does not take every node out
 * of the load balancer at once: it reports "degraded" with 200. Under reject it cannot:
 * "unavailable", 503. An expired or failing key stops one format, not the node: the others
 * still sign (degraded).
 */
function readinessStatus(
  checks: ReadinessChecks,
  downPolicy: MetaRouteDeps["downPolicy"],
): "ok" | "degraded" | "unavailable" {
  if (!checks.keys.ok || !checks.lifecycle.ok) return "unavailable";
  if (!checks.redis.ok && downPolicy !== "hmac") return "unavailable";
  if (!checks.redis.ok || checks.keys.impaired || !checks.eviction.ok) return "degraded";
  return "ok";
}

/** GET /readyz (and /__heartbeat__): the checks and the status they add up to. */
function readinessHandler(deps: MetaRouteDeps) {
  return async (_req: Request, res: Response) => {
    const checks = await readinessChecks(deps);
    const status = readinessStatus(checks, deps.downPolicy);
    res.status(status === "unavailable" ? 503 : 200).json({ status, checks });
  };
}

/** The enabled formats, with what holds each key and until when (`signing-admin keys list` shows it). */
function formatList(deps: MetaRouteDeps) {
  return [...deps.limits].map(([name, limits]) => {
    const signer = deps.signing.signer(name);
    return {
      name,
      kind: signer.kind,
      suffix: signer.suffix,
      fingerprint: signer.fingerprint,
      maxSize: limits.maxSize,
      backend: signer.key.backend,
      algorithm: signer.key.algorithm,
      expiresAt: signer.expiresAt?.toISOString() ?? null,
    };
  });
}

/** GET /formats: each enabled format with its suffix, key fingerprint, size limit and key. */
function formatsHandler(deps: MetaRouteDeps) {
  return (_req: Request, res: Response) => {
    res.json({ formats: formatList(deps) });
  };
}

/** GET /keys/:format: the public key that verifies the format's signatures. */
function publicKeyHandler(deps: MetaRouteDeps) {
  return (req: Request, res: Response) => {
    const format = req.params.format as FormatName;
    if (!deps.limits.has(format))
      throw new ApiError("UNKNOWN_FORMAT", `format ${String(format).slice(0, 32)} is not enabled`);
    const signer = deps.signing.signer(format);
    res.set("X-Key-Fingerprint", signer.fingerprint).type("text/plain").send(signer.publicKey());
  };
}

/** Formats, public keys, health and version. */
export function metaRoutes(deps: MetaRouteDeps): Router {
  const router = Router();
  router.get("/formats", formatsHandler(deps));
  router.get("/keys/:format", publicKeyHandler(deps));

  const live = (_req: Request, res: Response) => {
    res.json({ status: "ok" });
  };
  router.get("/__lbheartbeat__", live);
  router.get("/livez", live);

  const ready = readinessHandler(deps);
  router.get("/__heartbeat__", ready);
  router.get("/readyz", ready);

  router.get("/metrics", async (_req: Request, res: Response) => {
    res.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });
  router.get("/__version__", (_req: Request, res: Response) => {
    res.json(deps.version);
  });
  for (const path of [
    "/formats",
    "/keys/:format",
    "/__lbheartbeat__",
    "/livez",
    "/__heartbeat__",
    "/readyz",
    "/metrics",
    "/__version__",
  ])
    otherMethodsRefused(router, path, ["GET"]);
  return router;
}
