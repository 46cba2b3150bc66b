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

/**
 * The classic upload form: text fields, then `filedata` streamed from `path`. Without a
 * `sha256` field, the file is hashed as it is sent and its sha256 follows the file part: one
 * read of the file instead of two.
 */
export function multipartUpload(
  fields: Record<string, string>,
  file: { path: string; size: number; mtimeMs: number; name: string; bytes?: Buffer },
): MultipartUpload {
  // As long as RFC 2046 allows (70): a node's boundary search skips ahead by its length.
  const boundary = `----signtool${BOUNDARY_TAG}${(uploads++).toString(36).padStart(10, "0")}`;
  const quote = (s: string) => s.replace(/["\r\n\\]/g, "_");
  let head = "";
  for (const [name, value] of Object.entries(fields)) {
    head += `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;
  }
  head +=
    `--${boundary}\r\nContent-Disposition: form-data; name="filedata"; filename="${quote(file.name)}"\r\n` +
    "Content-Type: application/octet-stream\r\n\r\n";
  const headBytes = Buffer.from(head);
  const tailBytes = Buffer.from(`\r\n--${boundary}--\r\n`);
  const hashAfter = fields.sha256 === undefined;
  const sha256Field = (hex: string) =>
    Buffer.from(`\r\n--${boundary}\r\nContent-Disposition: form-data; name="sha256"\r\n\r\n${hex}`);
  const trailerLength = hashAfter ? sha256Field("0".repeat(64)).length : 0;
  const contentType = `multipart/form-data; boundary=${boundary}`;
  if (file.bytes) {
    const sentHash = createHash("sha256").update(file.bytes);
    const hex = fields.sha256 ?? sentHash.copy().digest("hex");
    const parts = [headBytes, file.bytes, ...(hashAfter ? [sha256Field(hex)] : []), tailBytes];
    const body = Buffer.concat(parts);
    return { contentType, contentLength: body.length, body, sentSha256: hex, sentHash };
  }
  const upload: MultipartUpload = {
    contentType,
    contentLength: headBytes.length + file.size + trailerLength + tailBytes.length,
    sentSha256: fields.sha256,
    sentHash: undefined,
    async body(out) {
      const hash = hashAfter ? createHash("sha256") : undefined;
      const cannotRead = (err: unknown) =>
        new LocalFileError(
          `cannot read ${file.path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        );
      const changed = () => new LocalFileError(`${file.path} changed while it was being uploaded`);
      await handOver(out, headBytes);
      const fh = await open(file.path, "r").catch((err) => {
        throw cannotRead(err);
      });
      try {
        // Exactly `size` bytes go out, as Content-Length promised: a file that shrank, grew or
        // was rewritten while it was sent fails here instead of desynchronising the connection.
        // Two buffers, reused: one is read into while the connection takes the other. A fresh
        // buffer per read cost a page fault per 4 KiB and a garbage collection per 64 MiB.
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
              throw cannotRead(err);
            });
          if (bytesRead === 0) throw changed();
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
      if (after?.size !== file.size || after.mtimeMs !== file.mtimeMs) throw changed();
      if (hash) {
        (upload as { sentHash: Hash | undefined }).sentHash = hash.copy();
        const hex = hash.digest("hex");
        (upload as { sentSha256: string | undefined }).sentSha256 = hex;
        await handOver(out, sha256Field(hex));
      }
      await handOver(out, tailBytes);
    },
  };
  return upload;
}
