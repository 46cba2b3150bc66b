import { type Request, type Response, Router } from "express";
import type { SigningService } from "../../signing/service.js";
import type { FormatName } from "../../signing/signer.js";
import type { RedisClient } from "../../store/redis.js";
import { ApiError } from "../errors.js";
import type { FormatLimits } from "./sign.js";

export interface MetaRouteDeps {
  signing: SigningService;
  limits: ReadonlyMap<FormatName, FormatLimits>;
  redis: RedisClient;
  version: { version: string; commit: string; node: string };
}

async function redisCheck(redis: RedisClient): Promise<{ ok: boolean; detail: string }> {
  try {
    await redis.ping();
    return { ok: true, detail: "ping ok" };
  } catch (err) {
    return { ok: false, detail: (err as Error).message };
  }
}

/** Formats, public keys, health and version. */
export function metaRoutes(deps: MetaRouteDeps): Router {
  const router = Router();

  router.get("/formats", (_req: Request, res: Response) => {
    res.json({
      formats: [...deps.limits].map(([name, limits]) => {
        const signer = deps.signing.signer(name);
        return { name, suffix: signer.suffix, fingerprint: signer.fingerprint, maxSize: limits.maxSize };
      }),
    });
  });

  router.get("/keys/:format", (req: Request, res: Response) => {
    const format = req.params.format as FormatName;
    if (!deps.limits.has(format))
      throw new ApiError("UNKNOWN_FORMAT", `format ${String(format).slice(0, 32)} is not enabled`);
    const signer = deps.signing.signer(format);
    res.set("X-Key-Fingerprint", signer.fingerprint).type("text/plain").send(signer.publicKey());
  });

  const live = (_req: Request, res: Response) => {
    res.json({ status: "ok" });
  };
  router.get("/__lbheartbeat__", live);
  router.get("/livez", live);

  const ready = async (_req: Request, res: Response) => {
    const checks = {
      redis: await redisCheck(deps.redis),
      keys: { ok: deps.limits.size > 0, detail: `${deps.limits.size} formats loaded` },
    };
    const ok = Object.values(checks).every((c) => c.ok);
    res.status(ok ? 200 : 503).json({ status: ok ? "ok" : "unavailable", checks });
  };
  router.get("/__heartbeat__", ready);
  router.get("/readyz", ready);

  router.get("/__version__", (_req: Request, res: Response) => {
    res.json(deps.version);
  });
  return router;
}
