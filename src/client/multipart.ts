import { createHash, type Hash, randomBytes } from "node:crypto";
import { open, stat } from "node:fs/promises";
import type { Writable } from "node:stream";
import { ClientError } from "./errors.js";
import type { BodyWriter } from "./http.js";

/** Read size for a streamed file: a large file goes out in few, large socket writes. */
const CHUNK_BYTES = 1024 * 1024;

const connectionClosed = () => new Error("the connection closed");

/** Writes `chunk`; resolves once the connection has taken it (the buffer may then be reused). */
function handOver(out: Writable, chunk: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const closed = () => reject(connectionClosed());
    out.once("close", closed);
    out.write(chunk, (err) => {
      out.off("close", closed);
      // Node 20 calls back without an error for writes pending when the request was destroyed.
      if (err || out.destroyed) reject(err ?? connectionClosed());
      else resolve();
    });
  });
}

// Boundaries: random per process, then a counter, as unguessable to a file's content as a
// random one per upload, without a randomBytes call (and its getpid() system call) per upload.
const BOUNDARY_TAG = randomBytes(24).toString("hex");
let uploads = 0;

/** The file could not be read, or changed while it was sent: the client's problem, not a node's. */
export class LocalFileError extends ClientError {
  constructor(message: string) {
    super("LOCAL_IO", message);
  }
}

/** An upload's multipart body, ready to send (again, on a retry), with the hash of what it sent. */
export interface MultipartUpload {
  contentType: string;
  contentLength: number;
  /**
   * The whole body, for a file already in memory (small ones are read whole: one read, no
   * stream); or a writer that sends the file from disk, never held whole, once per call.
   */
  body: Buffer | BodyWriter;
  /** The sha256 of the file as the last body sent it, once that body has ended. */
  readonly sentSha256: string | undefined;
  /** Its running SHA-256, not digested: what a signature over the file is checked with. */
  readonly sentHash: Hash | undefined;
}

/** The file to upload, as stat saw it; `bytes` when it was small enough to read whole. */
export interface UploadFile {
  path: string;
  size: number;
  mtimeMs: number;
  name: string;
  bytes?: Buffer;
}

/** The form around the file: fields and the file part's header, the sha256 trailer, the end. */
interface Framing {
  contentType: string;
  head: Buffer;
  tail: Buffer;
  /** The sha256 part sent after the file when no `sha256` field went before it. */
  sha256Part: (hex: string) => Buffer;
}

function framing(fields: Record<string, string>, fileName: string): Framing {
  // As long as RFC 2046 allows (70): a node's boundary search skips ahead by its length.
  const boundary = `----signtool${BOUNDARY_TAG}${(uploads++).toString(36).padStart(10, "0")}`;
  const quote = (s: string) => s.replace(/["\r\n\\]/g, "_");
  let head = "";
  for (const [name, value] of Object.entries(fields)) {
    head += `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;
  }
  head +=
    `--${boundary}\r\nContent-Disposition: form-data; name="filedata"; filename="${quote(fileName)}"\r\n` +
    "Content-Type: application/octet-stream\r\n\r\n";
  return {
    contentType: `multipart/form-data; boundary=${boundary}`,
    head: Buffer.from(head),
    tail: Buffer.from(`\r\n--${boundary}--\r\n`),
    sha256Part: (hex) =>
      Buffer.from(`\r\n--${boundary}\r\nContent-Disposition: form-data; name="sha256"\r\n\r\n${hex}`),
  };
}

/**
 * The classic upload form: text fields, then `filedata` streamed from `path`. Without a
 * `sha256` field, the file is hashed as it is sent and its sha256 follows the file part: one
 * read of the file instead of two.
 */
export function multipartUpload(fields: Record<string, string>, file: UploadFile): MultipartUpload {
  const form = framing(fields, file.name);
  return file.bytes
    ? wholeUpload(form, fields.sha256, file.bytes)
    : new StreamedUpload(form, fields.sha256, file);
}

function wholeUpload(form: Framing, sha256: string | undefined, bytes: Buffer): MultipartUpload {
  const sentHash = createHash("sha256").update(bytes);
  const hex = sha256 ?? sentHash.copy().digest("hex");
  const trailer = sha256 === undefined ? [form.sha256Part(hex)] : [];
  const body = Buffer.concat([form.head, bytes, ...trailer, form.tail]);
  return { contentType: form.contentType, contentLength: body.length, body, sentSha256: hex, sentHash };
}

/** A file sent from disk, never held whole; each call of `body` sends it afresh. */
class StreamedUpload implements MultipartUpload {
  readonly contentType: string;
  readonly contentLength: number;
  sentSha256: string | undefined;
  sentHash: Hash | undefined;
  readonly body: BodyWriter = (out) => this.send(out);
  /** No sha256 field went before the file: it is hashed as it is sent and follows it. */
  private readonly hashAfter: boolean;

  constructor(
    private readonly form: Framing,
    sha256: string | undefined,
    private readonly file: UploadFile,
  ) {
    this.contentType = form.contentType;
    this.sentSha256 = sha256;
    this.hashAfter = sha256 === undefined;
    const trailerLength = this.hashAfter ? form.sha256Part("0".repeat(64)).length : 0;
    this.contentLength = form.head.length + file.size + trailerLength + form.tail.length;
  }

  private async send(out: Writable): Promise<void> {
    const hash = this.hashAfter ? createHash("sha256") : undefined;
    await handOver(out, this.form.head);
    await sendFile(out, this.file, hash);
    if (hash) {
      this.sentHash = hash.copy();
      this.sentSha256 = hash.digest("hex");
      await handOver(out, this.form.sha256Part(this.sentSha256));
    }
    await handOver(out, this.form.tail);
  }
}

const cannotRead = (path: string, err: unknown) =>
  new LocalFileError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
const changedWhileSent = (path: string) => new LocalFileError(`${path} changed while it was being uploaded`);

/**
 * Sends exactly `size` bytes, as Content-Length promised: a file that shrank, grew or was
 * rewritten while it was sent fails here instead of desynchronising the connection.
 */
async function sendFile(out: Writable, file: UploadFile, hash: Hash | undefined): Promise<void> {
  const fh = await open(file.path, "r").catch((err) => {
    throw cannotRead(file.path, err);
  });
  try {
    // Two buffers, reused: one is read into while the connection takes the other. A fresh
    // buffer per read costs a page fault per 4 KiB and frequent garbage collections.
    const buffers = [Buffer.allocUnsafeSlow(CHUNK_BYTES), Buffer.allocUnsafeSlow(CHUNK_BYTES)];
    const sending: Promise<void>[] = [Promise.resolve(), Promise.resolve()];
    let sent = 0;
    for (let i = 0; sent < file.size; i = 1 - i) {
      await sending[i]; // that buffer is the connection's until then
      if (out.destroyed) throw connectionClosed();
      const buffer = buffers[i] as Buffer;
      const { bytesRead } = await fh
        .read(buffer, 0, Math.min(CHUNK_BYTES, file.size - sent), sent)
        .catch((err) => {
          throw cannotRead(file.path, err);
        });
      if (bytesRead === 0) throw changedWhileSent(file.path);
      const chunk = buffer.subarray(0, bytesRead);
      hash?.update(chunk);
      sent += bytesRead;
      sending[i] = handOver(out, chunk);
      sending[i]?.catch(() => {}); // awaited before reuse or below
    }
    await Promise.all(sending);
  } finally {
    await fh.close();
  }
  const after = await stat(file.path).catch(() => undefined);
  if (after?.size !== file.size || after.mtimeMs !== file.mtimeMs) throw changedWhileSent(file.path);
}
