import { TransportError } from "./http.js";
import { serverText } from "./server-text.js";

/**
 * What the client does with an answer or a failure: the retry classifier of signtool.
 * "retry" moves on (to the back of the node list when `demote`), "new-token" means only a
 * fresh token can help, "fail" means nothing will for this file, "mistake" means the command
 * line or the setup is wrong (a host that does not resolve, TLS against plain HTTP, a proxy in
 * the way): retrying would only spend the build's time, so the run stops.
 */
export type Verdict =
  | { kind: "ok" }
  | { kind: "retry"; reason: string; demote: boolean; retryAfterMs?: number }
  | { kind: "new-token"; reason: string }
  | { kind: "fail"; reason: string }
  | { kind: "mistake"; reason: string };

export interface Answer {
  status: number;
  /** The API's error code, when the body was one of our JSON errors. */
  code?: string;
  message?: string;
  retryAfter?: string;
  /** A redirect's target. */
  location?: string;
}

function retryAfterMs(header: string | undefined): number | undefined {
  if (header === undefined) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds) && seconds >= 0) return Math.min(seconds * 1000, 300_000);
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, Math.min(date - Date.now(), 300_000));
}

/** Classifies an answer that is not the success the caller expected. */
export function classifyAnswer(a: Answer): Verdict {
  const what = `${a.status}${a.code ? ` ${a.code}` : ""}${a.message ? `: ${a.message}` : ""}`;
  if (a.status >= 300 && a.status < 400) {
    const to = a.location ? ` to ${serverText(a.location)}` : "";
    return { kind: "mistake", reason: `redirects (${a.status}${to}): give the node's own address` };
  }
  // Callers handle the success they expect; any other 2xx is a node not speaking our API.
  if (a.status < 400) return { kind: "retry", reason: `unexpected answer ${what}`, demote: true };
  if (a.status === 401) {
    // Wrong issuer credentials are not cured by a new token.
    return a.code === "BAD_CREDENTIALS"
      ? { kind: "fail", reason: what }
      : { kind: "new-token", reason: what };
  }
  // Every node signs with the same key: another one will not do better.
  if (a.code === "KEY_EXPIRED") return { kind: "fail", reason: what };
  const after = retryAfterMs(a.retryAfter);
  const retry = (demote: boolean): Verdict => ({
    kind: "retry",
    reason: what,
    demote,
    ...(after !== undefined ? { retryAfterMs: after } : {}),
  });
  // Our infrastructure's trouble, or a node that is not itself: another node may do better.
  if (a.status === 429 || a.status === 408 || a.status >= 500) return retry(true);
  // A 4xx that is not our API's (no JSON error code): a proxy or another server in the way.
  if (a.code === undefined)
    return {
      kind: "mistake",
      reason: `answered ${a.status} without the signing API's error body: is a proxy or another server at this address?`,
    };
  // 400, 403, 404 from the API, 413, 431: the request itself is wrong; no node will accept it.
  return { kind: "fail", reason: what };
}

const UNRESOLVED = new Set(["ENOTFOUND", "EAI_NONAME", "EAI_FAIL", "EAI_NODATA"]);
const UNTRUSTED_CERT = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_SIGNATURE_FAILURE",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/**
 * Connection refused or reset, timeouts, a response cut short, garbage: try another node. A
 * failure that names a mistake in the setup (a host that does not resolve, TLS spoken to a
 * plain-HTTP port or the other way round, a certificate the given CA does not vouch for) is
 * one, not an outage.
 */
export function classifyNetworkError(err: unknown): Verdict {
  const e = err as NodeJS.ErrnoException;
  const code = err instanceof TransportError ? err.reason : (e?.code ?? "");
  const message = String(e?.message ?? err);
  if (UNRESOLVED.has(code)) return { kind: "mistake", reason: "its host name does not resolve" };
  if (code === "ERR_SSL_WRONG_VERSION_NUMBER" || /wrong version number/.test(message))
    return { kind: "mistake", reason: "speaks plain HTTP, but -c asks for TLS (https)" };
  if (code === "HPE_INVALID_CONSTANT" || /Expected HTTP\//.test(message))
    return { kind: "mistake", reason: "does not answer in HTTP: is it a TLS port (give -c CA)?" };
  if (UNTRUSTED_CERT.has(code))
    return { kind: "mistake", reason: `its TLS certificate is not one -c vouches for (${code})` };
  return { kind: "retry", reason: code ? `${code}: ${message}` : message, demote: true };
}

/** Exponential backoff with full jitter: a random delay up to base·2^attempt, capped. */
export function backoffMs(
  attempt: number,
  random: () => number = Math.random,
  baseMs = 250,
  capMs = 10_000,
): number {
  return Math.floor(random() * Math.min(capMs, baseMs * 2 ** Math.min(attempt, 20)));
}
