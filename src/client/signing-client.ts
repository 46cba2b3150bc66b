import { createHash, type Hash } from "node:crypto";
import { closeSync, constants, fstatSync, openSync, readFileSync, statSync } from "node:fs";
import { mkdir, open, readFile } from "node:fs/promises";
import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import { basename, join, resolve } from "node:path";
import type { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { copyFileAtomic, type PendingFile, writeFileAtomic } from "../files/write-atomic.js";
import { NONCE_SHAPE } from "../tokens/nonce.js";
import { Deadline } from "./deadline.js";
import { hashFile, rehashFile } from "./digests.js";
import { ClientError } from "./errors.js";
import { apiError, type HttpAnswer, type HttpRequest, send, TransportError } from "./http.js";
import { LocalFileError, type MultipartUpload, multipartUpload } from "./multipart.js";
import { NodeRotation } from "./nodes.js";
import { NonceChain } from "./nonce-file.js";
import { backoffMs, classifyAnswer, classifyNetworkError, type Verdict } from "./retry.js";
import { serverText } from "./server-text.js";
import { type ReceivedFile, receiveSignedFile } from "./signed-file.js";
import { requestToken, type TokenRequest } from "./token.js";
import {
  type InputHash,
  keyDigest,
  type OutputScan,
  type SignatureCheck,
  TrustedKeys,
} from "./trusted-keys.js";

/** Beside a cached signed file: its SHA-256, checked when the file is used again. */
const CACHED_DIGEST = ".sha256";

/** Signature file suffix per format, as the nodes' /formats reports them. */
export const SUFFIXES: Record<string, string> = {
  gpg: ".asc",
  "gpg-clearsign": ".asc",
  sshsig: ".sig",
  minisign: ".minisig",
};

/** Formats whose output is the whole signed file (checked by its X-SHA256-Digest and certificate). */
export const EMBEDDED_FORMATS: ReadonlySet<string> = new Set(["authenticode"]);

/** A format name as the nodes spell them; anything else could name a path (`-f ../../x`). */
export const FORMAT_NAME = /^[a-z0-9][a-z0-9-]{0,31}$/;

/**
 * How a SigningClient signs: where, with which token and nonce chain, within which time, trusting
 * which keys.
 */
export interface SigningClientOptions {
  /** Node base URLs (http://host:port). */
  nodes: readonly string[];
  /** The token from `signtool token`; rewritten when the client fetches a new one (`issuer`). */
  tokenFile: string;
  /** The token's nonce chain: each upload uses the nonce the last answer gave. */
  nonceFile: string;
  /** Where signatures are kept by (format, sha256 of input), so a rerun uploads nothing. */
  cacheDir?: string;
  /**
   * When the run ends: shared by every file (signtool's `--max-time`), so no file is tried past
   * it. Without one, each `sign` call gets `maxTimeMs` of its own.
   */
  deadline?: Deadline;
  /** Per `sign` call, when no run-wide `deadline` is given (default 15 minutes). */
  maxTimeMs?: number;
  /** One HTTP exchange, connect to last byte (uploads of large files get more), within the budget. */
  requestTimeoutMs?: number;
  /** `?wait=` while polling: the node holds the answer until signed. */
  pollWaitSeconds?: number;
  /** CA or pinned server certificate, for nodes that speak https. */
  ca?: Buffer;
  /** Client certificate and key, for nodes that require mutual TLS. */
  clientCert?: { cert: Buffer; key: Buffer };
  /** With issuer credentials, a rejected or missing token is fetched again instead of failing. */
  issuer?: Omit<TokenRequest, "nodes" | "ca" | "random" | "deadline">;
  /** Public keys to check signatures with, by format (else fetched from the nodes). */
  trustedKeys?: ReadonlyMap<string, { text: string; from: string }>;
  /** Where the node rotation starts and the backoff jitter come from (default Math.random). */
  random?: () => number;
  /** Each file's progress, phase by phase (signtool prints them). */
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

/** Files up to this size are read whole (at most -j of them in memory at once). */
const WHOLE_FILE_BYTES = 1024 * 1024;

/** Seconds an upload may wait for its signature: see `upload`. */
const UPLOAD_WAIT_SECONDS = 1;

/** The longest a lookup of the format's key on the nodes may take per round. */
const KEY_FETCH_TIMEOUT_MS = 10_000;

const sha256hex = (b: Buffer) => createHash("sha256").update(b).digest("hex");

const NONCE_LOST =
  "the token's nonce chain moved on without this client: two jobs use one token and nonce file, or the nonce file was lost or restored from an old copy. Give each job its own token (signtool token) and nonce file, or let signtool fetch one (--token-from)";

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

/** The input as read before anything is sent: small files whole, larger ones by size and time. */
interface Input {
  size: number;
  mtimeMs: number;
  bytes?: Buffer;
  sha256?: string;
  /** The running SHA-256 once known (hashed for the cache, or while uploading). */
  hash?: Hash;
}

/** Where one file's signing stands: what to do next, and what it has cost so far. */
type Step = "upload" | "lookup" | "poll";

interface Job {
  file: string;
  format: string;
  output: string;
  input: Input;
  check: SignatureCheck;
  /** Embedded formats: the check of a signed file, fed as it streams to disk. */
  scan?: () => OutputScan;
  keyFrom: string;
  started: number;
  retries: number;
  attempt: number;
  reuploads: number;
  refreshes: number;
  uploaded: boolean;
  alreadySigned: boolean;
  /** The token generation the last upload used: its first verified result commits it. */
  tokenGeneration: number;
  deadline: Deadline;
  lastFailure: string;
  unverified: boolean;
  emit(phase: Phase, node?: string, detail?: string): void;
}

/**
 * What one step produced: a signature to check, a signed file already checked (embedded
 * formats: streamed beside its output, not yet renamed), or the next step (after a failure,
 * with it).
 */
type Outcome =
  | { signature: Buffer; node: string; source: ResultSource }
  | { signedFile: PendingFile; sha256: string; node: string; source: ResultSource }
  | { next: Step; verdict?: Verdict };

/**
 * Signs files through any node of a cluster: rotation on failures, backoff with jitter, one
 * deadline for the whole run, one nonce chain shared by concurrent files, local and cluster
 * caches. Every signature is checked against the format's trusted key before it is written or
 * cached: exit 0 means every output verifies.
 */
export class SigningClient {
  private readonly nodes: NodeRotation;
  private readonly nonces: NonceChain;
  private readonly keys: TrustedKeys;
  private token: string | undefined;
  /** Bumped when the token is replaced, so concurrent 401s fetch it only once. */
  private tokenGeneration = 0;
  /** A fetched token not yet written to the token file: it has not signed anything yet. */
  private tokenUncommitted = false;
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
    this.keys = new TrustedKeys({
      pinned: opts.trustedKeys ?? new Map(),
      ...(opts.cacheDir ? { cacheDir: opts.cacheDir } : {}),
      fetch: (format, deadline) => this.fetchKey(format, deadline),
    });
  }

  /** Signs `file` in `format`, writing the signature to `output` (default: file + suffix). */
  async sign(
    file: string,
    format: string,
    output = `${file}${SUFFIXES[format] ?? ".sig"}`,
  ): Promise<SignResult> {
    if (!FORMAT_NAME.test(format))
      throw new ClientError("CONFIG", `"${serverText(format)}" is not a format name`);
    const started = Date.now();
    const emit = (phase: Phase, node?: string, detail?: string) =>
      this.opts.onEvent?.({ file, format, phase, ...(node ? { node } : {}), ...(detail ? { detail } : {}) });
    const deadline = this.opts.deadline ?? new Deadline(this.opts.maxTimeMs ?? 15 * 60_000);
    const input = await this.readInput(file, emit);
    const { check, scan, from } = await this.keys.checker(format, deadline);
    if (EMBEDDED_FORMATS.has(format) && !scan)
      throw new ClientError("CONFIG", `signtool cannot check ${format} signed files`);
    const job: Job = {
      ...{ file, format, output, input, check, keyFrom: from, started, emit },
      ...(scan ? { scan } : {}),
      ...{ retries: 0, attempt: 0, reuploads: 0, refreshes: 0, uploaded: false, alreadySigned: false },
      ...{ tokenGeneration: this.tokenGeneration, deadline, lastFailure: "no attempt", unverified: false },
    };
    const cached = await this.fromCache(job);
    if (cached) return cached;
    return this.run(job, input.sha256 ? "lookup" : "upload");
  }

  /** The state machine: one step at a time until a signature verifies or the run must end. */
  private async run(job: Job, first: Step): Promise<SignResult> {
    let step = first;
    for (;;) {
      const node = this.nodes.current;
      let outcome: Outcome;
      try {
        outcome = step === "upload" ? await this.stepUpload(job) : await this.stepFetch(job, node, step);
      } catch (err) {
        // One exchange failing is for the retry classifier; any other of our errors ends the file.
        if (err instanceof ClientError && !(err instanceof TransportError)) throw err;
        outcome = { next: step, verdict: classifyNetworkError(err) };
      }
      if ("signedFile" in outcome) return this.acceptFile(job, outcome);
      if ("signature" in outcome) {
        const why = await job.check(outcome.signature, this.inputHash(job));
        if (why === undefined) return this.accept(job, outcome);
        job.unverified = true;
        const reason = `sent a signature that does not verify with the key from ${job.keyFrom}: ${why}`;
        outcome = {
          next: job.uploaded ? "poll" : "lookup",
          verdict: { kind: "retry", reason, demote: true },
        };
      }
      step = outcome.next;
      if (outcome.verdict) await this.afterFailure(job, outcome.verdict, node);
    }
  }

  /** Reads the input once: an unreadable file fails here, once, not on every node. */
  private async readInput(file: string, emit: Job["emit"]): Promise<Input> {
    let input: Input;
    try {
      // O_NONBLOCK: a FIFO must not hang the open (regular files ignore the flag). Synchronous:
      // a small file costs less to read than the hand-offs to libuv's thread pool would.
      const fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
      try {
        const st = fstatSync(fd);
        if (!st.isFile())
          throw Object.assign(new Error("not a regular file"), { code: "not a regular file" });
        input = { size: st.size, mtimeMs: st.mtimeMs };
        if (st.size <= WHOLE_FILE_BYTES) {
          input.bytes = readFileSync(fd);
          input.size = input.bytes.length;
        }
      } finally {
        closeSync(fd);
      }
      // With a local cache the file is hashed first, to look it up. Otherwise it goes straight
      // to a node, hashed as it is sent: one read of the file.
      if (this.opts.cacheDir) {
        emit("hashing");
        const hashed = input.bytes ? createHash("sha256").update(input.bytes) : (await hashFile(file)).hash;
        input.hash = hashed;
        input.sha256 = hashed.copy().digest("hex");
      }
    } catch (err) {
      const reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      throw new ClientError("LOCAL_IO", `cannot read ${file}: ${reason}`);
    }
    return input;
  }

  /** What a signature of this file is checked with. */
  private inputHash(job: Job): InputHash {
    const { input, file } = job;
    const sha256 = input.hash ?? createHash("sha256").update(input.bytes ?? Buffer.alloc(0));
    const rehash = async (algorithm: string) =>
      input.bytes ? createHash(algorithm).update(input.bytes) : rehashFile(file, algorithm);
    const whole = async () => input.bytes ?? readFile(file);
    return { sha256, rehash, whole };
  }

  private async fromCache(job: Job): Promise<SignResult | undefined> {
    const { format, input } = job;
    if (job.scan) return this.fromFileCache(job, job.scan);
    const cached = input.sha256 ? await this.cacheGet(format, input.sha256) : undefined;
    if (!cached) return undefined;
    // A cached signature is checked like a fresh one: the key may have changed since.
    if ((await job.check(cached, this.inputHash(job))) !== undefined) return undefined;
    return this.finish(job, cached, "local-cache");
  }

  /** A signature that verified: written, cached, and the token that got it kept. */
  private async accept(
    job: Job,
    got: { signature: Buffer; node: string; source: ResultSource },
  ): Promise<SignResult> {
    job.emit("downloading", got.node);
    const result = await this.finish(job, got.signature, got.source);
    if (job.tokenGeneration === this.tokenGeneration) await this.commitToken();
    return result;
  }

  /**
   * A signed file (embedded format) kept in the cache from an earlier run: checked again as it
   * is copied beside the output (the key may have changed since), then renamed into place.
   */
  private async fromFileCache(job: Job, scan: () => OutputScan): Promise<SignResult | undefined> {
    const path = job.input.sha256 ? this.cachePath(job.format, job.input.sha256) : undefined;
    if (!path) return undefined;
    const mode = this.outputMode(job); // before the handle is opened: it may throw LOCAL_IO
    // The digest recorded beside it: a file cut short by a crash (or without one) is not used.
    const sha256 = (await readFile(`${path}${CACHED_DIGEST}`, "utf8").catch(() => "")).trim();
    if (!/^[0-9a-f]{64}$/.test(sha256)) return undefined;
    const cached = await open(path, "r").catch(() => undefined);
    if (!cached) return undefined;
    const target = { output: job.output, mode, scan: scan(), sha256, from: "the cache" };
    const got = await receiveSignedFile(cached.createReadStream(), target).catch((err: unknown) => {
      if (err instanceof ClientError && err.code === "LOCAL_IO") throw err;
      return undefined; // unreadable: signed again
    });
    return got && "file" in got ? this.finishFile(job, got.file, "local-cache", sha256) : undefined;
  }

  /** An embedded format's signed file, checked on its way to disk: renamed into place, cached. */
  private async acceptFile(
    job: Job,
    got: { signedFile: PendingFile; sha256: string; node: string; source: ResultSource },
  ): Promise<SignResult> {
    const result = await this.finishFile(job, got.signedFile, got.source, got.sha256);
    if (job.tokenGeneration === this.tokenGeneration) await this.commitToken();
    return result;
  }

  /** Cached first, then renamed over the output: a failure leaves the output as it was. */
  private async finishFile(
    job: Job,
    signed: PendingFile,
    source: ResultSource,
    sha256: string,
  ): Promise<SignResult> {
    const { file, format, output, input } = job;
    try {
      const cachePath = input.sha256 ? this.cachePath(format, input.sha256) : undefined;
      if (source !== "local-cache" && cachePath) {
        await mkdir(join(this.opts.cacheDir as string, format), { recursive: true });
        await copyFileAtomic(signed.tempPath, cachePath);
        await writeFileAtomic(`${cachePath}${CACHED_DIGEST}`, `${sha256}\n`);
      }
      await signed.commit();
    } catch (err) {
      await signed.discard();
      const reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      throw new ClientError("LOCAL_IO", `cannot write ${output}: ${reason}`);
    }
    return { file, format, output, source, retries: job.retries, durationMs: Date.now() - job.started };
  }

  /** A signed file replacing its input (--in-place) keeps the input's mode: an executable stays one. */
  private outputMode(job: Job): number | undefined {
    if (resolve(job.output) !== resolve(job.file)) return undefined;
    try {
      return statSync(job.file).mode & 0o777;
    } catch (err) {
      const reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      throw new ClientError("LOCAL_IO", `cannot read ${job.file}: ${reason}`);
    }
  }

  /**
   * Streams a node's 200 of an embedded format to disk beside the output, checked by its
   * X-SHA256-Digest and the format's scan; a file that fails either, or breaks off, is removed
   * and asked for again (`next`: after an upload, the poll), elsewhere first.
   */
  private async receiveFile(
    job: Job,
    node: string,
    answer: { headers: HttpAnswer["headers"]; stream: Readable },
    next: Step,
    source: ResultSource,
  ): Promise<Outcome> {
    job.emit("downloading", node);
    const named = answer.headers["x-sha256-digest"];
    const sha256 = typeof named === "string" && /^[0-9a-f]{64}$/.test(named) ? named : "(none)";
    const scan = (job.scan as () => OutputScan)();
    // A signature adds kilobytes to a file; an MSI's may move its sectors about. Never gigabytes.
    const maxBytes = 2 * job.input.size + 16 * 1024 * 1024;
    let mode: number | undefined;
    try {
      mode = this.outputMode(job);
    } catch (err) {
      answer.stream.destroy(); // unread, it would hold the connection to the deadline
      throw err;
    }
    const target = { output: job.output, mode, scan, sha256, from: node, maxBytes };
    let got: ReceivedFile;
    try {
      got = await receiveSignedFile(answer.stream, target);
    } catch (err) {
      if (!(err instanceof TransportError)) throw err;
      return { next, verdict: classifyNetworkError(err) };
    }
    if ("file" in got) return { signedFile: got.file, sha256: got.sha256, node, source };
    if (got.refused === "signature") job.unverified = true;
    const reason =
      got.refused === "signature"
        ? `sent a signed file that does not verify with the key from ${job.keyFrom}: ${got.why}`
        : got.why;
    return { next, verdict: { kind: "retry", reason, demote: true } };
  }

  private async finish(job: Job, signature: Buffer, source: ResultSource): Promise<SignResult> {
    const { file, format, output, input } = job;
    try {
      await writeFileAtomic(output, signature, this.outputMode(job));
      if (source !== "local-cache" && input.sha256) await this.cachePut(format, input.sha256, signature);
    } catch (err) {
      const reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      throw new ClientError("LOCAL_IO", `cannot write ${output}: ${reason}`);
    }
    return { file, format, output, source, retries: job.retries, durationMs: Date.now() - job.started };
  }

  /** Uploads the file (holding the nonce chain); the answer may carry the signature already. */
  private async stepUpload(job: Job): Promise<Outcome> {
    job.emit("uploading", this.nodes.current);
    const up = await this.upload(job);
    if (up.hash) job.input.hash = up.hash;
    if (up.sha256) job.input.sha256 = up.sha256;
    if (up.verdict.kind !== "ok") return { next: "upload", verdict: up.verdict };
    job.alreadySigned = up.cached;
    job.uploaded = true;
    job.refreshes = 0;
    const source = up.cached ? "cluster-cache" : "signed";
    if (up.file) return this.receiveFile(job, up.node, up.file, "poll", source);
    if (up.signature) return { signature: up.signature, node: up.node, source };
    job.emit("signing", up.node);
    return { next: "poll" };
  }

  /** Asks a node for the signature: to look it up before uploading, or after the upload. */
  private async stepFetch(job: Job, node: string, step: "lookup" | "poll"): Promise<Outcome> {
    job.emit(step === "poll" ? "signing" : "checking", node);
    const wait = step === "poll" ? (this.opts.pollWaitSeconds ?? 10) : 0;
    const res = await this.get(job, node, wait);
    if (res.status === 200 && res.stream) {
      const source = job.uploaded && !job.alreadySigned ? "signed" : "cluster-cache";
      return this.receiveFile(job, node, { headers: res.headers, stream: res.stream }, step, source);
    }
    if (res.status === 200) {
      if (res.headers["x-sha256-digest"] !== sha256hex(res.body)) {
        const reason = `${node} sent a signature that does not match its X-SHA256-Digest`;
        return { next: step, verdict: { kind: "retry", reason, demote: true } };
      }
      return {
        signature: res.body,
        node,
        source: job.uploaded && !job.alreadySigned ? "signed" : "cluster-cache",
      };
    }
    if (res.status === 404 && res.headers["x-pending"] === "True") {
      // Being signed (maybe on another node): keep polling; ?wait does the pacing.
      job.attempt = 0;
      job.uploaded = true;
      if (wait === 0) await sleep(Math.min(1000, job.deadline.remainingMs));
      return { next: "poll" };
    }
    if (res.status === 404 && step === "lookup") return { next: "upload" };
    if (res.status === 404) return this.lostAfterUpload(job);
    const err = apiError(res.body);
    const verdict = classifyAnswer({
      status: res.status,
      ...err,
      retryAfter: res.headers["retry-after"] as string,
      location: res.headers.location as string,
    });
    return { next: err.code === "SIGNING_FAILED" ? "upload" : step, verdict };
  }

  /**
   * Uploaded, then lost (a node died, Redis restarted, or the node that holds it during an
   * outage is not this one): upload again, paced and bounded.
   */
  private lostAfterUpload(job: Job): Outcome {
    if (++job.reuploads > MAX_REUPLOADS) {
      const what = `${basename(job.file)} (${job.format})`;
      throw new ClientError("GAVE_UP", `${what}: its signature was lost ${MAX_REUPLOADS} times`);
    }
    const reason = "the signature was lost after the upload; uploading again";
    return { next: "upload", verdict: { kind: "retry", reason, demote: false } };
  }

  /** A failed step: refuse, fetch a new token, or wait and try again, within the deadline. */
  private async afterFailure(job: Job, verdict: Verdict, node: string): Promise<void> {
    const what = `${basename(job.file)} (${job.format})`;
    if (verdict.kind === "ok") return;
    if (verdict.kind === "mistake") throw new ClientError("CONFIG", `node ${node} ${verdict.reason}`);
    if (verdict.kind === "fail")
      throw new ClientError("REFUSED", `${what} refused by ${node}: ${verdict.reason}`);
    if (verdict.kind === "new-token") {
      await this.newToken(job, verdict.reason, node);
      return;
    }
    job.retries++;
    this.retriesTotal++;
    job.lastFailure = `${node}: ${verdict.reason}`;
    if (verdict.demote) this.nodes.demote(node);
    // Another node may serve now: a Retry-After is for this node, not a reason to sleep.
    const alone = this.nodes.all.length === 1;
    const delay = Math.max(
      alone ? (verdict.retryAfterMs ?? 0) : 0,
      backoffMs(job.attempt++, this.opts.random),
    );
    if (delay >= job.deadline.remainingMs) {
      const code = job.unverified ? "UNVERIFIED" : "GAVE_UP";
      const last = job.lastFailure;
      throw new ClientError(
        code,
        `${what}: gave up at the deadline after ${job.retries} retries; last error: ${last}`,
      );
    }
    job.emit("retrying", node, verdict.reason);
    await sleep(delay);
  }

  private async newToken(job: Job, reason: string, node: string): Promise<void> {
    if (!this.opts.issuer) {
      const how = reason.includes("NONCE_MISMATCH")
        ? NONCE_LOST
        : "fetch a new one with `signtool token` (or give --token-from issuer credentials)";
      throw new ClientError("TOKEN_REJECTED", `the token was rejected (${reason}): ${how}`);
    }
    if (++job.refreshes > MAX_TOKEN_REFRESHES) {
      const msg = `even a freshly fetched token was rejected (${reason}): check the nodes' clocks and token.secrets`;
      throw new ClientError("TOKEN_REJECTED", msg);
    }
    job.emit("token", node, reason);
    await this.refreshToken(job.tokenGeneration, job.deadline);
  }

  private get(job: Job, node: string, wait: number): Promise<HttpAnswer> {
    const path = `/sign/${encodeURIComponent(job.format)}/${job.input.sha256}${wait ? `?wait=${wait}` : ""}`;
    return send({
      agent: this.agentFor(node),
      method: "GET",
      url: `${node}${path}`,
      timeoutMs: job.deadline.cap(this.timeout() + wait * 1000 + this.signedFileMs(job)),
      ...this.streamSignedFile(job),
      ...this.tls(),
    });
  }

  /** An embedded format's 200 is the whole signed file: streamed to disk, never read into memory. */
  private streamSignedFile(job: Job): { streamIf?: (status: number) => boolean } {
    return job.scan ? { streamIf: (status) => status === 200 } : {};
  }

  /** Time for a signed file's bytes (about its input's size) to arrive, as an upload is given. */
  private signedFileMs(job: Job): number {
    return job.scan ? Math.ceil(job.input.size / (1024 * 1024)) * 1000 : 0;
  }

  /**
   * One upload, holding the nonce chain until a node answers. A transport failure (the answer
   * may have been lost after the node advanced the chain) is retried on the next node with the
   * same nonce, which nodes accept once more for the same file; no other upload may take the
   * chain in between, or it would present a nonce the cluster already consumed.
   */
  private async upload(job: Job): Promise<{
    verdict: Verdict;
    node: string;
    sha256?: string;
    hash?: Hash;
    cached: boolean;
    signature?: Buffer;
    /** An embedded format's signed file, in the upload's answer: its stream, unread. */
    file?: { headers: HttpAnswer["headers"]; stream: Readable };
  }> {
    const { file, input: d } = job;
    const token = await this.currentToken(job.deadline);
    job.tokenGeneration = this.tokenGeneration;
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
          res = await send(this.uploadRequest(job, node, form));
        } catch (err) {
          if (err instanceof LocalFileError) throw new ClientError("LOCAL_IO", err.message);
          const verdict = classifyNetworkError(err);
          if (verdict.kind !== "retry") return { result: { verdict, node, cached: false } };
          await this.pauseWithinUpload(job, node, verdict.reason, attempt);
          continue;
        }
        return this.uploadAnswered(node, res, form, attempt, Boolean(job.scan));
      }
    });
  }

  /** The upload's POST to `node`: the form, the wait, and a time limit that grows with the file. */
  private uploadRequest(job: Job, node: string, form: MultipartUpload): HttpRequest {
    const size = job.input.size;
    return {
      agent: this.agentFor(node),
      method: "POST",
      // A short ?wait: the node answers with the signature it makes within milliseconds,
      // sparing a GET; short, because the answer holds this token's nonce chain. An
      // embedded format's signed file, when signed within it, is the answer's body: the
      // chain is let go at its headers, and the file streams to disk after.
      // digest=sha256: files are named by sha256 only, so the node hashes nothing else.
      url: `${node}/sign/${encodeURIComponent(job.format)}?wait=${UPLOAD_WAIT_SECONDS}&digest=sha256`,
      headers: {
        "Content-Type": form.contentType,
        "Content-Length": form.contentLength,
        // An embedded format's signed file may come as the answer itself (the node asks).
        Accept: "application/octet-stream, application/json",
      },
      body: form.body,
      // With an embedded format's signed file in the answer, its bytes come back too.
      timeoutMs: job.deadline.cap(
        this.timeout() + Math.ceil(size / (1024 * 1024)) * 1000 + this.signedFileMs(job),
      ),
      ...this.streamSignedFile(job),
      ...this.tls(),
    };
  }

  /** A transport failure during an upload: the next node, with the same nonce, after a pause. */
  private async pauseWithinUpload(job: Job, node: string, reason: string, attempt: number): Promise<void> {
    this.nodes.demote(node);
    const delay = backoffMs(attempt, this.opts.random);
    if (delay >= job.deadline.remainingMs) {
      const what = `${basename(job.file)} (${job.format})`;
      throw new ClientError(
        "GAVE_UP",
        `${what}: gave up at the deadline after ${attempt} retries; last error: ${node}: ${reason}`,
      );
    }
    job.retries++;
    this.retriesTotal++;
    job.emit("retrying", node, reason);
    await sleep(delay);
  }

  private uploadAnswered(
    node: string,
    res: HttpAnswer,
    form: ReturnType<typeof multipartUpload>,
    attempt: number,
    embedded: boolean,
  ) {
    const error = apiError(res.body);
    const refused = (): Verdict =>
      error.code === "NONCE_MISMATCH"
        ? this.opts.issuer
          ? { kind: "new-token", reason: `${res.status} NONCE_MISMATCH` }
          : { kind: "fail", reason: `${res.status} NONCE_MISMATCH: ${NONCE_LOST}` }
        : classifyAnswer({
            status: res.status,
            ...error,
            retryAfter: res.headers["retry-after"] as string,
            location: res.headers.location as string,
          });
    // ?wait on an embedded format: a 200 whose body is the signed file (X-Upload-Status says what the 202 would have).
    const accepted = res.status === 202 || (res.status === 200 && res.stream !== undefined);
    const verdict: Verdict = accepted ? { kind: "ok" } : refused();
    // Our nodes always say which nonce comes next, also when they refuse (then it is the
    // one presented); a proxy's or an impostor's answer says nothing we should keep.
    const next = res.headers["x-nonce"];
    const ours = accepted || error.code !== undefined;
    const keep = ours && typeof next === "string" && NONCE_SHAPE.test(next);
    const answer = res.status === 202 ? uploadAnswer(res.body) : {};
    const status = res.stream ? res.headers["x-upload-status"] : answer.status;
    const result = {
      verdict,
      node,
      // After a lost answer, "cached" is most likely this client's own earlier attempt.
      cached: status === "cached" && attempt === 0,
      ...(form.sentSha256 ? { sha256: form.sentSha256 } : {}),
      ...(form.sentHash ? { hash: form.sentHash } : {}),
      // A signed file only ever comes as the answer's body, streamed; never inside its JSON.
      ...(answer.signature && !embedded ? { signature: answer.signature } : {}),
      ...(res.stream ? { file: { headers: res.headers, stream: res.stream } } : {}),
    };
    return { result, ...(keep ? { next } : {}) };
  }

  /** Every listed node's key for `format`: they must agree; one that answers is enough. */
  private async fetchKey(format: string, deadline: Deadline): Promise<string> {
    for (let attempt = 0; ; attempt++) {
      const answers = await Promise.all(this.nodes.all.map((node) => this.askKey(node, format, deadline)));
      const served = new Map<string, string[]>();
      for (const a of answers) if ("text" in a) served.set(a.text, [...(served.get(a.text) ?? []), a.node]);
      if (served.size > 1) {
        const who = [...served].map(([text, nodes]) => `${nodes.join(", ")} serve ${keyDigest(text)}`);
        throw new ClientError(
          "CONFIG",
          `the nodes disagree on the ${format} key (${who.join("; ")}): pin the right one with --trusted-key ${format}=FILE`,
        );
      }
      const [text] = served.keys();
      if (text !== undefined) return text;
      const failed = answers.filter((a): a is { node: string; verdict: Verdict } => "verdict" in a);
      const final = failed.find((a) => a.verdict.kind === "mistake" || a.verdict.kind === "fail");
      if (final?.verdict.kind === "mistake")
        throw new ClientError("CONFIG", `node ${final.node} ${final.verdict.reason}`);
      if (final && failed.every((a) => a.verdict.kind === "fail"))
        throw new ClientError(
          "REFUSED",
          `the nodes do not serve a ${format} key: ${(final.verdict as { reason: string }).reason}`,
        );
      const delay = backoffMs(attempt, this.opts.random);
      if (delay >= deadline.remainingMs) {
        const last = failed.map((a) => `${a.node}: ${(a.verdict as { reason: string }).reason}`).join("; ");
        throw new ClientError(
          "GAVE_UP",
          `gave up at the deadline: no node served the ${format} key; last errors: ${last}`,
        );
      }
      this.retriesTotal++;
      await sleep(delay);
    }
  }

  private async askKey(
    node: string,
    format: string,
    deadline: Deadline,
  ): Promise<{ node: string; text: string } | { node: string; verdict: Verdict }> {
    try {
      const res = await send({
        agent: this.agentFor(node),
        method: "GET",
        url: `${node}/keys/${encodeURIComponent(format)}`,
        timeoutMs: deadline.cap(Math.min(this.timeout(), KEY_FETCH_TIMEOUT_MS)),
        maxBodyBytes: 1024 * 1024,
        ...this.tls(),
      });
      if (res.status === 200) return { node, text: res.body.toString("utf8").trim() };
      const err = apiError(res.body);
      const location = res.headers.location as string;
      return { node, verdict: classifyAnswer({ status: res.status, ...err, location }) };
    } catch (err) {
      return { node, verdict: classifyNetworkError(err) };
    }
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

  private async currentToken(deadline: Deadline): Promise<string> {
    if (this.token !== undefined) return this.token;
    try {
      this.token = (await readFile(this.opts.tokenFile, "utf8")).trim();
      if (!this.token) throw Object.assign(new Error("empty"), { code: "EMPTY" });
      return this.token;
    } catch (err) {
      this.token = undefined;
      if (this.opts.issuer) {
        await this.refreshToken(this.tokenGeneration, deadline);
        return this.token as unknown as string;
      }
      const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
      throw new ClientError(
        "TOKEN_FILE",
        `cannot use token file ${this.opts.tokenFile} (${code === "EMPTY" ? "it is empty" : code}): run the "download token" step (signtool token) first`,
      );
    }
  }

  /**
   * Fetches a new token once for all concurrent callers (those that saw generation `seen`
   * refused) and starts its nonce chain. Neither goes to the token and nonce files until the new
   * token has signed something that verifies: a node handing out tokens that do not work must
   * not overwrite a build machine's good ones.
   */
  private refreshToken(seen: number, deadline: Deadline): Promise<void> {
    if (this.refreshing) return this.refreshing;
    if (seen !== this.tokenGeneration) return Promise.resolve();
    this.refreshing = (async () => {
      const issuer = this.opts.issuer;
      if (!issuer) return;
      const token = await requestToken({
        ...issuer,
        nodes: this.nodes.all,
        deadline,
        ...this.tls(),
        ...(this.opts.random ? { random: this.opts.random } : {}),
      });
      await this.nonces.restart();
      this.token = token;
      this.tokenUncommitted = true;
      this.tokenGeneration++;
    })().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  /** The current token signed something that verifies: keep it, and its chain, in the files. */
  private async commitToken(): Promise<void> {
    if (!this.tokenUncommitted || this.token === undefined) return;
    this.tokenUncommitted = false;
    await writeFileAtomic(this.opts.tokenFile, this.token, 0o600);
    await this.nonces.commit();
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
