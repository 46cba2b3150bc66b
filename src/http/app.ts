import express, { type NextFunction, type Request, type Response } from "express";
import type { Logger } from "pino";
import { StoreUnavailableError } from "../store/breakers.js";
import type { CidrList } from "./cidr.js";
import { clientGate } from "./client-ip.js";
import { ApiError, sendError } from "./errors.js";
import { type MetaRouteDeps, metaRoutes } from "./routes/meta.js";
import { type SignRouteDeps, signRoutes } from "./routes/sign.js";
import { type TokenRouteDeps, tokenRoutes } from "./routes/token.js";

export type AppDeps = TokenRouteDeps &
  SignRouteDeps &
  MetaRouteDeps & { log: Logger; trustProxy: CidrList; allowedClients: CidrList };

/** Our store failing is never the client's fault: 503, retry elsewhere. */
function storeError(err: unknown): ApiError | undefined {
  return err instanceof StoreUnavailableError
    ? new ApiError("STORE_UNAVAILABLE", "the token store is unreachable: retry, or use another node", 1)
    : undefined;
}

/** body-parser's errors carry a `type`; they are the client's mistakes, never a 500. */
function clientBodyError(err: unknown): ApiError | undefined {
  const type = (err as { type?: unknown })?.type;
  if (typeof type !== "string") return undefined;
  return new ApiError(
    "BAD_REQUEST",
    type === "entity.too.large" ? "request body is too large" : "request body is malformed",
  );
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
  app.use(metaRoutes(deps));

  app.use((_req: Request, _res: Response, next: NextFunction) => {
    next(new ApiError("NOT_FOUND", "no such endpoint"));
  });
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const known = err instanceof ApiError ? err : (storeError(err) ?? clientBodyError(err));
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
