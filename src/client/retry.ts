/**
 * What the client does with an answer or a failure: the retry classifier of signtool.
 * "retry" moves on (to the back of the node list when `demote`), "new-token" means only a
 * fresh token can help, "fail" means nothing will.
 */
export type Verdict =
  | { kind: "ok" }
  | { kind: "retry"; reason: string; demote: boolean; retryAfterMs?: number }
  | { kind: "new-token"; reason: string }
  | { kind: "fail"; reason: string };

export interface Answer {
  status: number;
  /** The API's error code, when the body was one of our JSON errors. */
  code?: string;
  message?: string;
  retryAfter?: string;
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
  // Callers handle the success they expect; any other 2xx/3xx is a node not speaking our API.
  if (a.status < 400 && a.status !== 401)
    return { kind: "retry", reason: `unexpected answer ${what}`, demote: true };
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
  // A proxy or a node answering something that is not our API (no JSON error code).
  if (a.code === undefined && a.status !== 404) return retry(true);
  // 400, 403, 404 from the API, 413, 431: the request itself is wrong; no node will accept it.
  return { kind: "fail", reason: what };
}

/** Connection refused or reset, timeouts, a response cut short, garbage: try another node. */
export function classifyNetworkError(err: unknown): Verdict {
  const e = err as NodeJS.ErrnoException;
  return {
    kind: "retry",
    reason: e?.code ? `${e.code}: ${e.message}` : String(e?.message ?? err),
    demote: true,
  };
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
