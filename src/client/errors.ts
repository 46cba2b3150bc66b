import { type ClientErrorCode, hasCode, SigningClusterError } from "../errors.js";

export type { ClientErrorCode } from "../errors.js";

/** Why signtool gave up on a file or a run (the codes: src/errors.ts). */
export class ClientError extends SigningClusterError<ClientErrorCode> {}

/** Mistakes on the command line or in the setup: exit 2; everything else that fails: exit 1. */
export function exitCodeOf(err: unknown): 1 | 2 {
  return hasCode(err, "USAGE", "CONFIG") ? 2 : 1;
}
