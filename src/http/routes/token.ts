import express, { type Request, type Response, Router } from "express";
import type { Logger } from "pino";
import type { Config } from "../../config/schema.js";
import type { AuditLog } from "../../log/audit.js";
import { canonicalIp, whyNotUnicast } from "../../net/address.js";
import { findIssuer } from "../../tokens/credentials.js";
import { type TokenService, tokenHash } from "../../tokens/service.js";
import { CidrList } from "../cidr.js";
import { clientIp } from "../client-ip.js";
import { ApiError, tokenError } from "../errors.js";
import type { Lifecycle } from "../lifecycle.js";
import type { RateLimiter } from "../rate-limit.js";

export interface TokenRouteDeps {
  tokens: TokenService;
  audit: AuditLog;
  lifecycle: Lifecycle;
  tokenPerIp: RateLimiter;
  issuers: CidrList;
  tokenConfig: Config["token"];
  formats: ReadonlySet<string>;
  log: Logger;
}

function basicAuth(req: Request): { user: string; password: string } | undefined {
  const m = /^Basic ([A-Za-z0-9+/=]+)$/.exec(req.get("authorization") ?? "");
  if (!m) return undefined;
  const decoded = Buffer.from(m[1] as string, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  return colon < 0 ? undefined : { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

function field(body: Record<string, unknown>, name: string): string | undefined {
  const v = body[name];
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw new ApiError("BAD_REQUEST", `field ${name} must be given once, as text`);
  return v;
}

/** `POST /token`: build masters get a token for a build machine, or revoke one (`expire=`). */
export function tokenRoutes(deps: TokenRouteDeps): Router {
  const router = Router();
  const { tokenConfig } = deps;
  const scopes = new Map(
    tokenConfig.credentials.map((c) => [
      c.user,
      {
        ...(c.from ? { from: new CidrList(c.from) } : {}),
        ...(c.slaveIps ? { slaveIps: new CidrList(c.slaveIps) } : {}),
      },
    ]),
  );
  router.post(
    "/token",
    express.urlencoded({ extended: false, limit: "16kb", parameterLimit: 10 }),
    async (req: Request, res: Response) => {
      const ip = clientIp(req);
      if (!deps.issuers.has(ip))
        throw new ApiError("ISSUER_NOT_ALLOWED", "this address may not request tokens");
      if (deps.lifecycle.shuttingDown) {
        throw new ApiError("SHUTTING_DOWN", "this node is shutting down: use another node", 1);
      }
      // Before the password check: this is what makes guessing passwords slow.
      const ipWait = deps.tokenPerIp.take(ip);
      if (ipWait !== undefined) {
        throw new ApiError("RATE_LIMITED", "too many token requests from this address", ipWait / 1000);
      }
      const auth = basicAuth(req);
      const issuer = auth && (await findIssuer(auth.user, auth.password, tokenConfig.credentials));
      if (!auth || !issuer) {
        res.set("WWW-Authenticate", 'Basic realm="signing", charset="UTF-8"');
        throw new ApiError("BAD_CREDENTIALS", "issuer credentials are missing or wrong");
      }
      const scope = scopes.get(issuer.user);
      if (scope?.from && !scope.from.has(ip)) {
        throw new ApiError("ISSUER_NOT_ALLOWED", "this issuer may not request tokens from this address");
      }
      if (!req.is("application/x-www-form-urlencoded") || typeof req.body !== "object" || req.body === null) {
        throw new ApiError("BAD_REQUEST", "expected an application/x-www-form-urlencoded body");
      }
      const body = req.body as Record<string, unknown>;

      const expire = field(body, "expire");
      if (expire !== undefined) {
        const revoked = await deps.tokens.revoke(expire);
        if (!revoked.ok) throw tokenError(revoked.result);
        deps.log.info({ event: "token_revoked", issuer: auth.user, tokenHash: tokenHash(revoked.claims.id) });
        deps.audit.write({
          event: "token_revoked",
          issuer: auth.user,
          from: ip,
          tokenHash: tokenHash(revoked.claims.id),
        });
        res.type("text/plain").send("revoked\n");
        return;
      }

      const slaveIpText = field(body, "slave_ip");
      if (!slaveIpText) throw new ApiError("BAD_REQUEST", "slave_ip must be an IP address");
      const notUnicast = whyNotUnicast(slaveIpText);
      if (notUnicast)
        throw new ApiError("BAD_REQUEST", `slave_ip must be one build machine's address: ${notUnicast}`);
      // Bound in one spelling: the node compares it with the peer's canonical address.
      const slaveIp = canonicalIp(slaveIpText) as string;
      if (scope?.slaveIps && !scope.slaveIps.has(slaveIp)) {
        throw new ApiError("ISSUER_NOT_ALLOWED", "this issuer may not request tokens for that build machine");
      }
      const maxDuration = Math.min(tokenConfig.maxDuration, issuer.maxDuration ?? Number.POSITIVE_INFINITY);
      const durationText = field(body, "duration");
      // Decimal digits only: Number() would also take "1e3", "0x10" and " 60".
      const duration =
        durationText === undefined
          ? Math.min(tokenConfig.defaultDuration, maxDuration)
          : /^[0-9]{1,9}$/.test(durationText)
            ? Number(durationText)
            : Number.NaN;
      if (!Number.isInteger(duration) || duration < 1 || duration > maxDuration) {
        throw new ApiError(
          "BAD_REQUEST",
          `duration must be whole seconds, in decimal digits, between 1 and ${maxDuration}`,
        );
      }
      const formatsText = field(body, "formats");
      const formats = formatsText ? formatsText.split(",").map((f) => f.trim()) : undefined;
      for (const f of formats ?? []) {
        if (!deps.formats.has(f))
          throw new ApiError("UNKNOWN_FORMAT", `format ${f.slice(0, 32)} is not enabled`);
      }

      const { token, claims } = await deps.tokens.issue({
        issuer: auth.user,
        clientIp: slaveIp,
        durationSeconds: duration,
        ...(formats ? { formats } : {}),
      });
      deps.log.info({
        event: "token_issued",
        issuer: auth.user,
        from: ip,
        slaveIp,
        duration,
        tokenHash: tokenHash(claims.id),
      });
      deps.audit.write({
        event: "token_issued",
        issuer: auth.user,
        from: ip,
        slaveIp,
        tokenHash: tokenHash(claims.id),
        expiresAt: new Date(claims.exp * 1000).toISOString(),
        ...(claims.fmt ? { formats: claims.fmt } : {}),
      });
      res.type("text/plain").send(token);
    },
  );
  return router;
}
