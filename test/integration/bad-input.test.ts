import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import request from "supertest";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { encodeToken } from "../../src/tokens/codec.js";
import { getToken, sha1, upload } from "../helpers/api.js";
import { rawRequest } from "../helpers/raw-http.js";

const MAX_SIZE = 1024 * 1024;
let cluster: TestCluster;
let url: string;
let port: number;

before(async () => {
  cluster = await TestCluster.start({
    nodes: 1,
    overrides: {
      signing: { formats: { gpg: { maxSize: MAX_SIZE } } },
      token: { maxDuration: 3600, defaultDuration: 600 },
    },
  });
  url = cluster.node(0).url;
  port = cluster.node(0).port;
});
after(() => cluster?.stop());

function assertError(
  res: { status: number; body: unknown; text?: string },
  status: number,
  code: string,
): void {
  assert.equal(res.status, status, res.text);
  assert.equal((res.body as { error: { code: string } }).error.code, code, res.text);
}

const validToken = () => getToken(url, cluster.basicAuth);

describe("bad tokens", () => {
  test("malformed", async () => {
    for (const token of ["", "garbage", "v1.dev1.x.y", "v2.a.b.c", "x".repeat(5000)]) {
      assertError(await upload(url, { token, nonce: "", data: randomBytes(8) }), 401, "TOKEN_MALFORMED");
    }
  });

  test("forged: a changed payload or an unknown secret fails the MAC", async () => {
    const token = await validToken();
    const [v, kid, payload, mac] = token.split(".") as [string, string, string, string];
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString());
    const widened = Buffer.from(JSON.stringify({ ...claims, exp: claims.exp + 86400 })).toString("base64url");
    assertError(
      await upload(url, { token: `${v}.${kid}.${widened}.${mac}`, nonce: "", data: randomBytes(8) }),
      401,
      "TOKEN_BAD_SIGNATURE",
    );
    const other = encodeToken(claims, { kid, secret: randomBytes(32) });
    assertError(
      await upload(url, { token: other, nonce: "", data: randomBytes(8) }),
      401,
      "TOKEN_BAD_SIGNATURE",
    );
  });

  test("expired", async () => {
    const token = await validToken();
    const claims = JSON.parse(Buffer.from(token.split(".")[2] as string, "base64url").toString());
    const secret = cluster.loaded.tokenSecrets[0];
    assert.ok(secret);
    const now = Math.floor(Date.now() / 1000);
    const expired = encodeToken({ ...claims, iat: now - 120, exp: now - 60 }, secret);
    assertError(await upload(url, { token: expired, nonce: "", data: randomBytes(8) }), 401, "TOKEN_EXPIRED");
  });

  test("bound to another IP", async () => {
    const token = await getToken(url, cluster.basicAuth, { slave_ip: "10.1.2.3", duration: "60" });
    assertError(await upload(url, { token, nonce: "", data: randomBytes(8) }), 403, "IP_MISMATCH");
  });

  test("a nonce with CR/LF or junk: 403 NONCE_MISMATCH, never a 500", async () => {
    const token = await validToken();
    for (const nonce of ["x\r\nSet-Cookie: a=b", "\u0000", "1.short"]) {
      assertError(await upload(url, { token, nonce, data: randomBytes(8) }), 403, "NONCE_MISMATCH");
    }
  });

  test("the same upload retried with the previous nonce: accepted once more, with the same next nonce", async () => {
    const token = await validToken();
    const data = randomBytes(32);
    const first = await upload(url, { token, nonce: "", data });
    assert.equal(first.status, 202);
    const retry = await upload(url, { token, nonce: "", data });
    assert.equal(retry.status, 202, "an answer lost in transit: the retry is accepted");
    assert.equal(retry.headers["x-nonce"], first.headers["x-nonce"], "and hands out the same next nonce");
    assertError(await upload(url, { token, nonce: "", data }), 403, "NONCE_MISMATCH");
  });

  test("wrong nonce on a fresh token", async () => {
    const token = await validToken();
    assertError(
      await upload(url, { token, nonce: "1.notavalidmac", data: randomBytes(8) }),
      403,
      "NONCE_MISMATCH",
    );
    // The chain was not consumed by the refusal.
    assert.equal((await upload(url, { token, nonce: "", data: randomBytes(8) })).status, 202);
  });
});

describe("bad token requests", () => {
  test("no or wrong credentials: 401 with a Basic challenge", async () => {
    const none = await request(url).post("/token").type("form").send({ slave_ip: "127.0.0.1" });
    assertError(none, 401, "BAD_CREDENTIALS");
    assert.match(none.headers["www-authenticate"] ?? "", /^Basic/);
    const wrong = await request(url)
      .post("/token")
      .auth(cluster.state.issuer.user, "not-the-password")
      .type("form")
      .send({ slave_ip: "127.0.0.1" });
    assertError(wrong, 401, "BAD_CREDENTIALS");
  });

  test("missing or invalid fields", async () => {
    const post = () => request(url).post("/token").set("Authorization", cluster.basicAuth);
    assertError(await post().type("form").send({ duration: "60" }), 400, "BAD_REQUEST");
    assertError(await post().type("form").send({ slave_ip: "not-an-ip" }), 400, "BAD_REQUEST");
    assertError(
      await post().type("form").send({ slave_ip: "127.0.0.1", duration: "3601" }),
      400,
      "BAD_REQUEST",
    );
    assertError(
      await post().type("form").send({ slave_ip: "127.0.0.1", duration: "1.5" }),
      400,
      "BAD_REQUEST",
    );
    assertError(await post().type("form").send("slave_ip=1.2.3.4&slave_ip=1.2.3.5"), 400, "BAD_REQUEST");
    assertError(
      await post().type("form").send({ slave_ip: "127.0.0.1", formats: "gpg,nope" }),
      400,
      "UNKNOWN_FORMAT",
    );
    assertError(await post().type("json").send({ slave_ip: "127.0.0.1" }), 400, "BAD_REQUEST");
    assertError(await post().type("form").send({ expire: "garbage" }), 401, "TOKEN_MALFORMED");
  });
});

describe("bad uploads", () => {
  test("unknown format", async () => {
    assertError(
      await upload(url, { format: "nope", token: await validToken(), nonce: "", data: randomBytes(8) }),
      400,
      "UNKNOWN_FORMAT",
    );
    assertError(await request(url).get(`/sign/nope/${sha1(Buffer.from("x"))}`), 400, "UNKNOWN_FORMAT");
  });

  test("missing fields", async () => {
    const token = await validToken();
    const data = randomBytes(16);
    const noToken = await request(url)
      .post("/sign/gpg")
      .field("sha1", sha1(data))
      .field("filename", "a")
      .field("nonce", "")
      .attach("filedata", data, "a");
    assertError(noToken, 400, "BAD_REQUEST");
    const noFile = await request(url)
      .post("/sign/gpg")
      .field("sha1", sha1(data))
      .field("filename", "a")
      .field("token", token)
      .field("nonce", "");
    assertError(noFile, 400, "BAD_REQUEST");
    const noDigest = await request(url)
      .post("/sign/gpg")
      .field("filename", "a")
      .field("token", token)
      .field("nonce", "")
      .attach("filedata", data, "a");
    assertError(noDigest, 400, "BAD_REQUEST");
    const twoFiles = await request(url)
      .post("/sign/gpg")
      .field("sha1", sha1(data))
      .field("token", token)
      .field("nonce", "")
      .attach("filedata", data, "a")
      .attach("other", data, "b");
    assertError(twoFiles, 400, "BAD_REQUEST");
  });

  test("digest that does not match the upload", async () => {
    const res = await upload(url, {
      token: await validToken(),
      nonce: "",
      data: randomBytes(16),
      digest: sha1(Buffer.from("other")),
    });
    assertError(res, 400, "DIGEST_MISMATCH");
  });

  test("bad filenames: path separators, control characters, dot names", async () => {
    const token = await validToken();
    for (const filename of [
      "../etc/passwd",
      "dir/file",
      "dir\\file",
      "bad\u0001name",
      "tab\tname",
      "..",
      ".hidden",
    ]) {
      const res = await upload(url, { token, nonce: "", data: randomBytes(16), filename });
      assertError(res, 400, "BAD_FILENAME");
    }
  });

  test("wrong content type", async () => {
    const res = await request(url).post("/sign/gpg").type("json").send({ token: "x", nonce: "" });
    assertError(res, 400, "BAD_REQUEST");
    assertError(await request(url).post("/sign/gpg").type("text").send("hello"), 400, "BAD_REQUEST");
    const noBoundary = await request(url)
      .post("/sign/gpg")
      .set("Content-Type", "multipart/form-data")
      .send("x");
    assertError(noBoundary, 400, "BAD_REQUEST");
  });

  test("truncated multipart body", async () => {
    const boundary = "----signingtest";
    const token = await validToken();
    const body =
      `--${boundary}\r\nContent-Disposition: form-data; name="token"\r\n\r\n${token}\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="filedata"; filename="a"\r\n\r\nsome bytes, then noth`;
    const res = await request(url)
      .post("/sign/gpg")
      .set("Content-Type", `multipart/form-data; boundary=${boundary}`)
      .send(body);
    assertError(res, 400, "BAD_REQUEST");
  });

  test("oversized file, declared: 413 before the body is read", async () => {
    // The client declares 100 MiB and sends only the head: the node answers without waiting.
    const head =
      "POST /sign/gpg HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n" +
      `Content-Length: ${100 * 1024 * 1024}\r\n\r\n--b\r\n`;
    const res = await rawRequest(port, head, { end: false });
    assert.equal(res.status, 413);
    assert.match(res.headers, /connection: close/i);
    assert.equal(JSON.parse(res.body).error.code, "FILE_TOO_LARGE");
  });

  test("oversized file, streamed without a length: 413 at the limit", async () => {
    const res = await request(url)
      .post("/sign/gpg")
      .field("sha1", "0".repeat(40))
      .field("token", await validToken())
      .field("nonce", "")
      .attach("filedata", randomBytes(MAX_SIZE + 1), "big");
    assertError(res, 413, "FILE_TOO_LARGE");
  });

  test("huge headers: 431 in the API's JSON shape", async () => {
    const res = await rawRequest(
      port,
      `GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(64 * 1024)}\r\n\r\n`,
    );
    assert.equal(res.status, 431);
    assert.equal(JSON.parse(res.body).error.code, "HEADERS_TOO_LARGE");
  });

  test("bad digests, unknown paths and methods on GET", async () => {
    assertError(await request(url).get("/sign/gpg/xyz"), 400, "BAD_REQUEST");
    assertError(await request(url).get(`/sign/gpg/${"a".repeat(40)}`), 404, "NOT_FOUND");
    assertError(await request(url).get(`/sign/gpg/${"a".repeat(40)}?wait=abc`), 400, "BAD_REQUEST");
    assertError(await request(url).get("/nowhere"), 404, "NOT_FOUND");
    const wrongMethod = await request(url).delete("/token");
    assertError(wrongMethod, 405, "METHOD_NOT_ALLOWED");
    assert.equal(wrongMethod.headers.allow, "POST");
  });
});

test("aborted and oversized uploads give their slots back", async () => {
  // Its own node with room for two uploads: a leaked slot would turn the last uploads into 503s.
  const small = await TestCluster.start({
    nodes: 1,
    overrides: {
      signing: { maxPending: 2, maxPendingPerIp: 2, formats: { gpg: { maxSize: MAX_SIZE } } },
    },
  });
  try {
    const node = small.node(0);
    for (let i = 0; i < 3; i++) {
      await rawRequest(
        node.port,
        "POST /sign/gpg HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 500000\r\n\r\n" +
          '--b\r\nContent-Disposition: form-data; name="filedata"; filename="a"\r\n\r\npartial data',
        { end: false, timeoutMs: 300 },
      ).catch(() => undefined);
    }
    const tooBig = await request(node.url)
      .post("/sign/gpg")
      .field("sha1", "0".repeat(40))
      .field("token", await getToken(node.url, small.basicAuth))
      .field("nonce", "")
      .attach("filedata", randomBytes(MAX_SIZE + 10), "big");
    assertError(tooBig, 413, "FILE_TOO_LARGE");
    // The aborted requests' slots are freed when their sockets close: give that a moment.
    await new Promise((r) => setTimeout(r, 200));
    const tokens = await Promise.all([0, 1].map(() => getToken(node.url, small.basicAuth)));
    const answers = await Promise.all(
      tokens.map((token) => upload(node.url, { token, nonce: "", data: randomBytes(64), wait: 30 })),
    );
    for (const res of answers) assert.equal(res.status, 202, res.text);
  } finally {
    await small.stop();
  }
});

test("after all of the above the node still signs for a well-behaved client", async () => {
  const token = await validToken();
  const data = randomBytes(64);
  // One client holds an upload open (slow, never finished) while another signs.
  const stalled = rawRequest(
    port,
    "POST /sign/gpg HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 5000\r\n\r\n--b\r\n",
    { end: false, timeoutMs: 500 },
  ).catch(() => "stalled");
  const res = await upload(url, { token, nonce: "", data, wait: 30 });
  assert.equal(res.status, 202, res.text);
  assert.equal(res.body.sha1, sha1(data));
  assert.equal(await stalled, "stalled");
  const ready = await request(url).get("/readyz");
  assert.equal(ready.status, 200);
});
