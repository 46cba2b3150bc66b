import express, { type NextFunction, type Request, type Response } from "express";
import type { Logger } from "pino";
import { hasCode } from "../errors.js";
import { ReplicaAckTimeoutError, StoreCorruptError, StoreUnavailableError } from "../store/errors.js";
import type { CidrList } from "./cidr.js";
import { clientGate } from "./client-ip.js";
import { ApiError, sendError } from "./errors.js";
import { type MetaRouteDeps, metaRoutes } from "./routes/meta.js";
import { resultRoutes } from "./routes/results.js";
import { type SignRouteDeps, signRoutes } from "./routes/sign.js";
import { type TokenRouteDeps, tokenRoutes } from "./routes/token.js";

/**
 * Everything the HTTP app is built from (startNode assembles it): the routes' parts, the log,
 * and who may call at all (`node.allowedClients`) and whose X-Forwarded-For is believed
 * (`node.trustProxy`).
 */
export type AppDeps = TokenRouteDeps &
  SignRouteDeps &
  MetaRouteDeps & { log: Logger; trustProxy: CidrList; allowedClients: CidrList };

/** Our store or key backend failing is never the client's fault: 503, retry (elsewhere). */
function storeError(err: unknown): ApiError | undefined {
  if (err instanceof ReplicaAckTimeoutError)
    return new ApiError(
      "STORE_UNAVAILABLE",
      "written on the Redis primary, but no replica confirmed it in time, so it is not done: retry",
      1,
    );
  if (err instanceof StoreUnavailableError)
    return new ApiError("STORE_UNAVAILABLE", "the token store is unreachable: retry, or use another node", 1);
  if (hasCode(err, "KEY_BACKEND_UNAVAILABLE"))
    // Which token or module failed is for the operators' log, not for clients.
    return new ApiError(
      "KEY_BACKEND_UNAVAILABLE",
      "this node's signing key is unavailable: retry on another node",
      1,
    );
  if (err instanceof StoreCorruptError)
    return new ApiError(
      "STORE_CORRUPT",
      "the token store holds data this node did not expect; operators are alerted (StoreDataCorrupt): retry later",
      1,
    );
  return undefined;
}

/**
 * Errors express and body-parser raise for the client's mistakes (a malformed path escape, a
 * malformed or oversized form body) carry a 4xx `status`: a 400, never a 500 with a stack.
 */
function clientRequestError(err: unknown): ApiError | undefined {
  const e = err as { status?: unknown; type?: unknown };
  if (typeof e?.status !== "number" || e.status < 400 || e.status >= 500) return undefined;
  if (e.type === "entity.too.large") return new ApiError("BAD_REQUEST", "request body is too large");
  if (err instanceof URIError) return new ApiError("BAD_REQUEST", "the path has a malformed %-escape");
  return new ApiError("BAD_REQUEST", "request is malformed");
}

export function createApp(deps: AppDeps): express.Express {
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);

  app.use((req: Request, res: Response, next: NextFunction) => {
    const started = process.hrtime.bigint();
    res.on("finish", () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      // The route pattern, never the raw path: labels stay a small fixed set.
      const route = typeof req.route?.path === "string" ? `${req.method} ${req.route.path}` : "unmatched";
      deps.metrics.http.observe({ route, status: String(res.statusCode) }, seconds);
      deps.log.info({
        event: "request",
        method: req.method,
        route,
        status: res.statusCode,
        durationMs: seconds * 1000,
        ip: req.socket.remoteAddress,
      });
    });
    next();
  });

  app.use(clientGate(deps.trustProxy, deps.allowedClients));
  app.use(tokenRoutes(deps));
  app.use(signRoutes(deps));
  app.use(resultRoutes(deps));
  app.use(metaRoutes(deps));

  app.use((_req: Request, _res: Response, next: NextFunction) => {
    next(new ApiError("NOT_FOUND", "no such endpoint"));
  });
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const known = err instanceof ApiError ? err : (storeError(err) ?? clientRequestError(err));
    if (known) {
      sendError(res, known);
      return;
    }
    // Our bug, not the client's: log the details, tell the client nothing about internals.
    deps.log.error({
      event: "unhandled_error",
      method: req.method,
      path: req.path,
      err: (err as Error)?.stack,
    });
    sendError(res, new ApiError("INTERNAL", "internal error"));
  });
  return app;
}
