import { createHash, timingSafeEqual } from "node:crypto";
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import type { Logger } from "pino";

/** How this node reaches its peers: the shared credential, and its TLS identity and trust. */
export interface PeerOptions {
  /** `node.internalSecret`: presented to peers, and required of them. */
  secret: Buffer;
  /** With `tls`: this node's certificate and key (presented to peers that require client certificates) and `tls.peerCa`. */
  tls?: { cert: Buffer; key: Buffer; ca?: Buffer };
  log: Logger;
}

/** Why an owner sent no output: it said it has none (404), or it could not be asked. */
export type OwnerMiss = "missing" | "unreachable";

/** A peer that sends nothing for this long (no headers, or a stalled body) is given up on. */
const PEER_IDLE_MS = 30_000;

/** The path a node serves its spooled outputs on, to peers only. */
export function internalResultPath(format: string, inputSha256: string): string {
  return `/internal/results/${format}/${inputSha256}`;
}

/** The credential as it travels: any bytes of the secret file, in a header-safe spelling. */
function bearer(secret: Uint8Array): string {
  // Buffer.from: a config passed through structuredClone holds a plain Uint8Array.
  return `Bearer ${Buffer.from(secret).toString("base64url")}`;
}

/**
 * Node-to-node requests for whole-file results. The credential is compared in constant time
 * (both sides hashed first, so lengths do not leak either) and never logged.
 */
export class Peers {
  private readonly expected: Buffer;
  private readonly http = new HttpAgent({ keepAlive: true });
  private readonly https: HttpsAgent;

  constructor(private readonly opts: PeerOptions) {
    this.expected = createHash("sha256").update(bearer(opts.secret)).digest();
    const { cert, key, ca } = opts.tls ?? {};
    this.https = new HttpsAgent({
      keepAlive: true,
      ...(cert && key ? { cert, key } : {}),
      ...(ca ? { ca } : {}),
    });
  }

  /** Whether an Authorization header carries this cluster's internal credential. */
  authorized(header: string | undefined): boolean {
    if (header === undefined) return false;
    return timingSafeEqual(createHash("sha256").update(header).digest(), this.expected);
  }

  /**
   * Asks `owner` for an output: its response when the owner answers 200 (the caller reads or
   * destroys it), "missing" when it answers that it does not have it (404), "unreachable" when
   * it does not answer or answers anything else (a refused credential, an error).
   */
  fetchResult(owner: string, format: string, inputSha256: string, signal: AbortSignal) {
    const url = new URL(internalResultPath(format, inputSha256), owner);
    const https = url.protocol === "https:";
    return new Promise<IncomingMessage | OwnerMiss>((resolve) => {
      const req = (https ? httpsRequest : httpRequest)(url, {
        agent: https ? this.https : this.http,
        headers: { authorization: bearer(this.opts.secret) },
        signal,
      });
      req.setTimeout(PEER_IDLE_MS, () => req.destroy(new Error(`no answer within ${PEER_IDLE_MS} ms`)));
      req.on("error", (err) => {
        if (!signal.aborted)
          this.opts.log.warn({ event: "owner_unreachable", owner, format, err: err.message });
        resolve("unreachable");
      });
      req.on("response", (res) => {
        if (res.statusCode === 200) return resolve(res);
        this.opts.log.info({ event: "owner_has_no_result", owner, format, status: res.statusCode });
        res.resume();
        resolve(res.statusCode === 404 ? "missing" : "unreachable");
      });
      req.end();
    });
  }

  close(): void {
    this.http.destroy();
    this.https.destroy();
  }
}
