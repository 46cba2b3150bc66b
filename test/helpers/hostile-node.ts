import { createServer, type IncomingMessage, request, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { finished, Transform } from "node:stream";

/**
 * What a scripted node does with one request: answer itself, pass it to a real node ("proxy"),
 * or pass it and flip one byte in the middle of a 200 answer's body, headers as they were
 * ("tamper": a node sending other bytes than its X-SHA256-Digest names).
 */
export type Script = (req: IncomingMessage, body: Buffer) => Answer | "proxy" | "tamper" | "hang";

export interface Answer {
  status: number;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

/** A proxied request's answer as it was passed on: how much of its body, and whether all of it. */
export interface Relayed {
  status: number;
  /** The upstream's Content-Length, when it sent one. */
  contentLength?: number;
  bytes: number;
  complete: boolean;
}

export interface ScriptedNode {
  url: string;
  /** host:port, as signtool's -H takes it. */
  host: string;
  hits: { path: string; method: string; relayed?: Relayed }[];
  close(): Promise<void>;
}

/** What a scripted node does besides its script. */
export interface ScriptedNodeOptions {
  /**
   * Called when a proxied request's answer has come from the real node, before any of its body
   * is passed on: the body waits (as behind a slow link, the real node's writes back up) until
   * this resolves. A fault injected here hits a stream in the middle.
   */
  onUpstreamAnswer?: (req: IncomingMessage, upstream: IncomingMessage) => void | Promise<void>;
}

/**
 * A node that follows a script, for signtool's hostile and broken cases: it may answer as it
 * likes, never answer ("hang"), or pass a request to a real node (`upstream`) so that only the
 * parts under test misbehave. A proxied answer the real node cuts short is cut short here too.
 */
export async function startScriptedNode(
  script: Script,
  upstream?: string,
  opts: ScriptedNodeOptions = {},
): Promise<ScriptedNode> {
  const hits: ScriptedNode["hits"] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const hit: ScriptedNode["hits"][number] = { path: req.url ?? "", method: req.method ?? "" };
      hits.push(hit);
      const body = Buffer.concat(chunks);
      const what = script(req, body);
      if (what === "hang") return;
      if (what === "proxy" || what === "tamper")
        return proxy(req, body, res, upstream as string, hit, opts, what === "tamper");
      res.writeHead(what.status, what.headers ?? {}).end(what.body ?? "");
    });
  });
  server.on("connection", (s) => s.on("error", () => {}));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: `http://${host}`,
    host,
    hits,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** Passes a body through as it streams, with the byte at `at` flipped. */
function flipByte(at: number): Transform {
  let offset = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      if (at >= offset && at < offset + chunk.length) {
        chunk = Buffer.from(chunk);
        chunk[at - offset] = (chunk[at - offset] as number) ^ 0xff;
      }
      offset += chunk.length;
      done(null, chunk);
    },
  });
}

function proxy(
  req: IncomingMessage,
  body: Buffer,
  res: ServerResponse,
  upstream: string,
  hit: ScriptedNode["hits"][number],
  opts: ScriptedNodeOptions,
  tamper = false,
): void {
  const out = request(
    `${upstream}${req.url}`,
    { method: req.method, headers: { ...req.headers, host: new URL(upstream).host } },
    (up) => {
      const length = up.headers["content-length"];
      const relayed: Relayed = { status: up.statusCode ?? 0, bytes: 0, complete: false };
      if (length !== undefined) relayed.contentLength = Number(length);
      hit.relayed = relayed;
      const passOn = () => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.on("data", (chunk: Buffer) => {
          relayed.bytes += chunk.length;
        });
        // An answer cut short reaches the client cut short, not ended as if it were whole.
        finished(up, (err) => {
          relayed.complete = up.complete;
          if (err || !up.complete) res.destroy();
        });
        const flipAt = Number(up.headers["content-length"] ?? 0) >> 1;
        if (tamper && up.statusCode === 200 && flipAt > 0) up.pipe(flipByte(flipAt)).pipe(res);
        else up.pipe(res);
      };
      Promise.resolve(opts.onUpstreamAnswer?.(req, up)).then(passOn, () => res.destroy());
    },
  );
  out.on("error", () => res.destroy());
  out.end(body);
}

/** The API's JSON error body. */
export const apiError = (
  status: number,
  code: string,
  message: string,
  headers: Record<string, string> = {},
): Answer => ({
  status,
  headers: { "Content-Type": "application/json", ...headers },
  body: JSON.stringify({ error: { code, message, retryable: status >= 500 } }),
});
