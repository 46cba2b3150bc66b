import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { Readable } from "node:stream";

/** The file could not be read, or changed while it was sent: the client's problem, not a node's. */
export class LocalFileError extends Error {
  readonly code = "LOCAL_IO";
  constructor(message: string) {
    super(message);
    this.name = "LocalFileError";
  }
}

export interface MultipartUpload {
  contentType: string;
  contentLength: number;
  /**
   * The whole body, for a file already in memory (small ones are read whole: one read, no
   * stream); or a fresh body stream per call, the file streamed from disk, never held whole.
   */
  body: Buffer | (() => Readable);
  /** The sha256 of the file as the last body sent it, once that body has ended. */
  readonly sentSha256: string | undefined;
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
  const boundary = `----signtool${randomBytes(29).toString("hex")}`;
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
    const hex = fields.sha256 ?? createHash("sha256").update(file.bytes).digest("hex");
    const parts = [headBytes, file.bytes, ...(hashAfter ? [sha256Field(hex)] : []), tailBytes];
    const body = Buffer.concat(parts);
    return { contentType, contentLength: body.length, body, sentSha256: hex };
  }
  const upload: MultipartUpload = {
    contentType,
    contentLength: headBytes.length + file.size + trailerLength + tailBytes.length,
    sentSha256: fields.sha256,
    body() {
      const hash = hashAfter ? createHash("sha256") : undefined;
      // 1 MiB reads: a large file goes out in few, large socket writes. Destroying the body
      // ends the generator, which closes the file.
      // Exactly `size` bytes go out, as Content-Length promised: a file that shrank, grew or
      // was rewritten while it was sent fails here instead of desynchronising the connection.
      async function* body() {
        yield headBytes;
        let sent = 0;
        const changed = () => new LocalFileError(`${file.path} changed while it was being uploaded`);
        try {
          const data = createReadStream(file.path, {
            highWaterMark: 1024 * 1024,
            ...(file.size > 0 ? { end: file.size - 1 } : { end: -1 }),
          });
          for await (const chunk of data) {
            hash?.update(chunk as Buffer);
            sent += (chunk as Buffer).length;
            yield chunk as Buffer;
          }
        } catch (err) {
          if (err instanceof LocalFileError) throw err;
          throw new LocalFileError(
            `cannot read ${file.path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
          );
        }
        const after = await stat(file.path).catch(() => undefined);
        if (sent !== file.size || after?.size !== file.size || after.mtimeMs !== file.mtimeMs)
          throw changed();
        if (hash) {
          const hex = hash.digest("hex");
          (upload as { sentSha256: string | undefined }).sentSha256 = hex;
          yield sha256Field(hex);
        }
        yield tailBytes;
      }
      return Readable.from(body(), { objectMode: false });
    },
  };
  return upload;
}
