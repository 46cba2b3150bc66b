import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import busboy from "busboy";
import type { Request } from "express";
import { type InputNeeds, InputReader, type SignInput } from "../signing/signer.js";
import { ApiError, type ApiErrorCode } from "./errors.js";
import { UploadPace, type UploadPaceLimits } from "./upload-pace.js";

/**
 * How one upload is received: its size limit, which hashes, its pace, and an early check of its
 * fields.
 */
export interface UploadLimits {
  /** Bytes of the file part at most (the format's `maxSize`): past it, FILE_TOO_LARGE, unread. */
  maxSize: number;
  /** Hash sha1 too: classic clients name files by it. False when the client said `?digest=sha256`. */
  sha1: boolean;
  /** What the format's signer needs of the file, computed in the same read (Signer.needs). */
  needs: InputNeeds;
  /** The slowest upload kept receiving. */
  pace: UploadPaceLimits;
  /**
   * Called with the fields sent so far when the file part begins: an error it returns ends the
   * upload there, unread (a forged token costs a few bytes, not an upload).
   */
  beforeFile?: (fields: Readonly<Record<string, string>>) => ApiError | undefined;
}

/** Refusals answered without reading the rest of the body: the connection is closed after. */
export const UNREAD_BODY_CODES: ReadonlySet<ApiErrorCode> = new Set(["FILE_TOO_LARGE", "REQUEST_TIMEOUT"]);

/** The `filedata` part, read once while it arrived; its bytes are kept only if the format needs them. */
export interface ReceivedFile {
  size: number;
  sha256: string;
  /**
   * For clients that name files by sha1 (classic ones, whatever their field order). signtool
   * asks `?digest=sha256`, sparing the node a hash pass over every byte.
   */
  sha1?: string;
  /** What the signer gets: the running SHA-256 and whatever else the format's needs asked. */
  input: SignInput;
  partFilename: string;
}

/** An upload's form fields and, if one was sent, its file part. */
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
 * How a refused upload's body is dealt with. `read`: the rest is read and dropped (the
 * connection stays usable); `unread`: not read at all, the answer goes out with Connection:
 * close; `briefly`: dropped for a moment so that a client still sending reads the answer
 * instead of a reset connection, then the connection is cut (a forged token must not cost a
 * whole upload).
 */
type Refusal = "read" | "unread" | "briefly";

/** One upload being read: its fields so far, its file part, and how it ends (once). */
class UploadReader {
  private readonly fields: Record<string, string> = {};
  private file: Promise<ReceivedFile> | undefined;
  private fileStream: Readable | undefined;
  private settled = false;
  private readonly pace: UploadPace;

  constructor(
    private readonly req: Request,
    private readonly parser: busboy.Busboy,
    private readonly limits: UploadLimits,
    private readonly resolve: (u: ReceivedUpload) => void,
    private readonly reject: (err: ApiError) => void,
  ) {
    const { minBytesPerSecond, windowMs } = limits.pace;
    const slow = `upload slower than ${minBytesPerSecond} bytes/s over ${windowMs / 1000} s: retry on a better link`;
    this.pace = new UploadPace(limits.pace, () => this.fail(new ApiError("REQUEST_TIMEOUT", slow), "unread"));
    req.on("data", (chunk: Buffer) => this.pace.add(chunk.length));
    parser.on("field", (name, value, info) => this.onField(name, value, info));
    parser.on("file", (name, stream, info) => this.onFile(name, stream, info));
    for (const limit of ["partsLimit", "filesLimit", "fieldsLimit"] as const)
      parser.on(limit, () => this.badRequest("the form has too many parts"));
    parser.on("error", (err: Error) => this.badRequest(`malformed multipart body: ${err.message}`));
    parser.on("close", () => void this.onClose());
    req.on("aborted", () => this.badRequest("client closed the upload"));
    req.on("error", () => this.badRequest("client closed the upload"));
    req.pipe(parser);
  }

  private fail(err: ApiError, how: Refusal = UNREAD_BODY_CODES.has(err.code) ? "unread" : "read"): void {
    if (this.settled) return;
    this.settled = true;
    this.pace.stop();
    this.req.unpipe(this.parser);
    // A file part read while the upload was refused is not anyone's: its temp file goes.
    this.fileStream?.destroy();
    this.file?.then((f) => f.input.file?.remove()).catch(() => {});
    if (how === "briefly") drainBriefly(this.req);
    else if (how === "read") this.req.resume();
    this.reject(err);
  }

  private badRequest(message: string): void {
    this.fail(new ApiError("BAD_REQUEST", message));
  }

  private onField(name: string, value: string, info: busboy.FieldInfo): void {
    if (info.nameTruncated || info.valueTruncated)
      this.badRequest(`form field ${name.slice(0, 32)} is too long`);
    else this.fields[name] = value;
  }

  private onFile(name: string, stream: Readable, info: busboy.FileInfo): void {
    if (name !== "filedata" || this.file) {
      stream.resume();
      this.badRequest("the form must carry exactly one file part, named filedata");
      return;
    }
    const early = this.limits.beforeFile?.(this.fields);
    if (early) {
      stream.resume();
      this.fail(early, "briefly");
      return;
    }
    const tooLarge = `file is larger than this format's limit of ${this.limits.maxSize} bytes`;
    stream.on("limit", () => this.fail(new ApiError("FILE_TOO_LARGE", tooLarge)));
    this.fileStream = stream;
    this.file = readFilePart(stream, info.filename ?? "", this.limits);
    this.file.catch(() => {});
  }

  private async onClose(): Promise<void> {
    if (this.settled) return;
    try {
      const received = await this.file;
      if (this.settled) return;
      this.settled = true;
      this.pace.stop();
      this.resolve(received ? { fields: this.fields, file: received } : { fields: this.fields });
    } catch {
      this.badRequest("upload was interrupted");
    }
  }
}

/** The file part, read once as it streams by, into the digests (and bytes or temp file) the format needs. */
function readFilePart(stream: Readable, partFilename: string, limits: UploadLimits): Promise<ReceivedFile> {
  const reader = new InputReader(limits.needs);
  const sha1 = limits.sha1 ? createHash("sha1") : undefined;
  let size = 0;
  stream.on("data", (chunk: Buffer) => {
    sha1?.update(chunk);
    size += chunk.length;
    // The temp file of an embedded format sets the pace: the upload waits for the disk.
    if (!reader.update(chunk)) {
      stream.pause();
      void reader.drained().then(() => stream.resume());
    }
  });
  return new Promise<ReceivedFile>((done, broken) => {
    let ended = false;
    const abandon = (err: Error) => {
      void reader.abandon();
      broken(err);
    };
    stream.on("error", abandon);
    stream.on("close", () => {
      if (!ended) abandon(new Error("the file part was cut off"));
    });
    stream.on("end", () => {
      ended = true;
      // finish() copies the running SHA-256 before it is digested here: the signer continues it.
      reader.finish(partFilename).then((input) => {
        const sha1hex = sha1 ? { sha1: sha1.digest("hex") } : {};
        done({ size, sha256: reader.sha256.digest("hex"), ...sha1hex, input, partFilename });
      }, broken);
    });
  });
}

/**
 * Reads a multipart upload, hashing the file part as it streams by: the file is held in memory
 * only when the format needs its bytes (bounded by its maxSize), and written to a private temp
 * file only when it needs the file (embedded formats; the caller removes it, `input.file`). Rejects with FILE_TOO_LARGE as soon as the limit is crossed, and
 * with BAD_REQUEST for anything that is not a well-formed form with at most one `filedata` part.
 */
export function receiveUpload(req: Request, limits: UploadLimits): Promise<ReceivedUpload> {
  return new Promise((resolve, reject) => {
    let parser: busboy.Busboy;
    try {
      // preservePath: a part filename with a path is refused by the route, never stripped.
      // defParamCharset: a part's filename in raw UTF-8, as signtool and browsers send it.
      // busboy calls a file that reaches fileSize over the limit: one byte more lets maxSize in.
      const busboyLimits = { ...FIELD_LIMITS, fileSize: limits.maxSize + 1 };
      parser = busboy({
        headers: req.headers,
        preservePath: true,
        defParamCharset: "utf8",
        limits: busboyLimits,
      });
    } catch {
      reject(new ApiError("BAD_REQUEST", "expected a multipart/form-data body"));
      return;
    }
    new UploadReader(req, parser, limits, resolve, reject);
  });
}
