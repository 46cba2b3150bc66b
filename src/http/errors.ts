import type { Response } from "express";
import { type ApiErrorCode, SigningClusterError } from "../errors.js";
import type { TokenCheckResult } from "../tokens/service.js";

/** Every error code the API answers with (DESIGN.md §3), and the status that goes with it. */
const STATUS: Readonly<Record<ApiErrorCode, number>> = {
  BAD_REQUEST: 400,
  DIGEST_MISMATCH: 400,
  UNKNOWN_FORMAT: 400,
  BAD_FILENAME: 400,
  /** The format cannot sign this content: binary text for gpg-clearsign, no PE/MSI/CAB/script for authenticode. */
  UNSUPPORTED_INPUT: 400,
  BAD_CREDENTIALS: 401,
  TOKEN_MALFORMED: 401,
  TOKEN_BAD_SIGNATURE: 401,
  TOKEN_EXPIRED: 401,
  TOKEN_REVOKED: 401,
  TOKEN_INVALIDATED: 401,
  IP_MISMATCH: 403,
  FORMAT_NOT_ALLOWED: 403,
  NONCE_MISMATCH: 403,
  ISSUER_NOT_ALLOWED: 403,
  CLIENT_NOT_ALLOWED: 403,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  /** An upload slower than signing.uploadMinBytesPerSecond. */
  REQUEST_TIMEOUT: 408,
  FILE_TOO_LARGE: 413,
  HEADERS_TOO_LARGE: 431,
  RATE_LIMITED: 429,
  INTERNAL: 500,
  SIGNING_FAILED: 500,
  /** Every node has the same key: not retryable, an operator must install a renewed one. */
  KEY_EXPIRED: 500,
  STORE_UNAVAILABLE: 503,
  STORE_RECOVERING: 503,
  /** Redis holds data we did not write (wrong type, unparsable): refused, never degraded. */
  STORE_CORRUPT: 503,
  /** This node's key backend (a PKCS#11 token) failed or its breaker is open: another node may sign. */
  KEY_BACKEND_UNAVAILABLE: 503,
  OVERLOADED: 503,
  SHUTTING_DOWN: 503,
};

export type { ApiErrorCode } from "../errors.js";

/** Every documented error code: what a client may ever see in `error.code`. */
export const ERROR_CODES: ReadonlySet<string> = new Set(Object.keys(STATUS));

/** The HTTP status of each code (docs/api.md's error table is tested against it). */
export const ERROR_STATUS: Readonly<Record<ApiErrorCode, number>> = STATUS;

/** Retrying (on this or another node) can succeed for these. */
const RETRYABLE: ReadonlySet<ApiErrorCode> = new Set([
  "REQUEST_TIMEOUT",
  "STORE_CORRUPT",
  "RATE_LIMITED",
  "STORE_UNAVAILABLE",
  "STORE_RECOVERING",
  "KEY_BACKEND_UNAVAILABLE",
  "OVERLOADED",
  "SHUTTING_DOWN",
  "SIGNING_FAILED",
]);

export class ApiError extends SigningClusterError<ApiErrorCode> {
  constructor(
    code: ApiErrorCode,
    message: string,
    readonly retryAfterSeconds?: number,
  ) {
    super(code, message);
  }

  get status(): number {
    return STATUS[this.code];
  }
}

export function errorBody(code: ApiErrorCode, message: string) {
  return { error: { code, message, retryable: RETRYABLE.has(code) } };
}

export function sendError(res: Response, err: ApiError): void {
  if (res.headersSent) return;
  if (err.retryAfterSeconds !== undefined)
    res.set("Retry-After", String(Math.max(1, Math.ceil(err.retryAfterSeconds))));
  res.status(err.status).json(errorBody(err.code, err.message));
}

/** Maps a failed token check to the API error a client can act on. */
export function tokenError(
  result: Exclude<TokenCheckResult, "valid" | "healed" | "degraded" | "corrupt">,
  retryAfterMs?: number,
  clientIp?: string,
) {
  switch (result) {
    case "malformed":
      return new ApiError("TOKEN_MALFORMED", "token is not a signing token");
    case "bad_signature":
      return new ApiError("TOKEN_BAD_SIGNATURE", "token signature does not verify");
    case "expired":
      return new ApiError("TOKEN_EXPIRED", "token has expired: fetch a new token");
    case "ip_mismatch":
      // The caller's own address is no secret to it, and it is what it needs to fix this.
      return new ApiError(
        "IP_MISMATCH",
        clientIp
          ? `token was issued for another address; this node sees you as ${clientIp}: fetch a token for that address (signtool token --slave-ip ${clientIp}), or check the proxies in between (node.trustProxy)`
          : "token was issued for another client IP",
      );
    case "revoked":
      return new ApiError("TOKEN_REVOKED", "token was revoked");
    case "invalidated":
      return new ApiError(
        "TOKEN_INVALIDATED",
        "token was invalidated after a store reset: fetch a new token",
      );
    case "format_not_allowed":
      return new ApiError("FORMAT_NOT_ALLOWED", "this token may not sign this format");
    case "nonce_mismatch":
      return new ApiError("NONCE_MISMATCH", "nonce is not the current one of this token's chain");
    case "recovering":
      // The monitor usually settles a restart within a second or two: ask for a retry soon,
      // not at the end of the grace period, which is only this node's own deadline.
      return new ApiError(
        "STORE_RECOVERING",
        `token store is recovering from a restart: retry (grace period ends in ${Math.ceil((retryAfterMs ?? 0) / 1000)} s)`,
        Math.min(1, (retryAfterMs ?? 1000) / 1000),
      );
    case "unavailable":
      return new ApiError("STORE_UNAVAILABLE", "token store is unavailable: retry on another node", 1);
  }
}
