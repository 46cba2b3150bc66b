import type { IncomingMessage } from "node:http";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { type Request, type Response, Router } from "express";
import type { Logger } from "pino";
import type { FileResultSource, NodeMetrics } from "../../metrics/node-metrics.js";
import type { ResultStore } from "../../signing/results.js";
import type { FormatName } from "../../signing/signer.js";
import { DigestingStream } from "../../signing/spool.js";
import type { FileResult } from "../../store/jobs.js";
import { ApiError } from "../errors.js";
import type { Peers } from "../peers.js";
import { otherMethodsRefused } from "./methods.js";

/** What serving whole-file results takes: this node's spool and its way to the other nodes. */
export interface ResultRouteDeps {
  results: ResultStore;
  /** Undefined without `node.internalSecret`: then only the outputs held here are served. */
  peers: Peers | undefined;
  /** Counts where each output asked for came from (signing_file_result_fetches_total). */
  metrics: NodeMetrics;
  log: Logger;
}

const GONE = "the node holding this signed file no longer has it: upload the file again";

type OutputDigests = Pick<FileResult, "sha1" | "sha256" | "size">;

/** Passes an output through and fails the stream (cutting the response short) if its bytes are not the recorded ones. */
class VerifyingStream extends DigestingStream {
  constructor(private readonly file: OutputDigests) {
    super();
  }

  override _flush(done: (err?: Error | null) => void): void {
    const { sha1, sha256, size } = this.digests();
    const f = this.file;
    done(
      sha1 === f.sha1 && sha256 === f.sha256 && size === f.size ? null : new Error("output digest mismatch"),
    );
  }
}

/**
 * Streams an output with the classic protocol's headers (digests of the output); nothing is
 * held in memory beyond the streams' buffers. A stream that breaks after the headers went out
 * ends the connection, so the client never takes a partial file for a whole one.
 */
async function sendOutput(res: Response, log: Logger, body: Readable, file: OutputDigests): Promise<void> {
  res.status(200).set({
    "Content-Type": "application/octet-stream",
    "Content-Length": String(file.size),
    "X-SHA1-Digest": file.sha1,
    "X-SHA256-Digest": file.sha256,
  });
  try {
    await pipeline(body, new VerifyingStream(file), res);
  } catch (err) {
    res.destroy();
    log.warn({ event: "file_result_stream_failed", sha256: file.sha256, err: (err as Error).message });
  }
}

/** The owner's answer, unless its headers name another output than the record does. */
function sameOutput(upstream: IncomingMessage, file: FileResult): boolean {
  return (
    upstream.headers["x-sha1-digest"] === file.sha1 &&
    upstream.headers["x-sha256-digest"] === file.sha256 &&
    upstream.headers["content-length"] === String(file.size)
  );
}

function abortOnClose(res: Response): AbortSignal {
  const ctl = new AbortController();
  res.on("close", () => {
    if (!res.writableFinished) ctl.abort();
  });
  return ctl.signal;
}

/**
 * Streams the output this node's spool holds for an input, with `headers` besides the
 * output's own; false when it holds none (or its copy is damaged). What `GET /sign/...` and an
 * embedded upload's `?wait=` answer send, byte for byte and header for header.
 */
export async function serveHeldResult(
  deps: ResultRouteDeps,
  res: Response,
  format: string,
  inputSha256: string,
  headers: Record<string, string> = {},
): Promise<boolean> {
  const opened = await deps.results.open(format, inputSha256);
  if (!opened) return false;
  res.set(headers);
  await sendOutput(res, deps.log, opened.handle.createReadStream({ start: 0 }), opened.file);
  return true;
}

/**
 * `GET /sign/:format/:digest` for a whole-file result: from this node's spool when it holds
 * the output, else streamed through from its owner. An owner that is gone or no longer has it
 * is a plain 404 (the client uploads again), and the record is dropped so that upload signs.
 */
export async function serveFileResult(
  deps: ResultRouteDeps,
  res: Response,
  format: FormatName,
  inputSha256: string,
  file: FileResult,
): Promise<void> {
  const { results, peers, log } = deps;
  const fetched = (result: FileResultSource) => deps.metrics.fileResultFetches.inc({ format, result });
  if (await serveHeldResult(deps, res, format, inputSha256)) {
    fetched("local");
    return;
  }
  const aborted = abortOnClose(res);
  // This node is the owner and no longer has it; without the internal credential no peer can be asked.
  const upstream = results.owns(file)
    ? "missing"
    : peers
      ? await peers.fetchResult(file.owner, format, inputSha256, aborted)
      : "unreachable";
  if (aborted.aborted) {
    // The client hung up while the owner was asked: no answer to give, and no reason to drop the record.
    if (typeof upstream === "object") upstream.destroy();
    return;
  }
  if (typeof upstream === "object" && sameOutput(upstream, file)) {
    fetched("peer");
    return sendOutput(res, log, upstream, file);
  }
  if (typeof upstream === "object") {
    upstream.destroy();
    log.error({ event: "owner_sent_other_output", owner: file.owner, format, sha256: inputSha256 });
  }
  fetched(typeof upstream === "object" ? "missing" : upstream);
  await results.forget(format, inputSha256, file);
  throw new ApiError("NOT_FOUND", GONE);
}

const FORMAT = /^[a-z0-9-]{1,32}$/;
const SHA256 = /^[0-9a-f]{64}$/;

/** `GET /internal/results/:format/:sha256`: this node's spooled outputs, for its peers only. */
export function resultRoutes(deps: ResultRouteDeps): Router {
  const router = Router();
  router.get("/internal/results/:format/:sha256", async (req: Request, res: Response) => {
    if (!deps.peers?.authorized(req.get("authorization")))
      throw new ApiError(
        "BAD_CREDENTIALS",
        "this path is for the cluster's nodes, with their internal credential",
      );
    const format = String(req.params.format);
    const sha256 = String(req.params.sha256);
    if (!FORMAT.test(format) || !SHA256.test(sha256))
      throw new ApiError("BAD_REQUEST", "expected /internal/results/<format>/<input sha256>");
    if (!(await serveHeldResult(deps, res, format, sha256)))
      throw new ApiError("NOT_FOUND", "no such output on this node");
  });
  otherMethodsRefused(router, "/internal/results/:format/:sha256", ["GET"]);
  return router;
}
