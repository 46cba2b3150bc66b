/**
 * The floor of any Node.js design of this service: a bare HTTP server that SHA-256-hashes a
 * raw request body (no express, no multipart, no token, no signature) in its own process, and a
 * bare client that reads, hashes and sends a file in 1 MiB chunks from the calling process.
 * It does the two hash passes and the socket copies every upload must do (the client hashes to
 * check the signature it gets back, the node to sign) and nothing else, so the large-file
 * benchmark can say how far the real path is from what Node can do at all on this machine.
 *
 *   node dist/bench/bare-upload.js serve     (what bareServer() forks)
 */
import { type ChildProcess, fork } from "node:child_process";
import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import { createServer, request } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";

const CHUNK = 1024 * 1024;

/** The bare server in a child process, listening on loopback. */
export async function bareServer(): Promise<{ url: string; pid: number; stop: () => void }> {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ["serve"], { stdio: "inherit" });
  const port = await new Promise<number>((resolve, reject) => {
    child.once("message", (m) => resolve(Number(m)));
    child.once("exit", (code) => reject(new Error(`bare server exited with ${code}`)));
  });
  return { url: `http://127.0.0.1:${port}`, pid: child.pid as number, stop: () => child.kill() };
}

/** Uploads `path` to the bare server: its wall time, ms; throws unless the server's hash agrees. */
export async function bareUpload(url: string, path: string): Promise<number> {
  const file = await open(path);
  try {
    const size = (await file.stat()).size;
    const t0 = performance.now();
    const req = request(`${url}/`, { method: "POST", headers: { "Content-Length": size } });
    const answer = new Promise<string>((resolve, reject) => {
      req.once("error", reject);
      req.once("response", (res) => {
        let body = "";
        res.setEncoding("utf8").on("data", (d: string) => (body += d));
        res.once("end", () => resolve(body));
      });
    });
    const hash = createHash("sha256");
    const sent = (b: Buffer) => new Promise<void>((ok, fail) => req.write(b, (e) => (e ? fail(e) : ok())));
    // One buffer, reused once the socket has taken each chunk: no fresh pages per chunk.
    const buffer = Buffer.allocUnsafe(CHUNK);
    for (let pos = 0; pos < size; ) {
      const { bytesRead } = await file.read(buffer, 0, CHUNK, pos);
      if (bytesRead === 0) throw new Error(`${path} shrank while it was sent`);
      const chunk = buffer.subarray(0, bytesRead);
      hash.update(chunk);
      pos += bytesRead;
      await sent(chunk);
    }
    req.end();
    if ((await answer) !== hash.digest("hex")) throw new Error("the bare server hashed other bytes");
    return performance.now() - t0;
  } finally {
    await file.close();
  }
}

function serve(): void {
  const server = createServer((req, res) => {
    const hash = createHash("sha256");
    req.on("data", (chunk: Buffer) => hash.update(chunk));
    req.on("end", () => res.end(hash.digest("hex")));
  });
  server.listen(0, "127.0.0.1", () => process.send?.((server.address() as AddressInfo).port));
  process.on("disconnect", () => process.exit(0));
}

if (process.argv[2] === "serve") serve();
