import assert from "node:assert/strict";
import { request } from "node:http";
import { after, before, test } from "node:test";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { ERROR_CODES } from "../../src/http/errors.js";
import { encodeToken, verifyTokenLocally } from "../../src/tokens/codec.js";
import { getToken, sha1 } from "../helpers/api.js";

/**
 * Seeded fuzzing (reproducible: FUZZ_SEED=n) of the token parser, the multipart endpoint and
 * the form and JSON inputs. Every answer must be a documented status with a documented error
 * code: no crash, no 5xx, no hung request.
 */
const SEED = Number(process.env.FUZZ_SEED ?? 20261125);
let state = SEED >>> 0;
function rand(): number {
  // mulberry32
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const int = (n: number) => Math.floor(rand() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)] as T;
const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => int(256)));
const ascii = (n: number) => Array.from({ length: n }, () => String.fromCharCode(32 + int(95))).join("");

/** Small random edits: flips, cuts, insertions, duplications. */
function mutate(input: Buffer): Buffer {
  let b = Buffer.from(input);
  for (let k = 1 + int(3); k > 0; k--) {
    const at = int(b.length + 1);
    switch (int(5)) {
      case 0:
        if (b.length) b[Math.min(at, b.length - 1)] = int(256);
        break;
      case 1:
        b = b.subarray(0, at);
        break;
      case 2:
        b = Buffer.concat([b.subarray(0, at), bytes(1 + int(8)), b.subarray(at)]);
        break;
      case 3:
        b = Buffer.concat([b.subarray(0, at), b.subarray(int(b.length + 1))]);
        break;
      default:
        b = Buffer.concat([
          b.subarray(0, at),
          Buffer.from(pick(["\r\n", "--", '"', ";", "=", "\0", "%", "{"])),
          b.subarray(at),
        ]);
    }
  }
  return b;
}

let cluster: TestCluster;
let url: string;
let port: number;
let token: string;
before(async () => {
  cluster = await TestCluster.start({
    nodes: 1,
    overrides: { signing: { formats: { gpg: { maxSize: 64 * 1024 } } } },
  });
  url = cluster.node(0).url;
  port = cluster.node(0).port;
  token = await getToken(url, cluster.basicAuth);
});
after(() => cluster?.stop());

const DOCUMENTED = new Set([200, 202, 400, 401, 403, 404, 413, 429, 431, 503]);

function raw(
  method: string,
  path: string,
  headers: Record<string, string>,
  body: Buffer,
): Promise<{ status: number; code?: string }> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: "127.0.0.1",
      port,
      method,
      path,
      headers: { ...headers, "Content-Length": String(body.length) },
    });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`no answer in 10 s to ${method} ${path}`));
    }, 10_000);
    req.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    req.on("response", (res) => {
      let text = "";
      res.on("data", (c) => {
        text += c;
      });
      res.on("end", () => {
        clearTimeout(timer);
        let code: string | undefined;
        try {
          code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
        } catch {
          code = undefined;
        }
        resolve({ status: res.statusCode ?? 0, ...(code ? { code } : {}) });
      });
    });
    req.end(body);
  });
}

function check(what: string, r: { status: number; code?: string }): void {
  assert.ok(DOCUMENTED.has(r.status), `${what}: status ${r.status} (seed ${SEED})`);
  if (r.status >= 400)
    assert.ok(r.code && ERROR_CODES.has(r.code), `${what}: undocumented code ${r.code} (seed ${SEED})`);
}

test("token parser: 20 000 mutated and random tokens, never a throw, always a known result", () => {
  const secrets = new Map([["dev1", Buffer.alloc(32, 7)]]);
  const valid = encodeToken(
    { id: "A".repeat(22), ip: "10.0.0.1", iat: 1, exp: 4_000_000_000, ep: "e", sub: "bm" },
    { kid: "dev1", secret: Buffer.alloc(32, 7) },
  );
  const results = new Set<string>();
  for (let i = 0; i < 20_000; i++) {
    const input = i % 3 === 0 ? ascii(int(200)) : mutate(Buffer.from(valid)).toString("latin1");
    const r = verifyTokenLocally(input, secrets, "10.0.0.1", 100);
    results.add(r.ok ? "valid" : r.result);
  }
  for (const r of results)
    assert.ok(["valid", "malformed", "bad_signature", "expired", "ip_mismatch"].includes(r), r);
});

test("POST /sign/:format: 2000 mutated multipart uploads, every answer documented", async () => {
  const data = Buffer.from("checksums file\n");
  const boundary = "fuzzboundary";
  const form = (fields: [string, string][]) =>
    Buffer.concat([
      ...fields.map(([k, v]) =>
        Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`),
      ),
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="filedata"; filename="SHA256SUMS"\r\nContent-Type: application/octet-stream\r\n\r\n`,
      ),
      data,
      Buffer.from(`\r\n--${boundary}--\r\n`),
    ]);
  const good = form([
    ["sha1", sha1(data)],
    ["filename", "SHA256SUMS"],
    ["token", token],
    ["nonce", ""],
  ]);
  const types = [
    `multipart/form-data; boundary=${boundary}`,
    "multipart/form-data",
    "multipart/form-data; boundary=",
    "text/plain",
    "application/json",
    "multipart/mixed; boundary=x",
  ];
  const started = Date.now();
  for (let i = 0; i < 2000; i++) {
    const body = i % 10 === 0 ? bytes(int(4096)) : mutate(good);
    const type = i % 7 === 0 ? pick(types) : (types[0] as string);
    const path = pick([
      "/sign/gpg",
      "/sign/gpg",
      "/sign/sshsig",
      `/sign/${ascii(4).replace(/[^a-z]/g, "x")}`,
      "/sign/gpg?wait=abc",
      "/sign/gpg?wait=-1",
    ]);
    check(`upload ${i}`, await raw("POST", path, { "Content-Type": type }, body));
  }
  assert.ok(Date.now() - started < 120_000);
});

test("POST /token: 400 random forms and JSON bodies, every answer documented", async () => {
  const fields = ["slave_ip", "duration", "formats", "expire", ascii(5)];
  for (let i = 0; i < 400; i++) {
    let body: Buffer;
    let type: string;
    if (i % 4 === 0) {
      type = "application/json";
      body = mutate(
        Buffer.from(
          JSON.stringify({ slave_ip: "127.0.0.1", duration: int(100_000) - 50, formats: [ascii(3)] }),
        ),
      );
    } else {
      type = pick([
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=utf-8",
        "text/plain",
      ]);
      const pairs = Array.from(
        { length: int(6) },
        () =>
          `${encodeURIComponent(pick(fields))}=${encodeURIComponent(pick(["127.0.0.1", "::1", "999.1.1.1", String(int(1e6) - 10), ascii(int(40)), "", "gpg,sshsig", token.slice(0, int(token.length))]))}`,
      );
      body = i % 5 === 0 ? mutate(Buffer.from(pairs.join("&"))) : Buffer.from(pairs.join("&"));
    }
    const auth = i % 6 === 0 ? `Basic ${Buffer.from(ascii(12)).toString("base64")}` : cluster.basicAuth;
    check(`token ${i}`, await raw("POST", "/token", { "Content-Type": type, Authorization: auth }, body));
  }
});
