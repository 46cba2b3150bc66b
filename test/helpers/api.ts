import { createHash } from "node:crypto";
import request from "supertest";

export const sha1 = (b: Buffer) => createHash("sha1").update(b).digest("hex");
export const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

export async function getToken(
  url: string,
  auth: string,
  fields: Record<string, string> = { slave_ip: "127.0.0.1", duration: "600" },
): Promise<string> {
  const res = await request(url).post("/token").set("Authorization", auth).type("form").send(fields);
  if (res.status !== 200) throw new Error(`POST /token: ${res.status} ${res.text}`);
  return res.text;
}

export interface UploadArgs {
  format?: string;
  token: string;
  nonce: string;
  data: Buffer;
  filename?: string;
  wait?: number;
  digest?: string;
  /** Accept: application/octet-stream: an embedded format's ?wait may answer with the file. */
  acceptFile?: boolean;
}

export function upload(url: string, a: UploadArgs): request.Test {
  const path = `/sign/${a.format ?? "gpg"}${a.wait ? `?wait=${a.wait}` : ""}`;
  return request(url)
    .post(path)
    .set(a.acceptFile ? { Accept: "application/octet-stream, application/json" } : {})
    .field("sha1", a.digest ?? sha1(a.data))
    .field("filename", a.filename ?? "artifact.bin")
    .field("token", a.token)
    .field("nonce", a.nonce)
    .attach("filedata", a.data, "upload.bin");
}

/** GET /sign/... with the body as a Buffer whatever its content type. */
export function fetchSignature(url: string, format: string, digest: string, wait?: number): request.Test {
  return request(url)
    .get(`/sign/${format}/${digest}${wait ? `?wait=${wait}` : ""}`)
    .buffer(true)
    .parse((res, cb) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => cb(null, Buffer.concat(chunks)));
    });
}
