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
import { otherMethodsRefused } from "./methods.js";

/** What `POST /token` uses: the node's parts, built by startNode. */
export interface TokenRouteDeps {
  tokens: TokenService;
  audit: AuditLog;
  lifecycle: Lifecycle;
  tokenPerIp: RateLimiter;
  /** Where a token may be asked for from (`token.issuers`). */
  issuers: CidrList;
  tokenConfig: Config["token"];
  /** The enabled formats, which a token may be restricted to. */
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

type Issuer = TokenRouteDeps["tokenConfig"]["credentials"][number];

/** Where an issuer may call from and which build machines it may ask tokens for. */
interface Scope {
  from?: CidrList;
  slaveIps?: CidrList;
}

/** What one `POST /token` asks: who, from where, with which form fields. */
interface TokenRequest {
  req: Request;
  res: Response;
  ip: string;
  issuer: Issuer;
  body: Record<string, unknown>;
}

/**
 * `POST /token` in its steps: the caller (address, rate, credentials, scope), then either a
 * revocation (`expire=`) or a token for one build machine.
 */
class TokenDesk {
  private readonly scopes: Map<string, Scope>;

  constructor(private readonly deps: TokenRouteDeps) {
    this.scopes = new Map(
      deps.tokenConfig.credentials.map((c) => [
        c.user,
        {
          ...(c.from ? { from: new CidrList(c.from) } : {}),
          ...(c.slaveIps ? { slaveIps: new CidrList(c.slaveIps) } : {}),
        },
      ]),
    );
  }

  async handle(req: Request, res: Response): Promise<void> {
    const t = await this.caller(req, res);
    const expire = field(t.body, "expire");
    if (expire !== undefined) await this.revoke(t, expire);
    else await this.issue(t);
  }

  /** Who asks: an allowed address, under its rate, with valid credentials, within its scope. */
  private async caller(req: Request, res: Response): Promise<TokenRequest> {
    const { deps } = this;
    const ip = clientIp(req);
    if (!deps.issuers.has(ip))
      throw new ApiError("ISSUER_NOT_ALLOWED", "this address may not request tokens");
    if (deps.lifecycle.shuttingDown)
      throw new ApiError("SHUTTING_DOWN", "this node is shutting down: use another node", 1);
    // Before the password check: this is what makes guessing passwords slow.
    const ipWait = deps.tokenPerIp.take(ip);
    if (ipWait !== undefined)
      throw new ApiError("RATE_LIMITED", "too many token requests from this address", ipWait / 1000);
    const auth = basicAuth(req);
    const issuer = auth && (await findIssuer(auth.user, auth.password, deps.tokenConfig.credentials));
    if (!auth || !issuer) {
      res.set("WWW-Authenticate", 'Basic realm="signing", charset="UTF-8"');
      throw new ApiError("BAD_CREDENTIALS", "issuer credentials are missing or wrong");
    }
    const from = this.scopes.get(issuer.user)?.from;
    if (from && !from.has(ip))
      throw new ApiError("ISSUER_NOT_ALLOWED", "this issuer may not request tokens from this address");
    if (!req.is("application/x-www-form-urlencoded") || typeof req.body !== "object" || req.body === null)
      throw new ApiError("BAD_REQUEST", "expected an application/x-www-form-urlencoded body");
    return { req, res, ip, issuer, body: req.body as Record<string, unknown> };
  }

  private async revoke({ res, ip, issuer }: TokenRequest, token: string): Promise<void> {
    const revoked = await this.deps.tokens.revoke(token);
    if (!revoked.ok) throw tokenError(revoked.result);
    const hashed = tokenHash(revoked.claims.id);
    this.deps.log.info({ event: "token_revoked", issuer: issuer.user, tokenHash: hashed });
    this.deps.audit.write({ event: "token_revoked", issuer: issuer.user, from: ip, tokenHash: hashed });
    res.type("text/plain").send("revoked\n");
  }

  private async issue(t: TokenRequest): Promise<void> {
    const slaveIp = this.slaveIpOf(t);
    const duration = this.durationOf(t);
    const formats = this.formatsOf(t);
    const { token, claims } = await this.deps.tokens.issue({
      issuer: t.issuer.user,
      clientIp: slaveIp,
      durationSeconds: duration,
      ...(formats ? { formats } : {}),
    });
    const who = { issuer: t.issuer.user, from: t.ip, slaveIp, tokenHash: tokenHash(claims.id) };
    this.deps.log.info({ event: "token_issued", ...who, duration });
    this.deps.audit.write({
      event: "token_issued",
      ...who,
      expiresAt: new Date(claims.exp * 1000).toISOString(),
      ...(claims.fmt ? { formats: claims.fmt } : {}),
    });
    t.res.type("text/plain").send(token);
  }

  /** One build machine's address, in one spelling, within the issuer's scope. */
  private slaveIpOf({ body, issuer }: TokenRequest): string {
    const text = field(body, "slave_ip");
    if (!text) throw new ApiError("BAD_REQUEST", "slave_ip must be an IP address");
    const notUnicast = whyNotUnicast(text);
    if (notUnicast)
      throw new ApiError("BAD_REQUEST", `slave_ip must be one build machine's address: ${notUnicast}`);
    // Bound in one spelling: the node compares it with the peer's canonical address.
    const slaveIp = canonicalIp(text) as string;
    const allowed = this.scopes.get(issuer.user)?.slaveIps;
    if (allowed && !allowed.has(slaveIp))
      throw new ApiError("ISSUER_NOT_ALLOWED", "this issuer may not request tokens for that build machine");
    return slaveIp;
  }

  /** Whole seconds in decimal digits (Number() would also take "1e3", "0x10" and " 60"). */
  private durationOf({ body, issuer }: TokenRequest): number {
    const { tokenConfig } = this.deps;
    const max = Math.min(tokenConfig.maxDuration, issuer.maxDuration ?? Number.POSITIVE_INFINITY);
    const text = field(body, "duration");
    if (text === undefined) return Math.min(tokenConfig.defaultDuration, max);
    const duration = /^[0-9]{1,9}$/.test(text) ? Number(text) : Number.NaN;
    if (!Number.isInteger(duration) || duration < 1 || duration > max)
      throw new ApiError(
        "BAD_REQUEST",
        `duration must be whole seconds, in decimal digits, between 1 and ${max}`,
      );
    return duration;
  }

  private formatsOf({ body }: TokenRequest): string[] | undefined {
    const text = field(body, "formats");
    const formats = text ? text.split(",").map((f) => f.trim()) : undefined;
    for (const f of formats ?? [])
      if (!this.deps.formats.has(f))
        throw new ApiError("UNKNOWN_FORMAT", `format ${f.slice(0, 32)} is not enabled`);
    return formats;
  }
}

/** `POST /token`: build masters get a token for a build machine, or revoke one (`expire=`). */
export function tokenRoutes(deps: TokenRouteDeps): Router {
  const router = Router();
  const desk = new TokenDesk(deps);
  router.post(
    "/token",
    express.urlencoded({ extended: false, limit: "16kb", parameterLimit: 10 }),
    (req: Request, res: Response) => desk.handle(req, res),
  );
  otherMethodsRefused(router, "/token", ["POST"]);
  return router;
}
