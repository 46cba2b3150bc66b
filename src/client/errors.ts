/** Why signtool gave up on a file or a token: one code per thing a build engineer can act on. */
export type ClientErrorCode =
  | "TOKEN_FILE" // the token file is missing or unreadable
  | "TOKEN_REJECTED" // the nodes refused the token; a new one is needed
  | "REFUSED" // a node refused the request for good (bad input, IP, format, nonce, size)
  | "GAVE_UP" // the run's deadline passed: no node could serve the request in time
  | "UNVERIFIED" // no node sent a signature that verifies with the trusted key
  | "USAGE" // the command line is wrong: exit 2
  | "CONFIG" // the setup is wrong (a node's address, TLS, a proxy, keys): the run stops
  | "LOCAL_IO"; // reading the input or writing the output failed

export class ClientError extends Error {
  constructor(
    readonly code: ClientErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "ClientError";
  }
}

/** Mistakes on the command line or in the setup: exit 2; everything else that fails: exit 1. */
export function exitCodeOf(err: unknown): 1 | 2 {
  return err instanceof ClientError && (err.code === "USAGE" || err.code === "CONFIG") ? 2 : 1;
}
