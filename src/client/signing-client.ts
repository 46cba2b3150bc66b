import { createHash } from "node:crypto";
import { closeSync, constants, fstatSync, openSync, readFileSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import { basename, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { writeFileAtomic } from "../files/write-atomic.js";
import { NONCE_SHAPE } from "../tokens/nonce.js";
import { hashFile } from "./digests.js";
import { ClientError } from "./errors.js";
import { apiError, type HttpAnswer, send } from "./http.js";
import { LocalFileError, multipartUpload } from "./multipart.js";
import { NodeRotation } from "./nodes.js";
import { NonceChain } from "./nonce-file.js";
import { backoffMs, classifyAnswer, classifyNetworkError, type Verdict } from "./retry.js";
import { requestToken, type TokenRequest } from "./token.js";

/** Signature file suffix per format, as the nodes' /formats reports them. */
export const SUFFIXES: Record<string, string> = { gpg: ".asc", sshsig: ".sig" };

export interface SigningClientOptions {
  /** Node base URLs (http://host:port). */
  nodes: readonly string[];
  tokenFile: string;
  nonceFile: string;
  /** Where signatures are kept by (format, sha256 of input), so a rerun uploads nothing. */
  cacheDir?: string;
  /** Per file: how long to keep retrying through outages before giving up. */
  maxTimeMs?: number;
  /** One HTTP exchange, connect to last byte (uploads of large files need more). */
  requestTimeoutMs?: number;
  /** `?wait=` while polling: the node holds the answer until signed. */
  pollWaitSeconds?: number;
  ca?: Buffer;
  /** Client certificate and key, for nodes that require mutual TLS. */
  clientCert?: { cert: Buffer; key: Buffer };
  /** With issuer credentials, a rejected or missing token is fetched again instead of failing. */
  issuer?: Omit<TokenRequest, "nodes" | "ca" | "random">;
  random?: () => number;
  onEvent?: (e: ClientEvent) => void;
}

export type Phase = "hashing" | "checking" | "uploading" | "signing" | "downloading" | "retrying" | "token";

export interface ClientEvent {
  file: string;
  format: string;
  phase: Phase;
  node?: string;
  detail?: string;
}

export type ResultSource = "signed" | "local-cache" | "cluster-cache";

export interface SignResult {
  file: string;
  format: string;
  output: string;
  source: ResultSource;
  retries: number;
  durationMs: number;
}

/** A file whose signature keeps getting lost, or whose fresh tokens keep being refused, fails. */
const MAX_REUPLOADS = 10;
const MAX_TOKEN_REFRESHES = 2;

const sha256hex = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** Files up to this size are read whole (at most -j of them in memory at once). */
const WHOLE_FILE_BYTES = 1024 * 1024;

/** Seconds an upload may wait for its signature: see `upload`. */
const UPLOAD_WAIT_SECONDS = 1;

/** A 202 answer to an upload: its status ("queued", "in_progress", "cached") and, with ?wait, the signature. */
function uploadAnswer(body: Buffer): { status?: string; signature?: Buffer } {
  try {
    const { status, signature } = JSON.parse(body.toString("utf8")) as {
      status?: unknown;
      signature?: unknown;
    };
    return {
      ...(typeof status === "string" ? { status } : {}),
      ...(typeof signature === "string" && signature !== ""
        ? { signature: Buffer.from(signature, "utf8") }
        : {}),
    };
  } catch {
    return {};
  }
}

/**
 * Signs files through any node of a cluster: rotation on failures, backoff with jitter, a
 * retry budget per file, one nonce chain shared by concurrent files, local and cluster caches.
 */
export class SigningClient {
  private readonly nodes: NodeRotation;
  private readonly nonces: NonceChain;
  private token: string | undefined;
  /** Bumped when the token is replaced, so concurrent 401s fetch it only once. */
  private tokenGeneration = 0;
  private refreshing: Promise<void> | undefined;
  /** Retries across every file this client handled, the failed ones included. */
  retriesTotal = 0;
  /**
   * Connections are kept and reused: a TCP (and TLS) handshake per request cost more than the
   * signing. Idle ones do not keep the process alive, and close before the node's keep-alive
   * timeout (node's agent honours its Keep-Alive hint); a reset one is a retry like any other.
   */
  private readonly agents = {
    http: new HttpAgent({ keepAlive: true }),
    https: new HttpsAgent({ keepAlive: true }),
  };

  constructor(private readonly opts: SigningClientOptions) {
    this.nodes = new NodeRotation(opts.nodes, opts.random);
    this.nonces = new NonceChain(opts.nonceFile);
  }

  /** Signs `file` in `format`, writing the signature to `output` (default: file + suffix). */
  async sign(
    file: string,
    format: string,
    output = `${file}${SUFFIXES[format] ?? ".sig"}`,
  ): Promise<SignResult> {
    const started = Date.now();
    const emit = (phase: Phase, node?: string, detail?: string) =>
      this.opts.onEvent?.({ file, format, phase, ...(node ? { node } : {}), ...(detail ? { detail } : {}) });

    // With a local cache the file is hashed first, to look it up. Otherwise it goes straight
    // to a node, hashed as it is sent: one read of the file, and the upload's answer says
    // whether the cluster had signed it already.
    let size: number;
    let mtimeMs: number;
    let bytes: Buffer | undefined;
    let sha256: string | undefined;
    try {
      // Opened, not only stat'ed: an unreadable file fails here, once, not on every node.
      // A small one is read whole now: one read instead of a stream per attempt.
      // O_NONBLOCK: a FIFO must not hang the open (regular files ignore the flag).
      // Synchronous calls: each asynchronous one is a hand-off to libuv's thread pool and back,
      // four per file, costlier than reading a small file (see writeFileAtomic).
      const fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
      try {
        const st = fstatSync(fd);
        if (!st.isFile())
          throw Object.assign(new Error("not a regular file"), { code: "not a regular file" });
        ({ size, mtimeMs } = st);
        if (size <= WHOLE_FILE_BYTES) {
          bytes = readFileSync(fd);
          size = bytes.length;
        }
      } finally {
        closeSync(fd);
      }
      if (this.opts.cacheDir) {
        emit("hashing");
        sha256 = bytes ? createHash("sha256").update(bytes).digest("hex") : (await hashFile(file)).sha256;
      }
    } catch (err) {
      throw new ClientError(
        "LOCAL_IO",
        `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
    const done = async (signature: Buffer, source: ResultSource, retries: number): Promise<SignResult> => {
      try {
        await writeFileAtomic(output, signature);
        if (source !== "local-cache" && sha256) await this.cachePut(format, sha256, signature);
      } catch (err) {
        throw new ClientError(
          "LOCAL_IO",
          `cannot write ${output}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        );
      }
      return { file, format, output, source, retries, durationMs: Date.now() - started };
    };

    const cached = sha256 ? await this.cacheGet(format, sha256) : undefined;
    if (cached) return done(cached, "local-cache", 0);

    const deadline = Date.now() + (this.opts.maxTimeMs ?? 15 * 60_000);
    const wait = this.opts.pollWaitSeconds ?? 10;
    let retries = 0;
    let attempt = 0;
    let uploaded = false;
    let alreadySigned = false;
    let needUpload = sha256 === undefined;
    let reuploads = 0;
    let refreshes = 0;
    let last = "no attempt";

    for (;;) {
      const node = this.nodes.current;
      let verdict: Verdict;
      try {
        if (needUpload) {
          emit("uploading", node);
          const up = await this.upload(
            file,
            format,
            { size, mtimeMs, bytes, sha256 },
            deadline,
            (n, reason) => {
              retries++;
              this.retriesTotal++;
              emit("retrying", n, reason);
            },
          );
          verdict = up.verdict;
          if (verdict.kind === "ok") {
            sha256 = up.sha256;
            alreadySigned = up.cached;
            if (up.signature) {
              emit("downloading", up.node);
              return await done(up.signature, alreadySigned ? "cluster-cache" : "signed", retries);
            }
            uploaded = true;
            needUpload = false;
            refreshes = 0;
            emit("signing", node);
            continue;
          }
        } else {
          emit(uploaded ? "signing" : "checking", node);
          const res = await this.get(node, format, sha256 as string, uploaded ? wait : 0);
          if (res.status === 200) {
            const signature = res.body;
            if (res.headers["x-sha256-digest"] !== sha256hex(signature)) {
              verdict = {
                kind: "retry",
                reason: `${node} sent a signature that does not match its X-SHA256-Digest`,
                demote: true,
              };
            } else {
              emit("downloading", node);
              const source = uploaded && !alreadySigned ? "signed" : "cluster-cache";
              return await done(signature, source, retries);
            }
          } else if (res.status === 404 && res.headers["x-pending"] === "True") {
            // Being signed (maybe on another node): keep polling; ?wait does the pacing.
            attempt = 0;
            uploaded = true;
            if (wait === 0) await sleep(1000);
            continue;
          } else if (res.status === 404 && !uploaded) {
            needUpload = true; // unknown to the cluster: upload it
            continue;
          } else if (res.status === 404) {
            // Uploaded, then lost (a node died, Redis restarted, or the node that holds it
            // during an outage is not this one): upload again, paced and bounded.
            if (++reuploads > MAX_REUPLOADS) {
              throw new ClientError(
                "GAVE_UP",
                `${basename(file)} (${format}): its signature was lost ${MAX_REUPLOADS} times`,
              );
            }
            needUpload = true;
            verdict = {
              kind: "retry",
              reason: "the signature was lost after the upload; uploading again",
              demote: false,
            };
          } else {
            const err = apiError(res.body);
            if (err.code === "SIGNING_FAILED") needUpload = true;
            verdict = classifyAnswer({
              status: res.status,
              ...err,
              retryAfter: res.headers["retry-after"] as string,
            });
          }
        }
      } catch (err) {
        if (err instanceof ClientError) throw err;
        verdict = classifyNetworkError(err);
      }

      if (verdict.kind === "fail")
        throw new ClientError(
          "REFUSED",
          `${basename(file)} (${format}) refused by ${node}: ${verdict.reason}`,
        );
      if (verdict.kind === "new-token") {
        if (!this.opts.issuer) {
          throw new ClientError(
            "TOKEN_REJECTED",
            `the token was rejected (${verdict.reason}); fetch a new one with \`signtool token\` (or give --token-from issuer credentials)`,
          );
        }
        if (++refreshes > MAX_TOKEN_REFRESHES) {
          throw new ClientError(
            "TOKEN_REJECTED",
            `even a freshly fetched token was rejected (${verdict.reason}): check the nodes' clocks and token.secrets`,
          );
        }
        emit("token", node, verdict.reason);
        await this.refreshToken();
        verdict = { kind: "retry", reason: `new token after ${verdict.reason}`, demote: false };
      }
      if (verdict.kind !== "retry") continue; // "ok" answers continue above
      retries++;
      this.retriesTotal++;
      last = `${node}: ${verdict.reason}`;
      if (verdict.demote) this.nodes.demote(node);
      const delay = Math.max(verdict.retryAfterMs ?? 0, backoffMs(attempt++, this.opts.random));
      if (Date.now() + delay > deadline) {
        throw new ClientError(
          "GAVE_UP",
          `${basename(file)} (${format}): gave up after ${retries} retries; last error: ${last}`,
        );
      }
      emit("retrying", node, verdict.reason);
      await sleep(delay);
    }
  }

  private get(node: string, format: string, sha256: string, wait: number): Promise<HttpAnswer> {
    return send({
      agent: this.agentFor(node),
      method: "GET",
      url: `${node}/sign/${encodeURIComponent(format)}/${sha256}${wait ? `?wait=${wait}` : ""}`,
      timeoutMs: this.timeout() + wait * 1000,
      ...this.tls(),
    });
  }

  /**
   * One upload, holding the nonce chain until a node answers. A transport failure (the answer
   * may have been lost after the node advanced the chain) is retried at once on the next node
   * with the same nonce, which nodes accept once more for the same file; no other upload may
   * take the chain in between, or it would present a nonce the cluster already consumed.
   */
  private async upload(
    file: string,
    format: string,
    d: { size: number; mtimeMs: number; bytes: Buffer | undefined; sha256: string | undefined },
    deadline: number,
    onRetry: (node: string, reason: string) => void,
  ): Promise<{ verdict: Verdict; node: string; sha256?: string; cached: boolean; signature?: Buffer }> {
    const token = await this.currentToken();
    return this.nonces.use(async (nonce) => {
      const form = multipartUpload(
        { ...(d.sha256 ? { sha256: d.sha256 } : {}), filename: basename(file), token, nonce },
        {
          path: file,
          size: d.size,
          mtimeMs: d.mtimeMs,
          name: basename(file),
          ...(d.bytes ? { bytes: d.bytes } : {}),
        },
      );
      for (let attempt = 0; ; attempt++) {
        const node = this.nodes.current;
        let res: HttpAnswer;
        try {
          res = await send({
            agent: this.agentFor(node),
            method: "POST",
            // A short ?wait: the node answers with the signature it makes within milliseconds,
            // sparing a GET; short, because the answer holds this token's nonce chain.
            // digest=sha256: files are named by sha256 only, so the node hashes nothing else.
            url: `${node}/sign/${encodeURIComponent(format)}?wait=${UPLOAD_WAIT_SECONDS}&digest=sha256`,
            headers: { "Content-Type": form.contentType, "Content-Length": form.contentLength },
            body: form.body,
            timeoutMs: this.timeout() + Math.ceil(d.size / (1024 * 1024)) * 1000,
            ...this.tls(),
          });
        } catch (err) {
          if (err instanceof LocalFileError) throw new ClientError("LOCAL_IO", err.message);
          const { reason } = classifyNetworkError(err) as { reason: string };
          this.nodes.demote(node);
          const delay = backoffMs(attempt, this.opts.random);
          if (Date.now() + delay > deadline) {
            throw new ClientError(
              "GAVE_UP",
              `${basename(file)} (${format}): gave up after ${attempt} retries; last error: ${node}: ${reason}`,
            );
          }
          onRetry(node, reason);
          await sleep(delay);
          continue;
        }
        const error = apiError(res.body);
        const verdict: Verdict =
          res.status === 202
            ? { kind: "ok" }
            : classifyAnswer({
                status: res.status,
                ...error,
                retryAfter: res.headers["retry-after"] as string,
              });
        // Our nodes always say which nonce comes next, also when they refuse (then it is the
        // one presented); a proxy's or an impostor's answer says nothing we should keep.
        const next = res.headers["x-nonce"];
        const ours = res.status === 202 || error.code !== undefined;
        const keep = ours && typeof next === "string" && NONCE_SHAPE.test(next);
        const answer = res.status === 202 ? uploadAnswer(res.body) : {};
        const sha256 = form.sentSha256;
        const result = {
          verdict,
          node,
          // After a lost answer, "cached" is most likely this client's own earlier attempt.
          cached: answer.status === "cached" && attempt === 0,
          ...(sha256 ? { sha256 } : {}),
          ...(answer.signature ? { signature: answer.signature } : {}),
        };
        return { result, ...(keep ? { next } : {}) };
      }
    });
  }

  private agentFor(node: string): HttpAgent {
    return node.startsWith("https:") ? this.agents.https : this.agents.http;
  }

  /** TLS settings for every request: the pinned CA or certificate, and our own certificate. */
  private tls(): { ca?: Buffer; clientCert?: { cert: Buffer; key: Buffer } } {
    return {
      ...(this.opts.ca ? { ca: this.opts.ca } : {}),
      ...(this.opts.clientCert ? { clientCert: this.opts.clientCert } : {}),
    };
  }

  private timeout(): number {
    return this.opts.requestTimeoutMs ?? 60_000;
  }

  private async currentToken(): Promise<string> {
    if (this.token !== undefined) return this.token;
    try {
      this.token = (await readFile(this.opts.tokenFile, "utf8")).trim();
      if (!this.token) throw Object.assign(new Error("empty"), { code: "EMPTY" });
      return this.token;
    } catch (err) {
      this.token = undefined;
      if (this.opts.issuer) {
        await this.refreshToken();
        return this.token as unknown as string;
      }
      const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
      throw new ClientError(
        "TOKEN_FILE",
        `cannot use token file ${this.opts.tokenFile} (${code === "EMPTY" ? "it is empty" : code}): run the "download token" step (signtool token) first`,
      );
    }
  }

  /** Fetches a new token once for all concurrent callers, and starts its nonce chain afresh. */
  private refreshToken(): Promise<void> {
    const generation = this.tokenGeneration;
    if (this.refreshing) return this.refreshing;
    this.refreshing = (async () => {
      const issuer = this.opts.issuer;
      if (!issuer || generation !== this.tokenGeneration) return;
      const token = await requestToken({
        ...issuer,
        nodes: this.nodes.all,
        ...this.tls(),
        ...(this.opts.random ? { random: this.opts.random } : {}),
      });
      await this.nonces.use(async () => ({ result: undefined, next: "" }));
      await writeFileAtomic(this.opts.tokenFile, token, 0o600);
      this.token = token;
      this.tokenGeneration++;
    })().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  private cachePath(format: string, sha256: string): string | undefined {
    return this.opts.cacheDir ? join(this.opts.cacheDir, format, sha256) : undefined;
  }

  private async cacheGet(format: string, sha256: string): Promise<Buffer | undefined> {
    const path = this.cachePath(format, sha256);
    return path ? readFile(path).catch(() => undefined) : undefined;
  }

  private async cachePut(format: string, sha256: string, signature: Buffer): Promise<void> {
    const path = this.cachePath(format, sha256);
    if (!path) return;
    await mkdir(join(this.opts.cacheDir as string, format), { recursive: true });
    await writeFileAtomic(path, signature);
  }
}
