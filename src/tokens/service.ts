import { createHash } from "node:crypto";
import type { Logger } from "pino";
import type { NodeMetrics } from "../metrics/node-metrics.js";
import { type StoreBreakers, StoreUnavailableError } from "../store/breakers.js";
import { ensureEpoch } from "../store/epoch.js";
import type { StoreKeys } from "../store/keys.js";
import type { RedisClient } from "../store/redis.js";
import { TokenRecords } from "../store/token-records.js";
import {
  encodeToken,
  type LocalCheck,
  newTokenId,
  type TokenClaims,
  type TokenSecret,
  verifyMac,
  verifyTokenLocally,
} from "./codec.js";
import { decodeNonce, encodeNonce } from "./nonce.js";
import { decideOrphan, type OrphanPolicy } from "./orphans.js";

/** Every outcome of a token check; the values of signing_token_checks_total{result}. */
export const TOKEN_CHECK_RESULTS = [
  "valid",
  "healed",
  "degraded",
  "malformed",
  "bad_signature",
  "expired",
  "ip_mismatch",
  "revoked",
  "invalidated",
  "recovering",
  "nonce_mismatch",
  "format_not_allowed",
  "unavailable",
] as const;
export type TokenCheckResult = (typeof TOKEN_CHECK_RESULTS)[number];

/** The results that are a client's token being refused, as opposed to our own outages. */
export const REJECTED_TOKEN_RESULTS = [
  "malformed",
  "bad_signature",
  "expired",
  "ip_mismatch",
  "revoked",
  "invalidated",
  "nonce_mismatch",
  "format_not_allowed",
] as const satisfies readonly TokenCheckResult[];

export type TokenCheck =
  | { ok: true; result: "valid" | "healed" | "degraded"; claims: TokenClaims; nextNonce?: string }
  | { ok: false; result: Exclude<TokenCheckResult, "valid" | "healed" | "degraded">; retryAfterMs?: number };

export interface TokenServiceOptions extends OrphanPolicy {
  client: RedisClient;
  keys: StoreKeys;
  secrets: TokenSecret[];
  nodeId: string;
  downPolicy: "hmac" | "reject";
  breakers: StoreBreakers;
  metrics: NodeMetrics;
  log: Logger;
}

export interface IssueRequest {
  issuer: string;
  clientIp: string;
  durationSeconds: number;
  formats?: string[];
}

/** Issues, checks and revokes tokens: the local MAC checks first, then one Redis round trip. */
export class TokenService {
  private readonly secrets: Map<string, Buffer>;
  private readonly records: TokenRecords;

  constructor(private readonly opts: TokenServiceOptions) {
    this.secrets = new Map(opts.secrets.map((s) => [s.kid, s.secret]));
    this.records = new TokenRecords(opts.client, opts.keys);
  }

  async issue(req: IssueRequest, nowMs = Date.now()): Promise<{ token: string; claims: TokenClaims }> {
    const { breakers, client, keys } = this.opts;
    const epoch = await breakers.run("token_writes", "epoch_ensure", () => ensureEpoch(client, keys, nowMs));
    const iat = Math.floor(nowMs / 1000);
    const claims: TokenClaims = {
      id: newTokenId(),
      ip: req.clientIp,
      iat,
      exp: iat + req.durationSeconds,
      ep: epoch.id,
      sub: req.issuer,
      ...(req.formats?.length ? { fmt: req.formats } : {}),
    };
    await breakers.run("token_writes", "token_save", () =>
      this.records.save({ claims, node: this.opts.nodeId }),
    );
    this.opts.metrics.tokensIssued.inc();
    return { token: encodeToken(claims, this.opts.secrets[0] as TokenSecret), claims };
  }

  /** Revokes a token by value (`expire=<token>`); needs a valid MAC, not a live token. */
  async revoke(token: string): Promise<LocalCheck> {
    const checked = verifyMac(token, this.secrets);
    if (checked.ok) {
      const { claims } = checked;
      await this.opts.breakers.run("token_writes", "token_revoke", () =>
        this.records.revoke(claims, "revoked by issuer"),
      );
    }
    return checked;
  }

  /**
   * Checks a presented token. With `nonce`, also checks and advances the token's nonce chain
   * (uploads); without, only validity (reads).
   */
  async check(
    token: string,
    clientIp: string,
    nonce?: { value: string; sha256: string },
    format?: string,
    nowMs = Date.now(),
  ): Promise<TokenCheck> {
    const result = await this.decide(token, clientIp, nonce, format, nowMs);
    this.opts.metrics.tokenChecks.inc({ result: result.result });
    return result;
  }

  private async decide(
    token: string,
    clientIp: string,
    nonce: { value: string; sha256: string } | undefined,
    format: string | undefined,
    nowMs: number,
  ): Promise<TokenCheck> {
    const local = verifyTokenLocally(token, this.secrets, clientIp, Math.floor(nowMs / 1000));
    if (!local.ok) return local;
    const { claims, kid } = local;
    // Before the store: a refused format must not consume the nonce.
    if (format !== undefined && claims.fmt && !claims.fmt.includes(format))
      return { ok: false, result: "format_not_allowed" };
    const secret = this.secrets.get(kid) as Buffer;
    let presented: { counter: number; sha256: string } | undefined;
    if (nonce) {
      const counter = decodeNonce(claims.id, nonce.value, secret);
      if (counter === undefined) return { ok: false, result: "nonce_mismatch" };
      presented = { counter, sha256: nonce.sha256 };
    }
    const withNonce = (next: number | undefined) =>
      next === undefined ? {} : { nextNonce: encodeNonce(claims.id, next, secret) };

    try {
      const { breakers, client, keys } = this.opts;
      const stored = await breakers.run("token_reads", "token_check", () =>
        this.records.check(claims, presented),
      );
      if (stored.state === "ok") return { ok: true, result: "valid", claims, ...withNonce(stored.nextNonce) };
      if (stored.state !== "missing") return { ok: false, result: stored.state };

      const epoch = await breakers.run("token_reads", "epoch_ensure", () => ensureEpoch(client, keys, nowMs));
      const decision = decideOrphan(claims, epoch, nowMs, this.opts);
      switch (decision.action) {
        case "revoked":
        case "invalidated":
          return { ok: false, result: decision.action };
        case "recovering":
          return { ok: false, result: "recovering", retryAfterMs: decision.retryAfterMs };
        case "heal": {
          await breakers.run("token_writes", "token_heal", () =>
            this.records.heal({ claims, node: this.opts.nodeId }),
          );
          const healed = await breakers.run("token_reads", "token_check", () =>
            this.records.check(claims, presented),
          );
          if (healed.state !== "ok")
            return { ok: false, result: healed.state === "missing" ? "revoked" : healed.state };
          this.opts.log.info({ event: "token_healed", tokenHash: tokenHash(claims.id), epoch: epoch.id });
          return { ok: true, result: "healed", claims, ...withNonce(healed.nextNonce) };
        }
      }
    } catch (err) {
      // Our store failed, not the client: never a 4xx. Under `hmac` the MAC, expiry and IP
      // checks above are enough to keep builds signing; the nonce chain resumes with Redis.
      if (!(err instanceof StoreUnavailableError)) throw err;
      this.opts.log.debug({
        event: "token_store_unavailable",
        err: err.message,
        downPolicy: this.opts.downPolicy,
      });
      if (this.opts.downPolicy === "reject") return { ok: false, result: "unavailable" };
      return {
        ok: true,
        result: "degraded",
        claims,
        ...withNonce(presented ? presented.counter + 1 : undefined),
      };
    }
  }
}

/** Logs name tokens by a hash of their id, never by the token itself. */
export function tokenHash(id: string): string {
  return createHash("sha256").update(id).digest("hex").slice(0, 16);
}
