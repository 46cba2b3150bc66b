import { createHash, type Hash } from "node:crypto";
import busboy from "busboy";
import type { Request } from "express";
import { ApiError, type ApiErrorCode } from "./errors.js";
import { UploadPace, type UploadPaceLimits } from "./upload-pace.js";

export interface UploadLimits {
  maxSize: number;
  /** Hash sha1 too: classic clients name files by it. False when the client said `?digest=sha256`. */
  sha1: boolean;
  pace: UploadPaceLimits;
  /**
   * Called with the fields sent so far when the file part begins: an error it returns ends the
   * upload there, unread (a forged token costs a few bytes, not an upload).
   */
  beforeFile?: (fields: Readonly<Record<string, string>>) => ApiError | undefined;
}

/** Refusals answered without reading the rest of the body: the connection is closed after. */
export const UNREAD_BODY_CODES: ReadonlySet<ApiErrorCode> = new Set(["FILE_TOO_LARGE", "REQUEST_TIMEOUT"]);

/** The `filedata` part, hashed while it arrived; its bytes are not kept anywhere. */
export interface ReceivedFile {
  size: number;
  sha256: string;
  /**
   * For clients that name files by sha1 (classic ones, whatever their field order). signtool
   * asks `?digest=sha256`, sparing the node a hash pass over every byte.
   */
  sha1?: string;
  /** The running SHA-256 of the bytes, not yet digested: what the signers sign. */
  hash: Hash;
  partFilename: string;
}

export interface ReceivedUpload {
  fields: Record<string, string>;
  file?: ReceivedFile;
}

const FIELD_LIMITS = { fields: 10, fieldSize: 8 * 1024, files: 1, parts: 12, headerPairs: 20 };

/** How much of a refused upload is read and dropped before its connection is cut. */
const BRIEF_DRAIN = { bytes: 64 * 1024 * 1024, ms: 2000 };

function drainBriefly(req: Request): void {
  let bytes = 0;
  const cut = () => req.socket.destroy();
  const timer = setTimeout(cut, BRIEF_DRAIN.ms);
  timer.unref();
  req.on("data", (chunk: Buffer) => {
    bytes += chunk.length;
    if (bytes > BRIEF_DRAIN.bytes) cut();
  });
  req.once("end", () => clearTimeout(timer));
  req.once("close", () => clearTimeout(timer));
  req.resume();
}

/**
 * Reads a multipart upload, hashing the file part as it streams by: the file is never held in
 * memory or written to disk. Rejects with FILE_TOO_LARGE as soon as the limit is crossed, and
 * with BAD_REQUEST for anything that is not a well-formed form with at most one `filedata` part.
 */
export function receiveUpload(req: Request, limits: UploadLimits): Promise<ReceivedUpload> {
  return new Promise((resolve, reject) => {
    let parser: busboy.Busboy;
    try {
      // preservePath: a part filename with a path is refused by the route, never stripped.
      parser = busboy({
        headers: req.headers,
        preservePath: true,
        // A part's filename in raw UTF-8, as signtool and browsers send it, not Latin-1.
        defParamCharset: "utf8",
        limits: { ...FIELD_LIMITS, fileSize: limits.maxSize },
      });
    } catch {
      reject(new ApiError("BAD_REQUEST", "expected a multipart/form-data body"));
      return;
    }
    const fields: Record<string, string> = {};
    let file: Promise<ReceivedFile> | undefined;
    let settled = false;

    const pace = new UploadPace(limits.pace, () =>
      fail(
        new ApiError(
          "REQUEST_TIMEOUT",
          `upload slower than ${limits.pace.minBytesPerSecond} bytes/s over ${limits.pace.windowMs / 1000} s: retry on a better link`,
        ),
        "unread",
      ),
    );
    req.on("data", (chunk: Buffer) => pace.add(chunk.length));
    /**
     * `read`: the rest of the body is read and dropped (the connection stays usable); `unread`:
     * not read at all, the answer goes out with Connection: close; `briefly`: dropped for a
     * moment so that a client still sending reads the answer instead of a reset connection,
     * then the connection is cut (a forged token must not cost a whole upload).
     */
    const fail = (
      err: ApiError,
      how: "read" | "unread" | "briefly" = UNREAD_BODY_CODES.has(err.code) ? "unread" : "read",
    ) => {
      if (settled) return;
      settled = true;
      pace.stop();
      req.unpipe(parser);
      if (how === "briefly") drainBriefly(req);
      else if (how === "read") req.resume();
      reject(err);
    };
    const badRequest = (message: string) => fail(new ApiError("BAD_REQUEST", message));

    parser.on("field", (name, value, info) => {
      if (info.nameTruncated || info.valueTruncated)
        badRequest(`form field ${name.slice(0, 32)} is too long`);
      else fields[name] = value;
    });
    parser.on("file", (name, stream, info) => {
      if (name !== "filedata" || file) {
        stream.resume();
        badRequest("the form must carry exactly one file part, named filedata");
        return;
      }
      const early = limits.beforeFile?.(fields);
      if (early) {
        stream.resume();
        fail(early, "briefly");
        return;
      }
      const sha256 = createHash("sha256");
      const sha1 = limits.sha1 ? createHash("sha1") : undefined;
      let size = 0;
      stream.on("data", (chunk: Buffer) => {
        sha256.update(chunk);
        sha1?.update(chunk);
        size += chunk.length;
      });
      stream.on("limit", () =>
        fail(
          new ApiError(
            "FILE_TOO_LARGE",
            `file is larger than this format's limit of ${limits.maxSize} bytes`,
          ),
        ),
      );
      file = new Promise<ReceivedFile>((done, broken) => {
        stream.on("error", broken);
        stream.on("end", () => {
          // Copied before digesting: a digested hash cannot be continued by the signer.
          const hash = sha256.copy();
          done({
            size,
            sha256: sha256.digest("hex"),
            ...(sha1 ? { sha1: sha1.digest("hex") } : {}),
            hash,
            partFilename: info.filename ?? "",
          });
        });
      });
      file.catch(() => {});
    });
    for (const limit of ["partsLimit", "filesLimit", "fieldsLimit"] as const) {
      parser.on(limit, () => badRequest("the form has too many parts"));
    }
    parser.on("error", (err: Error) => badRequest(`malformed multipart body: ${err.message}`));
    parser.on("close", async () => {
      if (settled) return;
      try {
        const received = await file;
        if (settled) return;
        settled = true;
        pace.stop();
        resolve(received ? { fields, file: received } : { fields });
      } catch {
        badRequest("upload was interrupted");
      }
    });
    req.on("aborted", () => badRequest("client closed the upload"));
    req.on("error", () => badRequest("client closed the upload"));
    req.pipe(parser);
  });
}
