import { randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { PassThrough, type Readable } from "node:stream";

export interface MultipartUpload {
  contentType: string;
  contentLength: number;
  /** A fresh body stream each call: the file is streamed from disk, never held in memory. */
  open(): Readable;
}

/** The classic upload form: text fields, then `filedata` streamed from `path`. */
export function multipartUpload(
  fields: Record<string, string>,
  file: { path: string; size: number; name: string },
): MultipartUpload {
  const boundary = `----signtool${randomBytes(12).toString("hex")}`;
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
  return {
    contentType: `multipart/form-data; boundary=${boundary}`,
    contentLength: headBytes.length + file.size + tailBytes.length,
    open() {
      const out = new PassThrough();
      out.write(headBytes);
      const data = createReadStream(file.path);
      data.on("error", (err) => out.destroy(err));
      out.on("close", () => data.destroy());
      data.on("end", () => out.end(tailBytes));
      data.pipe(out, { end: false });
      return out;
    },
  };
}
