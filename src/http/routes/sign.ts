import { createHash } from "node:crypto";
import { type Request, type Response, Router } from "express";
import type { Logger } from "pino";
import type { NodeMetrics } from "../../metrics/node-metrics.js";
import type { SigningService, Slot, Submitted } from "../../signing/service.js";
import type { FormatName } from "../../signing/signer.js";
import type { SignedResult } from "../../store/jobs.js";
import { NONCE_SHAPE } from "../../tokens/nonce.js";
import { type TokenService, tokenHash, type VerifiedToken } from "../../tokens/service.js";
import { clientIp } from "../client-ip.js";
import { ApiError, tokenError } from "../errors.js";
import type { Lifecycle } from "../lifecycle.js";
import { type ReceivedFile, type ReceivedUpload, receiveUpload, UNREAD_BODY_CODES } from "../multipart.js";
import type { RateLimiter } from "../rate-limit.js";
import type { UploadPaceLimits } from "../upload-pace.js";

export interface FormatLimits {
  maxSize: number;
  filenamePattern: RegExp;
}

export interface SignRouteDeps {
  tokens: TokenService;
  metrics: NodeMetrics;
  lifecycle: Lifecycle;
  signPerIp: RateLimiter;
  signPerToken: RateLimiter;
  signing: SigningService;
  limits: ReadonlyMap<FormatName, FormatLimits>;
  maxWaitSeconds: number;
  uploadPace: UploadPaceLimits;
  log: Logger;
}

// Multipart framing around the file: an upload this much over the limit is refused unread.
const MULTIPART_OVERHEAD = 64 * 1024;
const CONTENT_TYPES: Record<FormatName, string> = { gpg: "application/pgp-signature", sshsig: "text/plain" };

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
      return "unavailable";
    default:
      return err.status < 500 ? "rejected" : "error";
  }
}

function waitSeconds(req: Request, max: number): number {
  const raw = req.query.wait;
  if (raw === undefined) return 0;
  const n = typeof raw === "string" ? Number(raw) : Number.NaN;
  if (!Number.isFinite(n) || n < 0) throw new ApiError("BAD_REQUEST", "wait must be a number of seconds");
  return Math.min(n, max);
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

/** The classic signing protocol: upload with `POST /sign/:format`, poll with `GET /sign/:format/:digest`. */
export function signRoutes(deps: SignRouteDeps): Router {
  const router = Router();

  const formatOf = (req: Request): { format: FormatName; limits: FormatLimits } => {
    const format = req.params.format as FormatName;
    const limits = deps.limits.get(format);
    if (!limits) throw new ApiError("UNKNOWN_FORMAT", `format ${String(format).slice(0, 32)} is not enabled`);
    return { format, limits };
  };

  router.post("/sign/:format", async (req: Request, res: Response) => {
    const { format, limits } = formatOf(req);
    let outcome = "error";
    try {
      outcome = await upload(req, res, format, limits);
    } catch (err) {
      outcome = err instanceof ApiError ? outcomeOf(err) : "error";
      throw err;
    } finally {
      deps.metrics.requests.inc({ format, outcome });
    }
  });

  /** Refusals that need no body are answered before reading it, and the connection closed. */
  const refuseUnread = (res: Response, err: ApiError): never => {
    res.set("Connection", "close");
    throw err;
  };

  /** Admission: everything decided from the headers alone, then a place in the pending set. */
  const admit = (req: Request, res: Response, format: FormatName, limits: FormatLimits): Slot => {
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
    const slot = deps.signing.admit(ip);
    if (!slot) {
      const busy = "this node has as much work as it may take: retry, or use another node";
      refuseUnread(res, new ApiError("OVERLOADED", busy, 1));
    }
    return slot as Slot;
  };

  /**
   * The local token check (MAC, expiry, IP, format): when the token field comes before the
   * file, at the file's first byte, so a forged token is answered before its upload is read.
   */
  const verifyToken = (
    req: Request,
    res: Response,
    format: FormatName,
    fields: Readonly<Record<string, string>>,
  ) => {
    const verdict = deps.tokens.verifyLocally(fields.token as string, clientIp(req), format);
    if (verdict.ok) return verdict;
    const nonce = fields.nonce?.trim();
    if (nonce !== undefined && NONCE_SHAPE.test(nonce)) res.set("X-Nonce", nonce);
    return tokenError(verdict.result, undefined, clientIp(req));
  };

  const receive = async (
    req: Request,
    res: Response,
    format: FormatName,
    limits: FormatLimits,
    o: UploadOptions,
  ) => {
    let early: VerifiedToken | undefined;
    const beforeFile = (fields: Readonly<Record<string, string>>) => {
      if (fields.token === undefined) return undefined;
      const verdict = verifyToken(req, res, format, fields);
      if (verdict instanceof ApiError) return verdict;
      early = verdict;
      return undefined;
    };
    try {
      const received = await receiveUpload(req, {
        maxSize: limits.maxSize,
        sha1: !o.sha256Only,
        pace: deps.uploadPace,
        beforeFile,
      });
      return { received, early };
    } catch (err) {
      if (err instanceof ApiError && UNREAD_BODY_CODES.has(err.code)) res.set("Connection", "close");
      throw err;
    }
  };

  /** The store half of the token check, after the per-token rate limit (keyed on its id). */
  const checkToken = async (
    req: Request,
    res: Response,
    format: FormatName,
    form: UploadForm,
    early?: VerifiedToken,
  ) => {
    const verdict = early ?? verifyToken(req, res, format, { token: form.token, nonce: form.nonce });
    if (verdict instanceof ApiError) throw verdict;
    const tokenWait = deps.signPerToken.take(verdict.claims.id);
    if (tokenWait !== undefined)
      throw new ApiError("RATE_LIMITED", "too many uploads with this token", tokenWait / 1000);
    const check = await deps.tokens.checkStored(verdict, { value: form.nonce, sha256: form.file.sha256 });
    if (check.ok && check.nextNonce !== undefined) res.set("X-Nonce", check.nextNonce);
    if (!check.ok) throw tokenError(check.result, check.retryAfterMs);
    return check;
  };

  const upload = async (
    req: Request,
    res: Response,
    format: FormatName,
    limits: FormatLimits,
  ): Promise<string> => {
    const o = { wait: waitSeconds(req, deps.maxWaitSeconds), sha256Only: digestParam(req) === "sha256" };
    const slot = admit(req, res, format, limits);
    let handedOver = false;
    try {
      const { received, early } = await receive(req, res, format, limits, o);
      const form = readForm(res, received, limits, o);
      const check = await checkToken(req, res, format, form, early);
      handedOver = true;
      const tokenHashed = tokenHash(check.claims.id);
      const { file, filename } = form;
      const submitted = await deps.signing.submit(
        format,
        { ...file, filename, tokenHash: tokenHashed, clientIp: clientIp(req) },
        slot,
      );
      deps.log.info({
        event: "upload",
        format,
        sha256: file.sha256,
        bytes: file.size,
        outcome: submitted.outcome,
        tokenCheck: check.result,
        tokenHash: tokenHashed,
      });
      const signed =
        o.wait > 0 ? await signatureWithin(req, res, format, file.sha256, o.wait, submitted) : undefined;
      res.status(202).json({
        status: submitted.outcome,
        sha1: file.sha1,
        sha256: file.sha256,
        ...(signed ? { signature: signed.output.toString("utf8") } : {}),
      });
      return submitted.outcome;
    } finally {
      if (!handedOver) slot.release();
    }
  };

  /**
   * ?wait: the signature itself (ready within milliseconds when this node makes it), which
   * spares the client its GET; when another node signs, waits for that one.
   */
  const signatureWithin = async (
    req: Request,
    res: Response,
    format: FormatName,
    sha256: string,
    wait: number,
    { outcome, result }: Submitted,
  ): Promise<SignedResult | undefined> => {
    const signed = result ? await result : undefined;
    if (signed || outcome === "cached") return signed;
    const { found } = await deps.signing.waitFor(format, sha256, wait * 1000, abortOnClose(req, res));
    return found.kind === "signed" ? found.result : undefined;
  };

  router.get("/sign/:format/:digest", async (req: Request, res: Response) => {
    const { format } = formatOf(req);
    const digest = String(req.params.digest).toLowerCase();
    if (!/^([0-9a-f]{40}|[0-9a-f]{64})$/.test(digest)) {
      throw new ApiError("BAD_REQUEST", "digest must be the hex sha1 or sha256 of the input");
    }
    const wait = waitSeconds(req, deps.maxWaitSeconds);
    const { found } =
      wait > 0
        ? await deps.signing.waitFor(format, digest, wait * 1000, abortOnClose(req, res))
        : await deps.signing.lookup(format, digest);
    switch (found.kind) {
      case "signed": {
        const out = found.result.output;
        res.set({
          "Content-Type": CONTENT_TYPES[format],
          "X-SHA1-Digest": createHash("sha1").update(out).digest("hex"),
          "X-SHA256-Digest": createHash("sha256").update(out).digest("hex"),
        });
        res.status(200).send(out);
        return;
      }
      case "job":
        if (found.job.state === "failed")
          throw new ApiError("SIGNING_FAILED", "signing this file failed: upload it again");
        res.set("X-Pending", "True").status(404).json({ status: "pending" });
        return;
      case "none":
        throw new ApiError("NOT_FOUND", "no signature for this digest: upload the file");
    }
  });

  return router;
}
