/** The signtool library: what the CLI uses, for build scripts that sign from Node directly. */
export { parseDuration } from "./duration.js";
export { ClientError, type ClientErrorCode } from "./errors.js";
export { nodeUrl } from "./nodes.js";
export { backoffMs, classifyAnswer, classifyNetworkError, type Verdict } from "./retry.js";
export {
  type ClientEvent,
  type ResultSource,
  SigningClient,
  type SigningClientOptions,
  type SignResult,
  SUFFIXES,
} from "./signing-client.js";
export { requestToken, type TokenRequest } from "./token.js";
