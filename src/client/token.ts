import { setTimeout as sleep } from "node:timers/promises";
import { Deadline } from "./deadline.js";
import { ClientError } from "./errors.js";
import { apiError, send } from "./http.js";
import { NodeRotation } from "./nodes.js";
import { backoffMs, classifyAnswer, classifyNetworkError, type Verdict } from "./retry.js";

/** `signtool token`: which nodes to ask, as which issuer, for which build machine and how long. */
export interface TokenRequest {
  /** Node base URLs, tried in rotation. */
  nodes: readonly string[];
  /** The issuer's name and password (`token.credentials`). */
  user: string;
  password: string;
  /** The build machine the token is bound to: only uploads from this address may use it. */
  slaveIp: string;
  durationSeconds: number;
  /** Formats the token may sign in; default: every format. */
  formats?: readonly string[];
  /** The run's deadline; without one, `maxTimeMs` (default 2 minutes) from now. */
  deadline?: Deadline;
  maxTimeMs?: number;
  /** One HTTP exchange, connect to last byte. */
  requestTimeoutMs?: number;
  /** CA or pinned server certificate, for nodes that speak https. */
  ca?: Buffer;
  /** Client certificate and key, for nodes that require mutual TLS. */
  clientCert?: { cert: Buffer; key: Buffer };
  /** Where the node rotation starts and the backoff jitter come from (default Math.random). */
  random?: () => number;
}

/** `POST /token` on the first node that answers, rotating and backing off like uploads do. */
export async function requestToken(req: TokenRequest): Promise<string> {
  const nodes = new NodeRotation(req.nodes, req.random);
  const deadline = req.deadline ?? new Deadline(req.maxTimeMs ?? 120_000);
  const form = new URLSearchParams({ slave_ip: req.slaveIp, duration: String(req.durationSeconds) });
  if (req.formats?.length) form.set("formats", req.formats.join(","));
  const body = Buffer.from(form.toString());
  const auth = `Basic ${Buffer.from(`${req.user}:${req.password}`).toString("base64")}`;
  let last = "no attempt";
  for (let attempt = 0; ; attempt++) {
    const node = nodes.current;
    let verdict: Verdict;
    try {
      const res = await send({
        method: "POST",
        url: `${node}/token`,
        headers: {
          Authorization: auth,
          "Content-Type": "application/x-www-form-urlencoded",
          "Content-Length": body.length,
        },
        body,
        timeoutMs: deadline.cap(req.requestTimeoutMs ?? 30_000),
        maxBodyBytes: 8192,
        ...(req.ca ? { ca: req.ca } : {}),
        ...(req.clientCert ? { clientCert: req.clientCert } : {}),
      });
      const token = res.body.toString("utf8").trim();
      if (res.status === 200 && /^v1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(token))
        return token;
      verdict =
        res.status === 200
          ? { kind: "retry", reason: `${node} answered 200 without a token`, demote: true }
          : classifyAnswer({
              status: res.status,
              ...apiError(res.body),
              retryAfter: res.headers["retry-after"] as string,
              location: res.headers.location as string,
            });
    } catch (err) {
      verdict = classifyNetworkError(err);
    }
    if (verdict.kind === "mistake") throw new ClientError("CONFIG", `node ${node} ${verdict.reason}`);
    if (verdict.kind !== "retry")
      throw new ClientError(
        "REFUSED",
        `${node} refused the token request: ${verdict.kind === "ok" ? "" : verdict.reason}`,
      );
    last = `${node}: ${verdict.reason}`;
    if (verdict.demote) nodes.demote(node);
    // Another node may serve now: a Retry-After is for this node, not a reason to sleep.
    const alone = nodes.all.length === 1;
    const delay = Math.max(alone ? (verdict.retryAfterMs ?? 0) : 0, backoffMs(attempt, req.random));
    if (delay >= deadline.remainingMs)
      throw new ClientError("GAVE_UP", `no node issued a token; last error: ${last}`);
    await sleep(delay);
  }
}
