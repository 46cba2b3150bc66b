import {
  type Agent,
  type ClientRequest,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
} from "node:http";
import { request as httpsRequest } from "node:https";
import type { Readable, Writable } from "node:stream";
import { ClientError } from "./errors.js";
import { serverText } from "./server-text.js";

/** A node's answer, its body read whole (or, when the request chose so, handed over unread). */
export interface HttpAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /**
   * The body unread, for an answer `streamIf` picked (`body` is then empty): the caller reads
   * it to its end. The exchange's deadline still runs: it cuts the stream with a TransportError.
   */
  stream?: Readable;
}

/** One HTTP exchange with a node: what to send, how long it may take, which TLS. */
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
  /** Answers by this status are handed over unread (`stream`): a signed file is never held whole. */
  streamIf?: (status: number) => boolean;
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

/**
 * One HTTP exchange with a hard deadline; the answer body is read whole (they are small), unless
 * `streamIf` hands it over unread (a signed file).
 */
export function send(req: HttpRequest): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => new Exchange(req, resolve, reject).start());
}

/** One request and its answer; it settles once: answered, failed, or timed out. */
class Exchange {
  private readonly url: URL;
  private readonly request: ClientRequest;
  private readonly timer: NodeJS.Timeout;
  private done = false;
  private answering = false;
  /** An answer handed over unread: a failure now ends its stream instead of the promise. */
  private streaming: IncomingMessage | undefined;
  private bodySent: boolean;

  constructor(
    private readonly req: HttpRequest,
    private readonly resolve: (answer: HttpAnswer) => void,
    private readonly reject: (err: Error) => void,
  ) {
    this.url = new URL(req.url);
    this.bodySent = req.body === undefined || Buffer.isBuffer(req.body);
    const make = this.url.protocol === "https:" ? httpsRequest : httpRequest;
    this.request = make(this.url, {
      method: req.method,
      headers: req.headers,
      agent: req.agent ?? false,
      ...(req.ca ? { ca: req.ca } : {}),
      ...(req.clientCert ?? {}),
    });
    this.timer = setTimeout(
      () => this.fail("ETIMEDOUT", `no complete answer from ${this.url.host} in ${req.timeoutMs} ms`),
      req.timeoutMs,
    );
  }

  start(): void {
    this.request.on("error", (err: NodeJS.ErrnoException) => this.requestFailed(err));
    this.request.on("response", (res) => this.read(res));
    const body = this.req.body;
    if (body === undefined) this.request.end();
    else if (Buffer.isBuffer(body)) this.request.end(body);
    else
      body(this.request).then(
        () => this.bodyWritten(),
        (err: Error) => this.bodyFailed(err),
      );
  }

  /** Fails and drops the connection: a body writer sees the close and shuts its file. */
  private fail(code: string, message: string): void {
    if (!this.settle()) return;
    const err = new TransportError(code, message);
    // The stream first: its reader must see why, not the socket's bare "aborted".
    this.streaming?.destroy(err);
    this.request.destroy();
    if (!this.streaming) this.reject(err);
  }

  /** True the first time only: the exchange is over, its timer and connection released. */
  private settle(): boolean {
    if (this.done) return false;
    this.done = true;
    clearTimeout(this.timer);
    return true;
  }

  private requestFailed(err: NodeJS.ErrnoException): void {
    const why = () => this.fail(err.code ?? "ERROR", `${this.url.host}: ${err.message}`);
    // Sending failed after the answer began to arrive: let the answer finish first.
    if (this.answering) setTimeout(why, 1000).unref();
    else why();
  }

  private read(res: IncomingMessage): void {
    this.answering = true;
    if (this.req.streamIf?.(res.statusCode ?? 0)) {
      this.handOver(res);
      return;
    }
    const host = this.url.host;
    const maxBody = this.req.maxBodyBytes ?? 16 * 1024 * 1024;
    const chunks: Buffer[] = [];
    let size = 0;
    res.on("data", (c: Buffer) => {
      size += c.length;
      if (size > maxBody) this.fail("ETOOBIG", `${host} sent more than ${maxBody} bytes`);
      else chunks.push(c);
    });
    res.on("aborted", () => this.fail("ECONNRESET", `${host} closed the connection mid-answer`));
    res.on("error", (err: NodeJS.ErrnoException) =>
      this.fail(err.code ?? "ERROR", `${host}: ${err.message}`),
    );
    res.on("end", () => {
      if (!res.complete) return this.fail("ECONNRESET", `${host} closed the connection mid-answer`);
      if (!this.settle()) return;
      // A node may answer (503, 413, …) before reading the whole upload: stop sending it
      // (the connection cannot be reused mid-body) and the writer closes its file.
      if (!this.bodySent) this.request.destroy();
      this.resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
    });
  }

  /** Resolves with the body unread; the exchange ends when its reader has read it all (or stopped). */
  private handOver(res: IncomingMessage): void {
    const host = this.url.host;
    this.streaming = res;
    res.on("aborted", () => this.fail("ECONNRESET", `${host} closed the connection mid-answer`));
    res.on("end", () => this.settle());
    res.on("close", () => {
      if (res.complete) this.settle();
      else this.fail("ECONNRESET", `${host}: the answer ended before its last byte`);
    });
    this.resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.alloc(0), stream: res });
  }

  private bodyWritten(): void {
    this.bodySent = true;
    this.request.end();
  }

  private bodyFailed(err: Error): void {
    this.bodySent = true;
    if (this.done) return;
    // The body's own failure (a local file) is passed on as it is: it is not the node's.
    if ((err as { code?: string }).code === "LOCAL_IO") {
      this.settle();
      this.request.destroy();
      this.reject(err);
      return;
    }
    // The node may have answered and closed while we were still sending (a refused
    // token): its answer is in the socket, and it is what the client must act on.
    const host = this.url.host;
    setTimeout(
      () => this.fail("EPIPE", `${host} closed the connection while the upload was sent`),
      1000,
    ).unref();
  }
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
