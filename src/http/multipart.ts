import { createHash, randomUUID } from "node:crypto";
import { createWriteStream } from "node:fs";
import { unlink } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import busboy from "busboy";
import type { Request } from "express";
import type { SpooledUpload } from "../signing/service.js";
import { ApiError } from "./errors.js";

export interface UploadLimits {
  maxSize: number;
  spoolDir: string;
}

export interface ReceivedUpload {
  fields: Record<string, string>;
  /** The `filedata` part, spooled to disk and hashed while it arrived. */
  file?: Omit<SpooledUpload, "filename"> & { partFilename: string };
}

const FIELD_LIMITS = { fields: 10, fieldSize: 8 * 1024, files: 1, parts: 12, headerPairs: 20 };

/**
 * Streams a multipart upload to a spool file, hashing it on the way: the file never sits in
 * memory. Rejects with FILE_TOO_LARGE as soon as the limit is crossed, and with BAD_REQUEST
 * for anything that is not a well-formed form with at most one `filedata` part.
 */
export function receiveUpload(req: Request, limits: UploadLimits): Promise<ReceivedUpload> {
  return new Promise((resolve, reject) => {
    let parser: busboy.Busboy;
    try {
      parser = busboy({ headers: req.headers, limits: { ...FIELD_LIMITS, fileSize: limits.maxSize } });
    } catch {
      reject(new ApiError("BAD_REQUEST", "expected a multipart/form-data body"));
      return;
    }
    const fields: Record<string, string> = {};
    let spool:
      | {
          path: string;
          stream: NodeJS.ReadableStream & { destroy(e?: Error): void };
          done: Promise<ReceivedUpload["file"]>;
        }
      | undefined;
    let settled = false;

    const fail = (err: ApiError) => {
      if (settled) return;
      settled = true;
      req.unpipe(parser);
      // An oversized upload is not read further: the answer goes out with Connection: close.
      if (err.code !== "FILE_TOO_LARGE") req.resume();
      if (spool) {
        const path = spool.path;
        // Unpiped, the part never ends by itself: destroy it so the spool write settles,
        // its file descriptor closes and the file is removed.
        spool.stream.destroy(err);
        spool.done.finally(() => unlink(path).catch(() => {})).catch(() => {});
      }
      reject(err);
    };
    const badRequest = (message: string) => fail(new ApiError("BAD_REQUEST", message));

    parser.on("field", (name, value, info) => {
      if (info.nameTruncated || info.valueTruncated)
        badRequest(`form field ${name.slice(0, 32)} is too long`);
      else fields[name] = value;
    });
    parser.on("file", (name, stream, info) => {
      if (name !== "filedata" || spool) {
        stream.resume();
        badRequest("the form must carry exactly one file part, named filedata");
        return;
      }
      const path = join(limits.spoolDir, randomUUID());
      const sha1 = createHash("sha1");
      const sha256 = createHash("sha256");
      let size = 0;
      stream.on("data", (chunk: Buffer) => {
        sha1.update(chunk);
        sha256.update(chunk);
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
      const done = pipeline(stream, createWriteStream(path, { mode: 0o600 })).then(() => ({
        path,
        size,
        sha1: sha1.digest("hex"),
        sha256: sha256.digest("hex"),
        partFilename: info.filename ?? "",
      }));
      done.catch(() => {});
      spool = { path, stream, done };
    });
    for (const limit of ["partsLimit", "filesLimit", "fieldsLimit"] as const) {
      parser.on(limit, () => badRequest("the form has too many parts"));
    }
    parser.on("error", (err: Error) => badRequest(`malformed multipart body: ${err.message}`));
    parser.on("close", async () => {
      if (settled) return;
      try {
        const file = await spool?.done;
        if (settled) return;
        settled = true;
        resolve(file ? { fields, file } : { fields });
      } catch {
        badRequest("upload was interrupted");
      }
    });
    req.on("aborted", () => badRequest("client closed the upload"));
    req.on("error", () => badRequest("client closed the upload"));
    req.pipe(parser);
  });
}
