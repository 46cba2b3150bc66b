import { createServer, type IncomingMessage, request, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** What a scripted node does with one request: answer itself, or pass it to a real node. */
export type Script = (req: IncomingMessage, body: Buffer) => Answer | "proxy" | "hang";

export interface Answer {
  status: number;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

export interface ScriptedNode {
  url: string;
  /** host:port, as signtool's -H takes it. */
  host: string;
  hits: { path: string; method: string }[];
  close(): Promise<void>;
}

/**
 * A node that follows a script, for signtool's hostile and broken cases: it may answer as it
 * likes, never answer ("hang"), or pass a request to a real node (`upstream`) so that only the
 * parts under test misbehave.
 */
export async function startScriptedNode(script: Script, upstream?: string): Promise<ScriptedNode> {
  const hits: ScriptedNode["hits"] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      hits.push({ path: req.url ?? "", method: req.method ?? "" });
      const body = Buffer.concat(chunks);
      const what = script(req, body);
      if (what === "hang") return;
      if (what === "proxy") return proxy(req, body, res, upstream as string);
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

function proxy(req: IncomingMessage, body: Buffer, res: ServerResponse, upstream: string): void {
  const out = request(
    `${upstream}${req.url}`,
    { method: req.method, headers: { ...req.headers, host: new URL(upstream).host } },
    (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
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
