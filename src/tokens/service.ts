import { createHash } from "node:crypto";
import type { Logger } from "pino";
import { ThrottledWarning } from "../log/throttled.js";
import type { NodeMetrics } from "../metrics/node-metrics.js";
import type { StoreBreakers } from "../store/breakers.js";
import { ensureEpoch } from "../store/epoch.js";
import {
  classifyStoreError,
  outageReason,
  StoreCorruptError,
  StoreUnavailableError,
} from "../store/errors.js";
import type { StoreKeys } from "../store/keys.js";
import type { RedisClient } from "../store/redis.js";
import type { ReplicatedWrites } from "../store/replicas.js";
import { type ChainStep, type PresentedNonce, TokenRecords } from "../store/token-records.js";
import {
  encodeToken,
  type LocalCheck,
  type LocalRejection,
  newTokenId,
  type TokenClaims,
  type TokenSecret,
  verifyMac,
  verifyTokenLocally,
} from "./codec.js";
import { decodeNonce, encodeNonce, nonceRandom } from "./nonce.js";
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
  "corrupt",
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
  | {
      ok: false;
      result: Exclude<TokenCheckResult, "valid" | "healed" | "degraded" | "corrupt">;
      retryAfterMs?: number;
    };

/** The local half of a check passed: a token MAC-valid, unexpired, from its IP, for this format. */
export interface VerifiedToken {
  claims: TokenClaims;
  /** The secret its MAC verified under: nonces of this token are MACed with it too. */
  secret: Buffer;
}

export type LocalVerdict =
  | ({ ok: true } & VerifiedToken)
  | { ok: false; result: LocalRejection | "format_not_allowed" };

/**
 * What a TokenService issues and checks tokens with: the store, the MAC keys, the policies for a
 * Redis outage or loss.
 */
export interface TokenServiceOptions extends OrphanPolicy {
  client: RedisClient;
  keys: StoreKeys;
  /** The first signs new tokens; every one verifies (key rotation). */
  secrets: TokenSecret[];
  /** Written into each token record: which node issued it. */
  nodeId: string;
  /**
   * Redis unreachable: `hmac` accepts MAC-valid tokens unchecked against Redis, `reject` refuses
   * (`store.downPolicy`).
   */
  downPolicy: "hmac" | "reject";
  breakers: StoreBreakers;
  /** Where revocations are written and confirmed on a replica before they are answered. */
  replicated: ReplicatedWrites;
  metrics: NodeMetrics;
  log: Logger;
}

/**
 * A `POST /token` the route has checked: who asks, for which build machine, how long, which
 * formats.
 */
export interface IssueRequest {
  /** The authenticated issuer (`token.credentials[].user`). */
  issuer: string;
  /** The build machine the token is bound to (`slave_ip`). */
  clientIp: string;
  durationSeconds: number;
  /** Absent: every format. */
  formats?: string[];
}

/** A nonce presented with an upload: the text as sent, and the upload it is for. */
export interface NonceUse {
  value: string;
  sha256: string;
}

type StoredCheck = Exclude<TokenCheck, { result: "degraded" | "unavailable" }>;

/** At most one token_check_degraded warning per reason in this time (DegradedTokenChecks' runbook). */
export const DEGRADED_WARNING_INTERVAL_MS = 10_000;

/** Issues, checks and revokes tokens: the local MAC checks first, then one Redis round trip. */
export class TokenService {
  private readonly secrets: Map<string, Buffer>;
  private readonly records: TokenRecords;
  private readonly degradedWarning: ThrottledWarning;

  constructor(private readonly opts: TokenServiceOptions) {
    this.secrets = new Map(opts.secrets.map((s) => [s.kid, s.secret]));
    this.records = new TokenRecords(opts.client, opts.keys);
    this.degradedWarning = new ThrottledWarning(opts.log, DEGRADED_WARNING_INTERVAL_MS);
  }

  async issue(req: IssueRequest, nowMs = Date.now()): Promise<{ token: string; claims: TokenClaims }> {
    const { breakers, client, keys } = this.opts;
    const epoch = await breakers.run("token_writes", "epoch_ensure", () => ensureEpoch(client, keys, nowMs));
    // Issued after an invalidation means not before its minIat, also within its second (tokens
    // carry whole seconds): such a token starts at most a second ahead.
    const iat = Math.max(Math.floor(nowMs / 1000), Math.ceil(epoch.minIat / 1000));
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
      this.records.save(claims.id, claims.exp * 1000, this.recordOf(claims)),
    );
    this.opts.metrics.tokensIssued.inc();
    return { token: encodeToken(claims, this.opts.secrets[0] as TokenSecret), claims };
  }

  /**
   * Revokes a token by value (`expire=<token>`); needs a valid MAC, not a live token. Answers
   * only once a replica has the marker (ReplicaAckTimeoutError, a 503, when none does in time).
   */
  async revoke(token: string): Promise<LocalCheck> {
    const checked = verifyMac(token, this.secrets);
    if (!checked.ok) return checked;
    const { id, exp } = checked.claims;
    // Not through a breaker: waiting for a replica outlasts a breaker's timeout, and a replica
    // slow to acknowledge is no reason to fail the primary's token checks fast.
    try {
      await this.opts.replicated.run("token_revoke", (client) =>
        this.records.revoke(id, exp * 1000, "revoked by issuer", client),
      );
    } catch (err) {
      throw classifyStoreError("token_revoke", err);
    }
    return checked;
  }

  /**
   * The local half of a check: MAC, expiry, IP binding and format, no Redis. A rejection is
   * counted here (the request ends with it); a pass is counted by checkStored.
   */
  verifyLocally(token: string, clientIp: string, format?: string, nowMs = Date.now()): LocalVerdict {
    const local = verifyTokenLocally(token, this.secrets, clientIp, Math.floor(nowMs / 1000));
    const verdict: LocalVerdict = !local.ok
      ? local
      : format !== undefined && local.claims.fmt && !local.claims.fmt.includes(format)
        ? { ok: false, result: "format_not_allowed" }
        : { ok: true, claims: local.claims, secret: this.secrets.get(local.kid) as Buffer };
    if (!verdict.ok) this.opts.metrics.tokenChecks.inc({ result: verdict.result });
    return verdict;
  }

  /** Both halves: a token as presented, with a nonce for uploads. Counted once. */
  async check(
    token: string,
    clientIp: string,
    nonce?: NonceUse,
    format?: string,
    nowMs = Date.now(),
  ): Promise<TokenCheck> {
    const local = this.verifyLocally(token, clientIp, format, nowMs);
    return local.ok ? this.checkStored(local, nonce, nowMs) : local;
  }

  /**
   * The store half, for a token that passed verifyLocally: revocation, presence and, with
   * `nonce`, the nonce chain (uploads). Our store failing is never the client's fault: an
   * outage follows `store.downPolicy`; unexpected data throws StoreCorruptError (a 503).
   */
  async checkStored(token: VerifiedToken, nonce?: NonceUse, nowMs = Date.now()): Promise<TokenCheck> {
    const result = await this.decideStored(token, nonce, nowMs);
    this.opts.metrics.tokenChecks.inc({ result: result.result });
    return result;
  }

  private async decideStored(token: VerifiedToken, nonce: NonceUse | undefined, nowMs: number) {
    const { claims, secret } = token;
    const step = nonce ? decodeNonce(claims.id, nonce.value, secret) : undefined;
    if (nonce && !step) return { ok: false, result: "nonce_mismatch" } as const;
    const presented = step && nonce ? { ...step, sha256: nonce.sha256, fresh: freshRandomness() } : undefined;
    try {
      return await this.checkInStore(token, presented, nowMs);
    } catch (err) {
      if (err instanceof StoreCorruptError) {
        this.opts.metrics.tokenChecks.inc({ result: "corrupt" });
        throw err;
      }
      if (!(err instanceof StoreUnavailableError)) throw err;
      return this.whileStoreDown(token, presented, err);
    }
  }

  private async checkInStore(
    token: VerifiedToken,
    nonce: PresentedNonce | undefined,
    nowMs: number,
  ): Promise<StoredCheck> {
    const { claims } = token;
    const stored = await this.opts.breakers.run("token_reads", "token_check", () =>
      this.records.check(storedToken(claims), nonce ? { nonce } : {}),
    );
    if (stored.state === "ok") return this.accepted(token, "valid", stored.next);
    if (stored.state !== "missing") return { ok: false, result: stored.state };
    return this.orphan(token, nonce, nowMs);
  }

  /** A MAC-valid token missing from Redis: heal it, or not, as DESIGN.md §4 decides. */
  private async orphan(
    token: VerifiedToken,
    nonce: PresentedNonce | undefined,
    nowMs: number,
  ): Promise<StoredCheck> {
    const { breakers, client, keys, log } = this.opts;
    const { claims } = token;
    const epoch = await breakers.run("token_reads", "epoch_ensure", () => ensureEpoch(client, keys, nowMs));
    const decision = decideOrphan(claims, epoch, nowMs, this.opts);
    if (decision.action === "invalidated") return { ok: false, result: "invalidated" };
    if (decision.action === "recovering")
      return { ok: false, result: "recovering", retryAfterMs: decision.retryAfterMs };
    const healWith = JSON.stringify({ ...JSON.parse(this.recordOf(claims)), healed: true });
    const healed = await breakers.run("token_writes", "token_heal", () =>
      this.records.check(storedToken(claims), { healWith, ...(nonce ? { nonce } : {}) }),
    );
    if (healed.state === "revoked" || healed.state === "invalidated" || healed.state === "nonce_mismatch")
      return { ok: false, result: healed.state };
    if (healed.state !== "ok")
      throw new StoreCorruptError(keys.token(claims.id), "still missing after a heal");
    // A heal within the token's own epoch is our store losing a write: worth a look.
    log[decision.why === "lost_in_epoch" ? "warn" : "info"]({
      event: "token_healed",
      why: decision.why,
      tokenHash: tokenHash(claims.id),
      epoch: epoch.id,
    });
    return this.accepted(token, "healed", healed.next);
  }

  /**
   * Redis is unreachable: `hmac` keeps builds signing on the local checks alone, and the nonce
   * chain is not checked (DESIGN.md §4). The next nonce continues the presented one's lineage:
   * the store takes it as its own chain having lost steps. Echoing the presented nonce instead
   * would strand the client behind a paused Redis that runs the queued advance once resumed.
   */
  private whileStoreDown(
    token: VerifiedToken,
    nonce: PresentedNonce | undefined,
    err: StoreUnavailableError,
  ): TokenCheck {
    if (this.opts.downPolicy === "reject") {
      this.opts.log.debug({ event: "token_store_unavailable", downPolicy: "reject", err: err.message });
      return { ok: false, result: "unavailable" };
    }
    // A security control is off for this check: say why where on-call looks (DegradedTokenChecks
    // sends them here), once per reason per interval, not once per upload of an outage.
    const reason = outageReason(err);
    this.degradedWarning.warn(reason, {
      event: "token_check_degraded",
      reason,
      op: err.op,
      err: err.message,
    });
    const next = nonce && {
      counter: nonce.counter + 1,
      lineage: nonce.lineage || nonce.fresh.lineage,
      random: nonce.fresh.random,
    };
    return this.accepted(token, "degraded", next);
  }

  private accepted(
    { claims, secret }: VerifiedToken,
    result: "valid" | "healed" | "degraded",
    next: ChainStep | undefined,
  ) {
    const nextNonce = next ? { nextNonce: encodeNonce(claims.id, next, secret) } : {};
    return { ok: true, result, claims, ...nextNonce } as const;
  }

  private recordOf(claims: TokenClaims): string {
    return JSON.stringify({ claims, node: this.opts.nodeId });
  }
}

const storedToken = (c: TokenClaims) => ({ id: c.id, expiresAtMs: c.exp * 1000, issuedAtMs: c.iat * 1000 });

function freshRandomness() {
  return { lineage: nonceRandom(), random: nonceRandom() };
}

/** Logs name tokens by a hash of their id, never by the token itself. */
export function tokenHash(id: string): string {
  return createHash("sha256").update(id).digest("hex").slice(0, 16);
}
