import { connect } from "node:net";

export interface RawResponse {
  status: number;
  headers: string;
  body: string;
}

/**
 * Writes bytes to a node over a bare socket (for requests no HTTP client will send: huge
 * headers, lying Content-Length, truncated bodies) and returns the first response.
 * `end: false` keeps the socket's write side open, as a client still "uploading" would;
 * `trickle` then goes on sending that many bytes at that interval, as a slow client would.
 */
export function rawRequest(
  port: number,
  payload: string | Buffer,
  opts: { end?: boolean; timeoutMs?: number; trickle?: { bytes: number; everyMs: number } } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      clearInterval(dribble);
      socket.destroy();
      reject(new Error("no response from node"));
    }, opts.timeoutMs ?? 10_000);
    let done = false;
    const dribble = opts.trickle
      ? setInterval(() => socket.write("x".repeat(opts.trickle?.bytes ?? 1)), opts.trickle.everyMs)
      : undefined;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearInterval(dribble);
      const text = Buffer.concat(chunks).toString("latin1");
      const [head = "", ...rest] = text.split("\r\n\r\n");
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
      if (!status) reject(new Error(`no HTTP response: ${JSON.stringify(text.slice(0, 200))}`));
      else resolve({ status, headers: head, body: rest.join("\r\n\r\n") });
    };
    socket.on("data", (c: Buffer) => {
      chunks.push(c);
      const text = Buffer.concat(chunks).toString("latin1");
      const headEnd = text.indexOf("\r\n\r\n");
      const len = /content-length: (\d+)/i.exec(text.slice(0, headEnd))?.[1];
      // Answer complete: stop without waiting for the server to close.
      if (headEnd >= 0 && len !== undefined && text.length >= headEnd + 4 + Number(len)) {
        socket.destroy();
        finish();
      }
    });
    socket.on("close", finish);
    socket.on("error", () => {});
    socket.write(payload);
    if (opts.end ?? true) socket.end();
  });
}
