/**
 * One error model for the node, the monitor, signtool and signing-admin (DESIGN.md §2): every
 * condition a caller must handle is a SigningClusterError with a code from one union, so a
 * caller decides by `code`, never by parsing a message. Subclasses narrow the code and carry
 * what their callers need (an HTTP status, a Redis key, the problems of a config).
 */

/** The codes the HTTP API answers with (DESIGN.md §3; docs/api.md lists them with statuses). */
export type ApiErrorCode =
  | "BAD_REQUEST"
  | "DIGEST_MISMATCH"
  | "UNKNOWN_FORMAT"
  | "BAD_FILENAME"
  | "UNSUPPORTED_INPUT"
  | "BAD_CREDENTIALS"
  | "TOKEN_MALFORMED"
  | "TOKEN_BAD_SIGNATURE"
  | "TOKEN_EXPIRED"
  | "TOKEN_REVOKED"
  | "TOKEN_INVALIDATED"
  | "IP_MISMATCH"
  | "FORMAT_NOT_ALLOWED"
  | "NONCE_MISMATCH"
  | "ISSUER_NOT_ALLOWED"
  | "CLIENT_NOT_ALLOWED"
  | "NOT_FOUND"
  | "METHOD_NOT_ALLOWED"
  | "REQUEST_TIMEOUT"
  | "FILE_TOO_LARGE"
  | "HEADERS_TOO_LARGE"
  | "RATE_LIMITED"
  | "INTERNAL"
  | "SIGNING_FAILED"
  | "KEY_EXPIRED"
  | "STORE_UNAVAILABLE"
  | "STORE_RECOVERING"
  | "STORE_CORRUPT"
  | "KEY_BACKEND_UNAVAILABLE"
  | "OVERLOADED"
  | "SHUTTING_DOWN";

/** Why signtool gave up on a file or a run: one code per thing a build engineer can act on. */
export type ClientErrorCode =
  | "TOKEN_FILE" // the token file is missing or unreadable
  | "TOKEN_REJECTED" // the nodes refused the token; a new one is needed
  | "REFUSED" // a node refused the request for good (bad input, IP, format, nonce, size)
  | "GAVE_UP" // the run's deadline passed: no node could serve the request in time
  | "UNVERIFIED" // no node sent a signature that verifies with the trusted key
  | "USAGE" // the command line is wrong: exit 2
  | "CONFIG" // the setup is wrong (a node's address, TLS, a proxy, keys): the run stops
  | "LOCAL_IO" // reading the input or writing the output failed
  | "TRANSPORT"; // one exchange with a node failed (refused, reset, timed out, cut short)

/** What stops a process at start-up, or a command of signing-admin. */
export type StartupErrorCode =
  | "CONFIG_INVALID" // a configuration with its problems listed
  | "KEY_LOAD_FAILED" // a signing key that cannot be used
  | "PASSWORD_HASH_INVALID" // a stored issuer password hash scrypt cannot use
  | "SNAPSHOT_CORRUPT" // the monitor's snapshot file cannot be read back
  | "PORT_IN_USE" // another process listens where this one would
  | "ADMIN_FAILED"; // a signing-admin command that could not be done (exit 1)

export type ErrorCode = ApiErrorCode | ClientErrorCode | StartupErrorCode;

export class SigningClusterError<C extends ErrorCode = ErrorCode> extends Error {
  constructor(
    readonly code: C,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Whether `err` is ours with one of `codes`. */
export function hasCode<C extends ErrorCode>(err: unknown, ...codes: C[]): err is SigningClusterError<C> {
  return err instanceof SigningClusterError && (codes as ErrorCode[]).includes(err.code);
}
