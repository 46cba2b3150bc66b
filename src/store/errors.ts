/**
 * How a store operation can fail, as the callers must tell apart (DESIGN.md §5): an outage may
 * lead to `store.downPolicy`; unexpected data never does.
 */

import { SigningClusterError } from "../errors.js";

/** Redis could not be used for this operation: unreachable, too slow, or the breaker is open. */
export class StoreUnavailableError extends SigningClusterError<"STORE_UNAVAILABLE"> {
  constructor(
    readonly op: string,
    cause: unknown,
  ) {
    super("STORE_UNAVAILABLE", `store unavailable for ${op}: ${(cause as Error)?.message ?? String(cause)}`, {
      cause,
    });
  }
}

/** Why Redis could not be used, in a word a log line can be filtered and grouped on. */
export type OutageReason = "breaker_open" | "timeout" | "redis_refused" | "connection";

/**
 * The kind of outage behind a StoreUnavailableError: the breaker refused the call (the error
 * that opened it is on the breaker_open line), Redis or the breaker gave no answer in time,
 * Redis answered with a refusal (OOM, READONLY, LOADING, NOAUTH…), or the connection failed.
 */
export function outageReason(err: StoreUnavailableError): OutageReason {
  const cause = err.cause as { name?: unknown; code?: unknown; message?: unknown } | undefined;
  const message = typeof cause?.message === "string" ? cause.message : String(cause ?? "");
  if (cause?.code === "EOPENBREAKER") return "breaker_open";
  if (cause?.name === "ReplyError") return "redis_refused";
  if (cause?.code === "ETIMEDOUT" || /timed out|timeout/i.test(message)) return "timeout";
  return "connection";
}

/**
 * Redis answered with data we did not write: a key of the wrong type, a record that does not
 * parse, a script's unexpected reply. Fails closed: 503 STORE_CORRUPT, never a degraded accept.
 */
export class StoreCorruptError extends SigningClusterError<"STORE_CORRUPT"> {
  constructor(
    /** The key holding the unexpected data (token keys name the token id, never the token). */
    readonly key: string,
    readonly reason: string,
  ) {
    super("STORE_CORRUPT", `unexpected data at ${key}: ${reason}`);
  }
}

/** A hint of the key a Redis reply error was about: ioredis keeps the command on the error. */
function keyOfCommand(err: unknown): string {
  const command = (err as { command?: { name?: string; args?: unknown[] } }).command;
  const args = command?.args ?? [];
  // EVALSHA sha numkeys key…: the script's keys.
  const isScript = command?.name === "evalsha" || command?.name === "eval";
  const keys = isScript ? args.slice(2, 2 + Number(args[1] ?? 0)) : args.slice(0, 1);
  return keys.map(String).join(" ") || "(unknown key)";
}

// Redis answers these when it cannot serve now (out of memory, a failed save refusing writes,
// a replica, loading, a script hogging it) or will not serve us (authentication, ACL): outages,
// not data. Matched anywhere: inside a script the reply reads "ERR Error running script ... OOM".
const OUTAGE_REPLIES =
  /\b(OOM|READONLY|LOADING|MASTERDOWN|BUSY|TRYAGAIN|NOREPLICAS|MISCONF|NOAUTH|WRONGPASS|NOPERM)\b/;
// Errors of the connection, of ioredis' bounds and of the breaker (opossum's codes).
const OUTAGE_CODES = new Set([
  "EOPENBREAKER",
  "ETIMEDOUT",
  "ESEMLOCKED",
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);
const OUTAGE_MESSAGES =
  /^(Connection is closed\.|Stream isn't writeable|Command timed out|Command aborted|connect ETIMEDOUT|Socket timeout|Reached the max retries|None of the sentinels|All sentinels are unreachable|Redis not ready)/;

/** Whether `err` means Redis could not serve, as opposed to data we did not expect or a bug. */
export function isOutage(err: unknown): boolean {
  if (err instanceof StoreUnavailableError) return true;
  const e = err as { name?: unknown; message?: unknown; code?: unknown } | undefined;
  const message = typeof e?.message === "string" ? e.message : "";
  if (e?.name === "ReplyError") return OUTAGE_REPLIES.test(message);
  if (e?.name === "AbortError" || e?.name === "MaxRetriesPerRequestError") return true;
  if (typeof e?.code === "string" && OUTAGE_CODES.has(e.code)) return true;
  return OUTAGE_MESSAGES.test(message);
}

/**
 * Sorts a failed store call: outages become StoreUnavailableError; Redis refusing a command on
 * our data (WRONGTYPE, a script error) becomes StoreCorruptError; anything else is our bug and
 * is returned as it is.
 */
export function classifyStoreError(op: string, err: unknown): unknown {
  if (err instanceof StoreCorruptError || err instanceof StoreUnavailableError) return err;
  if (isOutage(err)) return new StoreUnavailableError(op, err);
  if ((err as { name?: unknown })?.name === "ReplyError")
    return new StoreCorruptError(keyOfCommand(err), (err as Error).message.slice(0, 200));
  return err;
}

/** A write the primary took but no replica acknowledged in time: not durable, so not acknowledged. */
export class ReplicaAckTimeoutError extends StoreUnavailableError {
  constructor(op: string, timeoutMs: number) {
    super(op, `no replica acknowledged the write within ${timeoutMs} ms`);
  }
}
