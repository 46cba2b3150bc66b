/** Why signtool gave up on a file or a token: one code per thing a build engineer can act on. */
export type ClientErrorCode =
  | "TOKEN_FILE" // the token file is missing or unreadable
  | "TOKEN_REJECTED" // the nodes refused the token; a new one is needed
  | "REFUSED" // a node refused the request for good (bad input, IP, format, nonce, size)
  | "GAVE_UP" // the retry budget ran out: no node could serve the request
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
