import { type Agent, request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { request as httpsRequest } from "node:https";
import type { Writable } from "node:stream";
import { ClientError } from "./errors.js";
import { serverText } from "./server-text.js";

export interface HttpAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface HttpRequest {
  method: "GET" | "POST";
  url: string;
  headers?: Record<string, string | number>;
  /** A Buffer, or a writer called once per exchange (a retry sends the body afresh). */
  body?: Buffer | BodyWriter;
  /** The whole exchange, connect to last byte. */
  timeoutMs: number;
  /** CA or pinned server certificate for https. */
  ca?: Buffer;
  /** Client certificate and key, for nodes that require mutual TLS. */
  clientCert?: { cert: Buffer; key: Buffer };
  /** Answers larger than this are a misbehaving node, not a signature. */
  maxBodyBytes?: number;
  /** A keep-alive agent to reuse connections; without one, a fresh connection per exchange. */
  agent?: Agent;
}

/**
 * Writes a request body into `out`, resolving once every chunk has been handed to the
 * connection, rejecting with its own error (a local file's) or when the exchange ends first.
 */
export type BodyWriter = (out: Writable) => Promise<void>;

/** A transport failure: refused, reset, timed out, cut short, oversized. Always worth another node. */
export class TransportError extends ClientError {
  constructor(
    /** What failed, as Node names it: ECONNREFUSED, ETIMEDOUT, a TLS error's code… */
    readonly reason: string,
    message: string,
  ) {
    super("TRANSPORT", message);
  }
}

/** One HTTP exchange with a hard deadline; the whole answer body is read (they are small). */
export function send(req: HttpRequest): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const url = new URL(req.url);
    const maxBody = req.maxBodyBytes ?? 16 * 1024 * 1024;
    const make = url.protocol === "https:" ? httpsRequest : httpRequest;
    let done = false;
    let bodySent = req.body === undefined || Buffer.isBuffer(req.body);
    const fail = (code: string, message: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      r.destroy(); // a body writer sees the close and shuts its file
      reject(new TransportError(code, message));
    };
    const r = make(url, {
      method: req.method,
      headers: req.headers,
      agent: req.agent ?? false,
      ...(req.ca ? { ca: req.ca } : {}),
      ...(req.clientCert ?? {}),
    });
    const timer = setTimeout(
      () => fail("ETIMEDOUT", `no complete answer from ${url.host} in ${req.timeoutMs} ms`),
      req.timeoutMs,
    );
    let answering = false;
    r.on("error", (err: NodeJS.ErrnoException) => {
      const why = () => fail(err.code ?? "ERROR", `${url.host}: ${err.message}`);
      // Sending failed after the answer began to arrive: let the answer finish first.
      if (answering) setTimeout(why, 1000).unref();
      else why();
    });
    r.on("response", (res) => {
      answering = true;
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (c: Buffer) => {
        size += c.length;
        if (size > maxBody) fail("ETOOBIG", `${url.host} sent more than ${maxBody} bytes`);
        else chunks.push(c);
      });
      res.on("aborted", () => fail("ECONNRESET", `${url.host} closed the connection mid-answer`));
      res.on("error", (err: NodeJS.ErrnoException) =>
        fail(err.code ?? "ERROR", `${url.host}: ${err.message}`),
      );
      res.on("end", () => {
        if (done) return;
        if (!res.complete) return fail("ECONNRESET", `${url.host} closed the connection mid-answer`);
        done = true;
        clearTimeout(timer);
        // A node may answer (503, 413, …) before reading the whole upload: stop sending it
        // (the connection cannot be reused mid-body) and the writer closes its file.
        if (!bodySent) r.destroy();
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
      });
    });
    const body = req.body;
    if (body === undefined) r.end();
    else if (Buffer.isBuffer(body)) r.end(body);
    else {
      body(r).then(
        () => {
          bodySent = true;
          r.end();
        },
        (err: Error) => {
          bodySent = true;
          if (done) return;
          // The node may have answered and closed while we were still sending (a refused
          // token): its answer is in the socket, and it is what the client must act on.
          if ((err as { code?: string }).code !== "LOCAL_IO") {
            setTimeout(
              () => fail("EPIPE", `${url.host} closed the connection while the upload was sent`),
              1000,
            ).unref();
            return;
          }
          // The body's own failure (a local file) is passed on as it is: it is not the node's.
          done = true;
          clearTimeout(timer);
          r.destroy();
          reject(err);
        },
      );
    }
  });
}

/** The API's JSON error, if the body is one; its text made safe to print (server-text.ts). */
export function apiError(body: Buffer): { code?: string; message?: string } {
  try {
    const parsed = JSON.parse(body.toString("utf8")) as { error?: { code?: unknown; message?: unknown } };
    const code = parsed?.error?.code;
    const message = parsed?.error?.message;
    return {
      ...(typeof code === "string" && /^[A-Z_]{1,40}$/.test(code) ? { code } : {}),
      ...(typeof message === "string" ? { message: serverText(message) } : {}),
    };
  } catch {
    return {};
  }
}
