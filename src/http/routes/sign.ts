import { createHash } from "node:crypto";
import { type Request, type Response, Router } from "express";
import type { Logger } from "pino";
import { hasCode } from "../../errors.js";
import type { NodeMetrics } from "../../metrics/node-metrics.js";
import {
  KEY_BACKEND_JOB_ERROR,
  type SigningService,
  type Slot,
  type Submitted,
  unsupportedInputReason,
} from "../../signing/service.js";
import type { FormatName, SpooledInput } from "../../signing/signer.js";
import type { Lookup, SignedResult } from "../../store/jobs.js";
import { NONCE_SHAPE } from "../../tokens/nonce.js";
import { type TokenService, tokenHash, type VerifiedToken } from "../../tokens/service.js";
import { clientIp } from "../client-ip.js";
import { ApiError, tokenError } from "../errors.js";
import type { Lifecycle } from "../lifecycle.js";
import { type ReceivedFile, type ReceivedUpload, receiveUpload, UNREAD_BODY_CODES } from "../multipart.js";
import type { RateLimiter } from "../rate-limit.js";
import type { UploadPaceLimits } from "../upload-pace.js";
import { otherMethodsRefused } from "./methods.js";
import { type ResultRouteDeps, serveFileResult, serveHeldResult } from "./results.js";

/** One enabled format's limits (`signing.formats.<name>`). */
export interface FormatLimits {
  /** Largest file signed, bytes. */
  maxSize: number;
  /** The names an upload's file may have. */
  filenamePattern: RegExp;
}

/**
 * What the upload and result routes (`POST /sign/:format`, `GET /sign/...`) use: the node's parts,
 * built by startNode.
 */
export interface SignRouteDeps extends ResultRouteDeps {
  tokens: TokenService;
  metrics: NodeMetrics;
  lifecycle: Lifecycle;
  signPerIp: RateLimiter;
  signPerToken: RateLimiter;
  signing: SigningService;
  /** The enabled formats: no entry, UNKNOWN_FORMAT. */
  limits: ReadonlyMap<FormatName, FormatLimits>;
  /** The longest `?wait=` a client may ask for (`signing.maxWait`). */
  maxWaitSeconds: number;
  uploadPace: UploadPaceLimits;
  log: Logger;
}

// Multipart framing around the file: an upload this much over the limit is refused unread.
const MULTIPART_OVERHEAD = 64 * 1024;

/** signing_requests_total{outcome} for a refused upload: a small fixed set. */
function outcomeOf(err: ApiError): string {
  switch (err.code) {
    case "OVERLOADED":
      return "overloaded";
    case "RATE_LIMITED":
      return "rate_limited";
    case "STORE_UNAVAILABLE":
    case "STORE_RECOVERING":
    case "SHUTTING_DOWN":
    case "KEY_BACKEND_UNAVAILABLE":
      return "unavailable";
    default:
      return err.status < 500 ? "rejected" : "error";
  }
}

function keyBackendUnavailable(): ApiError {
  const message = "the node signing this file lost its key backend: upload it again, to another node";
  return new ApiError("KEY_BACKEND_UNAVAILABLE", message, 1);
}

/** What a client asking for a failed job is told: upload again (elsewhere), or that the format cannot sign it. */
function failedJobAnswer(jobError: string): ApiError {
  if (jobError === KEY_BACKEND_JOB_ERROR) return keyBackendUnavailable();
  const reason = unsupportedInputReason(jobError);
  if (reason !== undefined) return new ApiError("UNSUPPORTED_INPUT", reason);
  return new ApiError("SIGNING_FAILED", "signing this file failed: upload it again");
}

/**
 * A ?wait that saw its job fail: a lost key backend (upload again elsewhere) or content the
 * format cannot sign is answered now; any other failure leaves the 202, and the GET says it.
 */
function throwUnlessPlainFailure(found: Lookup): void {
  if (found.kind !== "job" || found.job.state !== "failed") return;
  const answer = failedJobAnswer(found.job.error);
  if (answer.code !== "SIGNING_FAILED") throw answer;
}

/**
 * An embedded upload's ?wait answers with the signed file only to a client that lists
 * `application/octet-stream` in Accept (today's signtool, signing-admin); classic clients and
 * older signtools expect the 202 and GET the file.
 */
function acceptsFile(req: Request): boolean {
  return (req.get("accept") ?? "").split(",").some((entry) => {
    const [type, ...params] = entry.split(";").map((p) => p.trim().toLowerCase());
    // q=0 is "not acceptable" (RFC 9110 §12.4.2): a client saying so gets the 202.
    const refused = params.some((p) => /^q=0(\.0{0,3})?$/.test(p.replace(/\s+/g, "")));
    return type === "application/octet-stream" && !refused;
  });
}

function waitSeconds(req: Request, max: number): number {
  const raw = req.query.wait;
  if (raw === undefined) return 0;
  // Decimal only: Number() would also read "0x10", "1e2" and "" as seconds.
  if (typeof raw !== "string" || !/^\d{1,9}(\.\d{1,3})?$/.test(raw))
    throw new ApiError("BAD_REQUEST", "wait must be a decimal number of seconds");
  return Math.min(Number(raw), max);
}

/** `?digest=sha256`: the client names this file by its sha256 only, so the node skips sha1. */
function digestParam(req: Request): "sha1" | "sha256" | undefined {
  const raw = req.query.digest;
  if (raw === undefined) return undefined;
  if (raw === "sha256" || raw === "sha1") return raw;
  throw new ApiError("BAD_REQUEST", "digest must be sha1 or sha256");
}

function abortOnClose(req: Request, res: Response): AbortSignal {
  const ctl = new AbortController();
  // Only a client that left before its answer aborts: abort() builds a DOMException, too
  // costly to pay on every finished request.
  res.on("close", () => {
    if (!res.writableFinished) ctl.abort();
  });
  req.on("aborted", () => ctl.abort());
  return ctl.signal;
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
const UNSAFE_FILENAME = /[/\\\u0000-\u001f\u007f]/;

function checkFilename(name: string, pattern: RegExp): void {
  // Path separators and control characters are refused whatever the configured pattern says.
  if (!name || UNSAFE_FILENAME.test(name) || name === "." || name === ".." || !pattern.test(name)) {
    throw new ApiError(
      "BAD_FILENAME",
      `filename must be a plain file name (no path) matching this format's pattern ${pattern.source}`,
    );
  }
}

/** What an upload asked for in its query string. */
interface UploadOptions {
  wait: number;
  sha256Only: boolean;
}

/** The form of an upload, checked: everything the token check and the signer need. */
interface UploadForm {
  token: string;
  nonce: string;
  file: ReceivedFile;
  filename: string;
}

/** The multipart fields, validated in the order a client can act on; X-Nonce echoes a valid nonce. */
function readForm(res: Response, { fields, file }: ReceivedUpload, limits: FormatLimits, o: UploadOptions) {
  const token = fields.token;
  const nonce = fields.nonce?.trim();
  if (token === undefined || nonce === undefined) {
    throw new ApiError("BAD_REQUEST", "the form needs token and nonce fields (nonce may be empty)");
  }
  // Only something shaped like one of our nonces is echoed (and it must be a valid header).
  if (!NONCE_SHAPE.test(nonce)) throw new ApiError("NONCE_MISMATCH", "nonce is not one this cluster issued");
  res.set("X-Nonce", nonce);
  if (!file) throw new ApiError("BAD_REQUEST", "the form needs a filedata part");
  if (file.partFilename && UNSAFE_FILENAME.test(file.partFilename))
    throw new ApiError("BAD_FILENAME", "the file part's filename has a path: send the plain file name");
  const filename = fields.filename ?? file.partFilename;
  checkFilename(filename, limits.filenamePattern);
  const sha1 = fields.sha1?.toLowerCase();
  const sha256 = fields.sha256?.toLowerCase();
  if (sha1 === undefined && sha256 === undefined)
    throw new ApiError("BAD_REQUEST", "the form needs a sha1 field");
  if (sha1 !== undefined && o.sha256Only)
    throw new ApiError("BAD_REQUEST", "an upload with ?digest=sha256 carries no sha1 field");
  if ((sha1 !== undefined && sha1 !== file.sha1) || (sha256 !== undefined && sha256 !== file.sha256)) {
    throw new ApiError("DIGEST_MISMATCH", "the digest in the form does not match the uploaded file");
  }
  return { token, nonce, file, filename } satisfies UploadForm;
}

/** An upload as the request asks it: its format, that format's limits, and the query options. */
interface UploadRequest {
  req: Request;
  res: Response;
  format: FormatName;
  limits: FormatLimits;
}

/** Refusals that need no body are answered before reading it, and the connection closed. */
function refuseUnread(res: Response, err: ApiError): never {
  res.set("Connection", "close");
  throw err;
}

/**
 * One upload, in the steps its answer goes through: admission (headers only), receive (the
 * body, with the token checked at the file's first byte), readForm, the token's store check,
 * submit, answer. A step that refuses throws the ApiError the client gets.
 */
class Uploads {
  constructor(private readonly deps: SignRouteDeps) {}

  formatOf(req: Request): { format: FormatName; limits: FormatLimits } {
    const format = req.params.format as FormatName;
    const limits = this.deps.limits.get(format);
    if (!limits) throw new ApiError("UNKNOWN_FORMAT", `format ${String(format).slice(0, 32)} is not enabled`);
    return { format, limits };
  }

  /** The whole upload; resolves to its outcome for signing_requests_total. */
  async upload(u: UploadRequest): Promise<string> {
    const { req, res } = u;
    const o = { wait: waitSeconds(req, this.deps.maxWaitSeconds), sha256Only: digestParam(req) === "sha256" };
    const slot = await this.admit(u);
    let handedOver = false;
    let spooled: SpooledInput | undefined;
    try {
      const { received, early } = await this.receive(u, o);
      spooled = received.file?.input.file;
      const form = readForm(res, received, u.limits, o);
      const check = await this.checkToken(u, form, early);
      handedOver = true;
      const submitted = await this.submit(u, form, check, slot);
      const embedded = this.deps.signing.signer(u.format).kind === "embedded";
      const fileInAnswer = o.wait > 0 && embedded && acceptsFile(u.req);
      if (fileInAnswer && (await this.signedFileWithin(u, form.file.sha256, o.wait, submitted)))
        return submitted.outcome;
      const signed =
        o.wait > 0 && !embedded
          ? await this.signatureWithin(u, form.file.sha256, o.wait, submitted)
          : undefined;
      res.status(202).json({
        status: submitted.outcome,
        sha1: form.file.sha1,
        sha256: form.file.sha256,
        ...(signed ? { signature: signed.output.toString("utf8") } : {}),
      });
      return submitted.outcome;
    } finally {
      // Refused before the signing service took it: the upload's temp file (embedded formats) goes too.
      if (!handedOver) {
        slot.release();
        await spooled?.remove();
      }
    }
  }

  /**
   * Admission: everything decided from the headers alone, then a place in the pending set,
   * waiting in line for one if the node is full; the body stays unread until then.
   */
  private async admit({ req, res, format, limits }: UploadRequest): Promise<Slot> {
    const { deps } = this;
    if (deps.lifecycle.shuttingDown)
      refuseUnread(res, new ApiError("SHUTTING_DOWN", "this node is shutting down: use another node", 1));
    const ip = clientIp(req);
    const ipWait = deps.signPerIp.take(ip);
    if (ipWait !== undefined)
      refuseUnread(res, new ApiError("RATE_LIMITED", "too many uploads from this address", ipWait / 1000));
    if (!req.is("multipart/form-data"))
      throw new ApiError("BAD_REQUEST", "expected a multipart/form-data body");
    if (Number(req.get("content-length") ?? 0) > limits.maxSize + MULTIPART_OVERHEAD) {
      const tooLarge = `file is larger than this format's limit of ${limits.maxSize} bytes`;
      refuseUnread(res, new ApiError("FILE_TOO_LARGE", tooLarge));
    }
    const expiresAt = deps.signing.signer(format).expiresAt;
    if (expiresAt && Date.now() >= expiresAt.getTime()) {
      const expired = `this format's signing key expired at ${expiresAt.toISOString()}: the nodes need a renewed key`;
      refuseUnread(res, new ApiError("KEY_EXPIRED", expired));
    }
    const admitted = await deps.signing.admit(ip, abortOnClose(req, res));
    if ("slot" in admitted) return admitted.slot;
    if (admitted.refused === "closed")
      refuseUnread(res, new ApiError("SHUTTING_DOWN", "this node is shutting down: use another node", 1));
    const busy = "this node has as much work as it may take: retry, or use another node";
    refuseUnread(res, new ApiError("OVERLOADED", busy, 1));
  }

  /**
   * The local token check (MAC, expiry, IP, format): when the token field comes before the
   * file, at the file's first byte, so a forged token is answered before its upload is read.
   */
  private verifyToken({ req, res, format }: UploadRequest, fields: Readonly<Record<string, string>>) {
    const verdict = this.deps.tokens.verifyLocally(fields.token as string, clientIp(req), format);
    if (verdict.ok) return verdict;
    const nonce = fields.nonce?.trim();
    if (nonce !== undefined && NONCE_SHAPE.test(nonce)) res.set("X-Nonce", nonce);
    return tokenError(verdict.result, undefined, clientIp(req));
  }

  private async receive(u: UploadRequest, o: UploadOptions) {
    let early: VerifiedToken | undefined;
    const beforeFile = (fields: Readonly<Record<string, string>>) => {
      if (fields.token === undefined) return undefined;
      const verdict = this.verifyToken(u, fields);
      if (verdict instanceof ApiError) return verdict;
      early = verdict;
      return undefined;
    };
    try {
      const limits = {
        maxSize: u.limits.maxSize,
        sha1: !o.sha256Only,
        needs: this.deps.signing.signer(u.format).needs,
        pace: this.deps.uploadPace,
        beforeFile,
      };
      return { received: await receiveUpload(u.req, limits), early };
    } catch (err) {
      if (err instanceof ApiError && UNREAD_BODY_CODES.has(err.code)) u.res.set("Connection", "close");
      throw err;
    }
  }

  /** The store half of the token check, after the per-token rate limit (keyed on its id). */
  private async checkToken(u: UploadRequest, form: UploadForm, early?: VerifiedToken) {
    const verdict = early ?? this.verifyToken(u, { token: form.token, nonce: form.nonce });
    if (verdict instanceof ApiError) throw verdict;
    const tokenWait = this.deps.signPerToken.take(verdict.claims.id);
    if (tokenWait !== undefined)
      throw new ApiError("RATE_LIMITED", "too many uploads with this token", tokenWait / 1000);
    const check = await this.deps.tokens.checkStored(verdict, {
      value: form.nonce,
      sha256: form.file.sha256,
    });
    if (check.ok && check.nextNonce !== undefined) u.res.set("X-Nonce", check.nextNonce);
    if (!check.ok) throw tokenError(check.result, check.retryAfterMs);
    return check;
  }

  /** Hands the received upload to the signing service (the slot is its from here on). */
  private async submit(
    u: UploadRequest,
    form: UploadForm,
    check: { claims: { id: string }; result: string },
    slot: Slot,
  ) {
    const { file, filename } = form;
    const hashed = tokenHash(check.claims.id);
    const submitted = await this.deps.signing
      .submit(u.format, { ...file, filename, tokenHash: hashed, clientIp: clientIp(u.req) }, slot)
      .catch((err: unknown) => {
        // The format's own words on why it cannot sign this content are for the client.
        if (hasCode(err, "UNSUPPORTED_INPUT")) throw new ApiError("UNSUPPORTED_INPUT", err.message);
        throw err;
      });
    const { format } = u;
    const { sha256, size: bytes } = file;
    this.deps.log.info({
      event: "upload",
      format,
      sha256,
      bytes,
      outcome: submitted.outcome,
      tokenCheck: check.result,
      tokenHash: hashed,
    });
    return submitted;
  }

  /**
   * ?wait: the signature itself (ready within milliseconds when this node makes it), which
   * spares the client its GET; when another node signs, waits for that one.
   */
  private async signatureWithin(
    { req, res, format }: UploadRequest,
    sha256: string,
    wait: number,
    { outcome, result }: Submitted,
  ): Promise<SignedResult | undefined> {
    const signed = result ? await result : undefined;
    if (signed || outcome === "cached") return signed;
    const { found } = await this.deps.signing.waitFor(format, sha256, wait * 1000, abortOnClose(req, res));
    throwUnlessPlainFailure(found);
    return found.kind === "signed" ? found.result : undefined;
  }

  /**
   * ?wait on an embedded upload: the signed file itself (200, streamed from this node's spool,
   * with the headers `GET /sign/...` sends and `X-Upload-Status`) once it is signed within the
   * wait. True when it was sent; false leaves the 202 to the caller: not signed in time, or
   * held by another node (the client's GET streams it from there).
   */
  private async signedFileWithin(
    { req, res, format }: UploadRequest,
    sha256: string,
    wait: number,
    { outcome }: Submitted,
  ): Promise<boolean> {
    // Bounded by the wait, unlike a detached signature's: a large file takes its time to sign,
    // and the client holds its token's nonce chain until this answer's headers.
    const { found } = await this.deps.signing.waitFor(format, sha256, wait * 1000, abortOnClose(req, res));
    throwUnlessPlainFailure(found);
    if (found.kind !== "file") return false;
    return serveHeldResult(this.deps, res, format, sha256, { "X-Upload-Status": outcome });
  }

  /** `GET /sign/:format/:digest`: the signature, pending, or unknown. */
  async fetch(req: Request, res: Response): Promise<void> {
    const { format } = this.formatOf(req);
    const digest = String(req.params.digest).toLowerCase();
    if (!/^([0-9a-f]{40}|[0-9a-f]{64})$/.test(digest)) {
      throw new ApiError("BAD_REQUEST", "digest must be the hex sha1 or sha256 of the input");
    }
    const wait = waitSeconds(req, this.deps.maxWaitSeconds);
    const { sha256, found } =
      wait > 0
        ? await this.deps.signing.waitFor(format, digest, wait * 1000, abortOnClose(req, res))
        : await this.deps.signing.lookup(format, digest);
    if (found.kind === "none")
      throw new ApiError("NOT_FOUND", "no signature for this digest: upload the file");
    if (found.kind === "job") {
      if (found.job.state === "failed") throw failedJobAnswer(found.job.error);
      res.set("X-Pending", "True").status(404).json({ status: "pending" });
      return;
    }
    if (found.kind === "file") return serveFileResult(this.deps, res, format, sha256 as string, found.file);
    const out = found.result.output;
    res.set({
      "Content-Type": this.deps.signing.signer(format).contentType,
      "X-SHA1-Digest": createHash("sha1").update(out).digest("hex"),
      "X-SHA256-Digest": createHash("sha256").update(out).digest("hex"),
    });
    res.status(200).send(out);
  }
}

/** The classic signing protocol: upload with `POST /sign/:format`, poll with `GET /sign/:format/:digest`. */
export function signRoutes(deps: SignRouteDeps): Router {
  const router = Router();
  const uploads = new Uploads(deps);
  router.post("/sign/:format", async (req: Request, res: Response) => {
    const { format, limits } = uploads.formatOf(req);
    let outcome = "error";
    try {
      outcome = await uploads.upload({ req, res, format, limits });
    } catch (err) {
      outcome = err instanceof ApiError ? outcomeOf(err) : "error";
      throw err;
    } finally {
      deps.metrics.requests.inc({ format, outcome });
    }
  });
  router.get("/sign/:format/:digest", (req: Request, res: Response) => uploads.fetch(req, res));
  otherMethodsRefused(router, "/sign/:format", ["POST"]);
  otherMethodsRefused(router, "/sign/:format/:digest", ["GET"]);
  return router;
}
