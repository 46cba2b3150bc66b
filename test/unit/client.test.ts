import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import {
  appendFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { Agent } from "node:http";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, type Readable, Writable } from "node:stream";
import { after, describe, test } from "node:test";
import { parseDuration } from "../../src/client/duration.js";
import { type BodyWriter, send, TransportError } from "../../src/client/http.js";
import { LocalFileError, multipartUpload } from "../../src/client/multipart.js";
import { NodeRotation, nodeUrl } from "../../src/client/nodes.js";
import { NonceChain } from "../../src/client/nonce-file.js";
import { backoffMs, classifyAnswer, classifyNetworkError } from "../../src/client/retry.js";
import { receiveSignedFile } from "../../src/client/signed-file.js";
import { writeFileAtomic } from "../../src/files/write-atomic.js";
import { AuthenticodeScan } from "../../src/signing/verify-authenticode.js";

const dir = mkdtempSync(join(tmpdir(), "signtool-unit-"));
after(() => rmSync(dir, { recursive: true, force: true }));

describe("the retry classifier", () => {
  const kind = (status: number, code?: string) => classifyAnswer({ status, ...(code ? { code } : {}) }).kind;

  test("our infrastructure's errors are retried on another node", () => {
    for (const code of ["STORE_UNAVAILABLE", "STORE_RECOVERING", "OVERLOADED", "SHUTTING_DOWN"])
      assert.equal(kind(503, code), "retry");
    assert.equal(kind(429, "RATE_LIMITED"), "retry");
    assert.equal(kind(500, "SIGNING_FAILED"), "retry");
    assert.equal(kind(500, "INTERNAL"), "retry");
    assert.equal(kind(502), "retry");
    assert.equal(kind(504), "retry");
    const v = classifyAnswer({ status: 503, code: "STORE_RECOVERING", retryAfter: "3" });
    assert.deepEqual(v, { kind: "retry", reason: "503 STORE_RECOVERING", demote: true, retryAfterMs: 3000 });
  });

  test("the client's own mistakes are never retried", () => {
    for (const code of ["BAD_REQUEST", "DIGEST_MISMATCH", "UNKNOWN_FORMAT", "BAD_FILENAME"])
      assert.equal(kind(400, code), "fail");
    for (const code of ["IP_MISMATCH", "FORMAT_NOT_ALLOWED", "NONCE_MISMATCH", "ISSUER_NOT_ALLOWED"])
      assert.equal(kind(403, code), "fail");
    assert.equal(kind(413, "FILE_TOO_LARGE"), "fail");
    assert.equal(kind(431, "HEADERS_TOO_LARGE"), "fail");
    assert.equal(kind(404, "NOT_FOUND"), "fail");
  });

  test("a rejected token needs a new token; wrong issuer credentials do not", () => {
    for (const code of [
      "TOKEN_EXPIRED",
      "TOKEN_REVOKED",
      "TOKEN_INVALIDATED",
      "TOKEN_MALFORMED",
      "TOKEN_BAD_SIGNATURE",
    ]) {
      assert.equal(kind(401, code), "new-token");
    }
    assert.equal(kind(401, "BAD_CREDENTIALS"), "fail");
  });

  test("a 4xx that is not our API's, or a redirect, is a mistake in the setup; a stray 200 moves on", () => {
    assert.equal(kind(400), "mistake");
    assert.equal(kind(413), "mistake", "a proxy's HTML 413");
    assert.equal(kind(302), "mistake");
    assert.equal(kind(200), "retry", "a 200 where the API answers otherwise");
    assert.equal(kind(429), "retry", "a proxy's rate limit");
    assert.equal(kind(502), "retry", "a proxy whose node is down");
  });

  test("transport failures are retried on another node", () => {
    const v = classifyNetworkError(new TransportError("ECONNREFUSED", "127.0.0.1:1: connect ECONNREFUSED"));
    assert.equal(v.kind, "retry");
    assert.ok(v.kind === "retry" && v.demote && v.reason.startsWith("ECONNREFUSED"));
  });

  test("Retry-After as an HTTP date, and capped", () => {
    const at = new Date(Date.now() + 5000).toUTCString();
    const v = classifyAnswer({ status: 503, code: "OVERLOADED", retryAfter: at });
    assert.ok(
      v.kind === "retry" && v.retryAfterMs !== undefined && v.retryAfterMs > 3000 && v.retryAfterMs <= 5000,
    );
    const capped = classifyAnswer({ status: 429, code: "RATE_LIMITED", retryAfter: "99999" });
    assert.ok(capped.kind === "retry" && capped.retryAfterMs === 300_000);
  });
});

test("backoff grows exponentially with full jitter, capped", () => {
  assert.equal(
    backoffMs(0, () => 0.999999),
    249,
  );
  assert.equal(
    backoffMs(3, () => 0.5),
    1000,
  );
  assert.equal(
    backoffMs(10, () => 0.999999),
    9999,
  );
  assert.equal(
    backoffMs(50, () => 0),
    0,
  );
});

test("node rotation starts at a random node and sends failed nodes to the back", () => {
  const r = new NodeRotation(["a", "b", "c"], () => 0.5);
  assert.deepEqual(r.all, ["b", "c", "a"]);
  r.demote("b");
  assert.deepEqual(r.all, ["c", "a", "b"]);
  r.demote("nope");
  assert.equal(r.current, "c");
  assert.throws(() => new NodeRotation([]), /no signing nodes/);
  assert.equal(nodeUrl("host:9110", false), "http://host:9110");
  assert.equal(nodeUrl("host:9110", true), "https://host:9110");
  assert.equal(nodeUrl("http://h:1/", true), "http://h:1");
});

test("durations", () => {
  assert.equal(parseDuration("90"), 90);
  assert.equal(parseDuration("2h"), 7200);
  assert.equal(parseDuration("15m"), 900);
  assert.equal(parseDuration("1d"), 86400);
  assert.throws(() => parseDuration("2 hours"), /invalid duration/);
  assert.throws(() => parseDuration("0"), /positive/);
});

describe("the nonce file", () => {
  test("missing means a new token's empty nonce; every advance is written atomically, in order", async () => {
    const file = join(dir, "nonce");
    const chain = new NonceChain(file);
    assert.equal(await chain.read(), "");
    const seen: string[] = [];
    // Ten concurrent uploads: each sees the nonce the previous one produced, never a torn file.
    await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        chain.use(async (nonce) => {
          seen.push(nonce);
          const onDisk = i === 0 ? "" : readFileSync(file, "utf8");
          assert.equal(onDisk, nonce);
          await new Promise((r) => setTimeout(r, 2));
          return { result: i, next: `${seen.length}.n` };
        }),
      ),
    );
    assert.deepEqual(seen, ["", ...Array.from({ length: 9 }, (_, i) => `${i + 1}.n`)]);
    assert.equal(readFileSync(file, "utf8"), "10.n");
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.endsWith(".tmp")),
      [],
    );
    // A failed upload keeps the nonce, and the chain goes on.
    await assert.rejects(chain.use(async () => Promise.reject(new Error("boom"))));
    assert.equal(await chain.use(async (n) => ({ result: n })), "10.n");
    assert.equal(await new NonceChain(file).read(), "10.n");
  });

  test("an unreadable nonce file is an error, not an empty nonce", async () => {
    await assert.rejects(new NonceChain(dir).read(), /cannot read nonce file/);
  });

  test("writeFileAtomic replaces whole files and leaves nothing behind on failure", async () => {
    const file = join(dir, "sig.asc");
    writeFileSync(file, "old");
    await writeFileAtomic(file, "new");
    assert.equal(readFileSync(file, "utf8"), "new");
    await assert.rejects(writeFileAtomic(join(dir, "no-such-dir", "x"), "data"));
    mkdirSync(join(dir, "a-directory"));
    await assert.rejects(writeFileAtomic(join(dir, "a-directory"), "data"), /EISDIR/); // the rename fails
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.includes(".tmp")),
      [],
    );
  });
});

describe("the upload body", () => {
  const dir = mkdtempSync(join(tmpdir(), "multipart-test-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** Runs the body writer into a sink that copies what it takes, as a socket would. */
  const sent = async (form: ReturnType<typeof multipartUpload>): Promise<Buffer> => {
    assert.equal(typeof form.body, "function", "a file not read whole is streamed");
    const parts: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        // Taken later, like a socket that is not always writable at once: a buffer reused
        // before the callback would show here as corrupted file bytes.
        setTimeout(() => {
          parts.push(Buffer.from(chunk));
          done();
        }, 20);
      },
    });
    await (form.body as BodyWriter)(sink);
    return Buffer.concat(parts);
  };
  const formFor = (path: string) => {
    const st = statSync(path);
    return multipartUpload(
      { token: "t", nonce: "" },
      { path, size: st.size, mtimeMs: st.mtimeMs, name: "f" },
    );
  };

  test("sends exactly Content-Length bytes, with the sha256 after the file", async () => {
    const path = join(dir, "ok.bin");
    writeFileSync(path, Buffer.alloc(3000, 7));
    const form = formFor(path);
    const body = await sent(form);
    assert.equal(body.length, form.contentLength);
    assert.match(form.sentSha256 ?? "", /^[0-9a-f]{64}$/);
    assert.ok(body.indexOf(`name="sha256"\r\n\r\n${form.sentSha256}`) > body.indexOf('name="filedata"'));
  });

  test("a file of several read buffers goes out byte for byte (the buffers are reused)", async () => {
    const path = join(dir, "large.bin");
    const data = randomBytes(3.5 * 1024 * 1024);
    writeFileSync(path, data);
    const form = formFor(path);
    const body = await sent(form);
    assert.equal(body.length, form.contentLength);
    const start = body.indexOf("\r\n\r\n", body.indexOf('name="filedata"')) + 4;
    assert.ok(body.subarray(start, start + data.length).equals(data), "the file part is the file");
    assert.equal(form.sentSha256, createHash("sha256").update(data).digest("hex"));
  });

  for (const [name, change] of [
    ["shrinks", (p: string) => truncateSync(p, 100)],
    ["grows", (p: string) => appendFileSync(p, "more")],
    ["is rewritten at the same size", (p: string) => writeFileSync(p, Buffer.alloc(3000, 9))],
  ] as const) {
    test(`a file that ${name} after it was measured fails as a local error, not a node's`, async () => {
      const path = join(dir, `${name.replace(/\W/g, "")}.bin`);
      writeFileSync(path, Buffer.alloc(3000, 7));
      const form = formFor(path);
      await new Promise((r) => setTimeout(r, 20)); // a later mtime
      change(path);
      await assert.rejects(sent(form), (err: unknown) => {
        assert.ok(err instanceof LocalFileError, String(err));
        assert.match((err as Error).message, /changed while it was being uploaded/);
        return true;
      });
    });
  }

  test("a file read whole goes out as one buffer, the sha256 after it", () => {
    const bytes = Buffer.from("checksums\n");
    const form = multipartUpload(
      { token: "t", nonce: "" },
      { path: "unused", size: bytes.length, mtimeMs: 0, name: "f", bytes },
    );
    assert.ok(Buffer.isBuffer(form.body));
    assert.equal((form.body as Buffer).length, form.contentLength);
    assert.equal(form.sentSha256, createHash("sha256").update(bytes).digest("hex"));
    const body = form.body as Buffer;
    assert.ok(body.indexOf(`name="sha256"\r\n\r\n${form.sentSha256}`) > body.indexOf("checksums"));
  });

  test("a file that cannot be read fails as a local error", async () => {
    const form = multipartUpload({}, { path: join(dir, "gone.bin"), size: 10, mtimeMs: 0, name: "gone" });
    await assert.rejects(sent(form), LocalFileError);
  });
});

test("an answer that comes before the whole upload was read closes the upload's file", async () => {
  // A node refusing unread (OVERLOADED, FILE_TOO_LARGE…): answers at once, then discards what
  // comes and keeps the connection open, so only the client can stop the upload.
  const answerBody = '{"error":{"code":"OVERLOADED","message":"busy","retryable":true}}';
  let connectionClosed: Promise<string> | undefined;
  const server = createServer((socket) => {
    connectionClosed = new Promise((resolve) => socket.on("close", () => resolve("closed")));
    socket.write(
      `HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: ${answerBody.length}\r\n\r\n${answerBody}`,
    );
    socket.resume();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  let writer: Promise<void> | undefined;
  const agent = new Agent({ keepAlive: true });
  try {
    const answer = await send({
      method: "POST",
      url: `http://127.0.0.1:${port}/sign/gpg`,
      headers: { "Content-Length": 64 * 1024 * 1024 },
      agent, // as signtool's: a keep-alive connection would otherwise wait for the rest of the body
      body: (out) => {
        // Endless, like a large file read in 1 MiB chunks, each sent once the last is taken.
        writer = (async () => {
          for (;;) {
            await new Promise<void>((resolve, reject) => {
              out.once("close", () => reject(new Error("closed")));
              out.write(Buffer.alloc(1024 * 1024), (err) => (err ? reject(err) : resolve()));
            });
          }
        })();
        return writer;
      },
      timeoutMs: 10_000,
    }).catch((err: Error) => err);
    if (!(answer instanceof Error)) assert.equal(answer.status, 503);
    // The writer stops (and a file under it would be closed) instead of waiting forever.
    const stuck = new Promise((resolve) => setTimeout(resolve, 5000, "still writing after 5 s"));
    assert.equal(await Promise.race([(writer as Promise<void>).catch(() => "stopped"), stuck]), "stopped");
    // …and the half-sent connection is closed, not left open in the keep-alive pool.
    const open = new Promise((resolve) => setTimeout(resolve, 5000, "still open after 5 s"));
    assert.equal(await Promise.race([connectionClosed, open]), "closed");
  } finally {
    agent.destroy();
    server.close();
  }
});

describe("a signed file (embedded format) received to disk", () => {
  const dir = mkdtempSync(join(tmpdir(), "signed-file-test-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const hex = (b: Buffer) => createHash("sha256").update(b).digest("hex");
  // The real scan, looking for these bytes as it would for the certificate's DER.
  const TRUSTED = Buffer.from("--the trusted certificate--");
  const scan = () => new AuthenticodeScan(TRUSTED);
  const temps = (d: string) => readdirSync(d).filter((f) => f.includes(".tmp"));

  /** An output that already exists, as --in-place or a rerun finds it. */
  function existing(name: string): string {
    const output = join(dir, name);
    writeFileSync(output, "the old file", { mode: 0o755 });
    return output;
  }

  test("it is written 0600 beside its output while it arrives, then renamed whole with the output's mode", async () => {
    const output = existing("app.exe");
    const signed = Buffer.concat([randomBytes(300_000), TRUSTED, randomBytes(300_000)]);
    const body = new PassThrough();
    const receiving = receiveSignedFile(body, {
      output,
      mode: 0o755,
      scan: scan(),
      sha256: hex(signed),
      from: "node",
    });
    body.write(signed.subarray(0, 100_000));
    let temp: string | undefined;
    for (let i = 0; i < 100 && !temp; i++) {
      await new Promise((r) => setTimeout(r, 10));
      temp = temps(dir).find((f) => f.startsWith(".app.exe.") && statSync(join(dir, f)).size > 0);
    }
    assert.ok(temp, "the bytes go to a temp file beside the output as they arrive");
    assert.equal(statSync(join(dir, temp)).mode & 0o777, 0o600);
    assert.equal(readFileSync(output, "utf8"), "the old file");
    body.end(signed.subarray(100_000));
    const got = await receiving;
    assert.ok("file" in got, JSON.stringify(got));
    await got.file.commit();
    assert.ok(readFileSync(output).equals(signed));
    assert.equal(statSync(output).mode & 0o777, 0o755);
    assert.deepEqual(temps(dir), []);
  });

  test("a digest that does not match, a file without the certificate, a stream that breaks off: the temp file goes, the output stays", async () => {
    const output = existing("tool.exe");
    const signed = Buffer.concat([randomBytes(200_000), TRUSTED]);
    const receive = (body: PassThrough, sha256: string) =>
      receiveSignedFile(body, { output, scan: scan(), sha256, from: "node" });

    const tampered = Buffer.from(signed);
    tampered[10] = (tampered[10] as number) ^ 1;
    const mismatch = await receive(new PassThrough().end(tampered), hex(signed));
    assert.deepEqual(mismatch, {
      refused: "digest",
      why: "node sent a signed file that does not match its X-SHA256-Digest",
    });

    const unsigned = randomBytes(200_000);
    const refused = await receive(new PassThrough().end(unsigned), hex(unsigned));
    assert.ok("refused" in refused && refused.refused === "signature", JSON.stringify(refused));

    const broken = new PassThrough();
    const cut = receive(broken, hex(signed));
    broken.write(signed.subarray(0, 50_000));
    setTimeout(() => broken.destroy(new Error("aborted")), 20);
    await assert.rejects(cut, (err: unknown) => err instanceof TransportError);
    // Dropped before the temp file is even made: still the receiver's error, never an uncaught one.
    const early = new PassThrough();
    const dropped = receive(early, hex(signed));
    early.destroy(new Error("aborted"));
    await assert.rejects(dropped, (err: unknown) => err instanceof TransportError);

    const endless = receiveSignedFile(new PassThrough().end(signed), {
      output,
      scan: scan(),
      from: "node",
      maxBytes: 100_000,
    });
    await assert.rejects(
      endless,
      (err: unknown) => err instanceof TransportError && err.reason === "ETOOBIG",
    );

    assert.equal(readFileSync(output, "utf8"), "the old file");
    assert.deepEqual(temps(dir), []);
    const nowhere = receiveSignedFile(new PassThrough().end(signed), {
      output: join(dir, "no-such-dir", "x.exe"),
      scan: scan(),
      from: "node",
    });
    await assert.rejects(nowhere, (err: unknown) => (err as { code?: string }).code === "LOCAL_IO");
  });

  test("an answer handed over unread (streamIf) that breaks off mid-body is a TransportError, and leaves no file", async () => {
    const server = createServer((socket) => {
      socket.once("data", () => {
        socket.write("HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\nX-SHA256-Digest: 00\r\n\r\n");
        socket.write(Buffer.alloc(100_000));
        setTimeout(() => socket.destroy(), 20);
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const { port } = server.address() as AddressInfo;
    try {
      const answer = await send({
        method: "GET",
        url: `http://127.0.0.1:${port}/sign/authenticode/x`,
        timeoutMs: 10_000,
        streamIf: (status) => status === 200,
      });
      assert.equal(answer.status, 200);
      assert.equal(answer.body.length, 0, "the body is left to the stream");
      const output = join(dir, "cut.exe");
      const got = receiveSignedFile(answer.stream as Readable, { output, scan: scan(), from: "node" });
      await assert.rejects(got, (err: unknown) => err instanceof TransportError);
      assert.deepEqual(
        readdirSync(dir).filter((f) => f.includes("cut.exe")),
        [],
      );
    } finally {
      server.close();
    }
  });
});
