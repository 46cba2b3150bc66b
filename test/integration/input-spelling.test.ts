import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import type { Writable } from "node:stream";
import { after, before, beforeEach, describe, test } from "node:test";
import request from "supertest";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { send } from "../../src/client/http.js";
import { encodeToken, type TokenSecret } from "../../src/tokens/codec.js";
import { getToken, sha1, upload } from "../helpers/api.js";
import { jsonLogSink } from "../helpers/log-sink.js";
import { type RawResponse, rawRequest } from "../helpers/raw-http.js";

/**
 * Issue 27 items 5 to 8: inputs have one spelling, a forged token costs a few bytes, trickling
 * uploads end with 408, and an unknown digest is a 404 at once. Every case answers its
 * documented status and code, and no stack trace reaches the log.
 */
const logLines: Record<string, unknown>[] = [];
let cluster: TestCluster;
let url: string;
let port: number;

before(async () => {
  const logTo = jsonLogSink(logLines);
  cluster = await TestCluster.start({
    nodes: 1,
    logTo,
    overrides: {
      limits: { signPerToken: { ratePerSecond: 0.1, burst: 5 } },
      signing: { uploadMinBytesPerSecond: 1000, uploadRateWindowMs: 1000, maxWait: 10 },
    },
  });
  url = cluster.node(0).url;
  port = cluster.node(0).port;
});
after(() => cluster?.stop());
beforeEach(() => {
  logLines.length = 0;
});

function assertError(res: { status: number; body: unknown; text?: string }, status: number, code: string) {
  assert.equal(res.status, status, res.text);
  assert.equal((res.body as { error: { code: string } }).error.code, code, res.text);
}

function assertNoStack(): void {
  assert.ok(!JSON.stringify(logLines).includes('"stack"'), "no stack trace in the log");
  assert.ok(!logLines.some((l) => l.event === "unhandled_error"), "nothing logged as our bug");
}

const tokenFor = (fields: Record<string, string>) =>
  request(url).post("/token").set("Authorization", cluster.basicAuth).type("form").send(fields);

describe("one spelling per token", () => {
  test("a MAC whose unused bits are set, or a padded part, is malformed, not another spelling that works", async () => {
    const token = await getToken(url, cluster.basicAuth);
    const [v, kid, payload, mac] = token.split(".") as [string, string, string, string];
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const respelled = `${mac.slice(0, -1)}${alphabet[alphabet.indexOf(mac.at(-1) as string) | 1]}`;
    for (const t of [`${v}.${kid}.${payload}.${respelled}`, `${v}.${kid}.${payload}.${mac}=`])
      assertError(await upload(url, { token: t, nonce: "", data: randomBytes(8) }), 401, "TOKEN_MALFORMED");
  });

  test("the per-token rate limit holds whatever whitespace surrounds the token", async () => {
    const token = await getToken(url, cluster.basicAuth);
    const spellings = [token, ` ${token}`, `${token}\n`, `\t${token} `, `${token}\r\n`];
    let nonce = "";
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) {
      const res = await upload(url, {
        token: spellings[i % spellings.length] as string,
        nonce,
        data: randomBytes(8),
      });
      statuses.push(res.status);
      if (res.status === 202) nonce = res.headers["x-nonce"] as string;
    }
    assert.equal(statuses.filter((s) => s === 202).length, 5, `burst 5, then 429: ${statuses}`);
    assert.equal(statuses.filter((s) => s === 429).length, 7);
  });
});

describe("one spelling per duration and address", () => {
  test("durations are decimal digits", async () => {
    for (const duration of ["1e3", "0x10", " 60", "60.0", "+60", "６０"])
      assertError(await tokenFor({ slave_ip: "127.0.0.1", duration }), 400, "BAD_REQUEST");
    assert.equal((await tokenFor({ slave_ip: "127.0.0.1", duration: "60" })).status, 200);
  });

  test("slave_ip is one unicast address", async () => {
    for (const slaveIp of [
      "0.0.0.0",
      "0.1.2.3",
      "::",
      "255.255.255.255",
      "224.0.0.1",
      "ff02::1",
      "fe80::1%eth0",
    ]) {
      const res = await tokenFor({ slave_ip: slaveIp, duration: "60" });
      assertError(res, 400, "BAD_REQUEST");
      assert.match(res.body.error.message, /one build machine/);
    }
  });

  test("an IPv4-mapped address is the IPv4 address, whatever its case", async () => {
    for (const slaveIp of ["::FFFF:127.0.0.1", "::ffff:127.0.0.1", "::ffff:7f00:1", "127.0.0.1"]) {
      const res = await tokenFor({ slave_ip: slaveIp, duration: "60" });
      assert.equal(res.status, 200, res.text);
      const signed = await upload(url, { token: res.text, nonce: "", data: randomBytes(8) });
      assert.equal(signed.status, 202, `${slaveIp}: ${signed.text}`);
    }
  });
});

describe("paths and filenames", () => {
  test("a part filename with a path is refused, never stripped", async () => {
    const token = await getToken(url, cluster.basicAuth);
    const data = randomBytes(8);
    // Sent raw: HTTP clients' form encoders strip the path themselves.
    for (const name of ["../../etc/passwd", "dir/file.bin", "C:\\build\\file.bin"]) {
      const body = `${part("token", token)}${part("nonce", "")}${part("sha1", sha1(data))}--b\r\nContent-Disposition: form-data; name="filedata"; filename="${name}"\r\n\r\n${data.toString("latin1")}\r\n--b--\r\n`;
      const res = await rawRequest(
        port,
        Buffer.concat([Buffer.from(head(Buffer.byteLength(body, "latin1"))), Buffer.from(body, "latin1")]),
      );
      assert.equal(res.status, 400, res.body);
      assert.equal(JSON.parse(res.body).error.code, "BAD_FILENAME", name);
    }
  });

  test("a malformed %-escape in the path is a 400, logged without a stack, many times over", async () => {
    for (let i = 0; i < 50; i++) {
      const res = await request(url).get("/sign/gpg/%ZZ");
      assertError(res, 400, "BAD_REQUEST");
    }
    assertError(await request(url).get("/keys/%E0%A4%A"), 400, "BAD_REQUEST");
    assertNoStack();
    assert.equal((await request(url).get("/livez")).status, 200);
  });
});

/** Sends a multipart upload of `size` zero bytes with signtool's own HTTP client, as fast as it goes. */
async function streamUpload(
  port: number,
  token: string,
  size: number,
): Promise<{ status: number; body: string; error?: string }> {
  const headPart = Buffer.from(
    `--b\r\nContent-Disposition: form-data; name="token"\r\n\r\n${token}\r\n--b\r\nContent-Disposition: form-data; name="nonce"\r\n\r\n\r\n--b\r\nContent-Disposition: form-data; name="filedata"; filename="big.bin"\r\n\r\n`,
  );
  const tail = Buffer.from("\r\n--b--\r\n");
  const chunk = Buffer.alloc(1024 * 1024);
  const write = (out: Writable, b: Buffer) =>
    new Promise<void>((resolve, reject) =>
      out.write(b, (err) => (err || out.destroyed ? reject(err ?? new Error("closed")) : resolve())),
    );
  try {
    const res = await send({
      method: "POST",
      url: `http://127.0.0.1:${port}/sign/gpg`,
      headers: {
        "Content-Type": "multipart/form-data; boundary=b",
        "Content-Length": headPart.length + size + tail.length,
      },
      timeoutMs: 20_000,
      async body(out) {
        await write(out, headPart);
        for (let sent = 0; sent < size; sent += chunk.length) await write(out, chunk);
        await write(out, tail);
      },
    });
    return { status: res.status, body: res.body.toString() };
  } catch (err) {
    return { status: 0, body: "", error: (err as Error).message };
  }
}

/** A multipart upload over a bare socket whose body this test sends as it likes. */
function head(contentLength: number): string {
  return `POST /sign/gpg HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: ${contentLength}\r\n\r\n`;
}
const part = (name: string, value: string) =>
  `--b\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;

describe("forged tokens and slow uploads cost little", () => {
  test("a forged token before filedata is answered before the upload is read", async () => {
    const token = await getToken(url, cluster.basicAuth);
    const claims = JSON.parse(Buffer.from(token.split(".")[2] as string, "base64url").toString());
    const forged = encodeToken(claims, { kid: token.split(".")[1] as string, secret: randomBytes(32) });
    const started = Date.now();
    // Declares 400 MiB, sends the fields and the file part's first bytes, then nothing more.
    const payload = `${part("token", forged)}${part("nonce", "")}--b\r\nContent-Disposition: form-data; name="filedata"; filename="big.bin"\r\n\r\nfirst bytes`;
    const res: RawResponse = await rawRequest(port, head(400 * 1024 * 1024) + payload, {
      end: false,
      timeoutMs: 5000,
    });
    assert.equal(res.status, 401);
    assert.equal(JSON.parse(res.body).error.code, "TOKEN_BAD_SIGNATURE");
    assert.ok(Date.now() - started < 3000, "answered at once, not after the body");
  });

  test("a client still sending a large upload reads the 401, not a reset connection", async () => {
    const token = await getToken(url, cluster.basicAuth);
    const claims = JSON.parse(Buffer.from(token.split(".")[2] as string, "base64url").toString());
    const secret = cluster.loaded.tokenSecrets[0] as TokenSecret;
    const forged = encodeToken(claims, { kid: secret.kid, secret: randomBytes(32) });
    const expired = encodeToken({ ...claims, iat: claims.iat - 100, exp: claims.iat - 10 }, secret);
    for (const [t, code] of [
      [forged, "TOKEN_BAD_SIGNATURE"],
      [expired, "TOKEN_EXPIRED"],
    ] as const) {
      for (let i = 0; i < 5; i++) {
        const answer = await streamUpload(port, t, 200 * 1024 * 1024);
        assert.equal(answer.status, 401, `${code} try ${i}: ${answer.error ?? answer.body}`);
        assert.equal(JSON.parse(answer.body).error.code, code);
      }
    }
  });

  test("an upload trickling below uploadMinBytesPerSecond gets 408 REQUEST_TIMEOUT", async () => {
    const token = await getToken(url, cluster.basicAuth);
    const body = `${part("token", token)}${part("nonce", "")}--b\r\nContent-Disposition: form-data; name="filedata"; filename="slow.bin"\r\n\r\n`;
    const started = Date.now();
    const answer = rawRequest(port, head(body.length + 100_000) + body, {
      end: false,
      timeoutMs: 8000,
      trickle: { bytes: 1, everyMs: 200 },
    });
    const res = await answer;
    assert.equal(res.status, 408, res.body);
    assert.equal(JSON.parse(res.body).error.code, "REQUEST_TIMEOUT");
    assert.ok(Date.now() - started < 5000);
    assertNoStack();
  });

  test("?wait on a digest nobody uploaded is a plain 404 at once", async () => {
    for (const digest of [sha1(randomBytes(8)), "ab".repeat(32)]) {
      const started = Date.now();
      const res = await request(url).get(`/sign/gpg/${digest}?wait=5`);
      assertError(res, 404, "NOT_FOUND");
      assert.equal(res.headers["x-pending"], undefined);
      assert.ok(Date.now() - started < 1000, `${Date.now() - started} ms`);
    }
  });
});
