import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { stringify } from "yaml";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { getToken, sha1, upload } from "../helpers/api.js";
import { makePki, type TestPki } from "../helpers/tls.js";

const SIGNTOOL = new URL("../../src/bin/signtool.js", import.meta.url).pathname;
const NODE_BIN = new URL("../../src/bin/signing-node.js", import.meta.url).pathname;

/** A raw HTTP(S) request, optionally from another loopback address (127.0.0.2 is another "machine"). */
function send(
  url: string,
  opts: {
    method?: string;
    path: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
    localAddress?: string;
    ca?: Buffer;
    cert?: Buffer;
    key?: Buffer;
  },
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(opts.path, url);
    const make = u.protocol === "https:" ? httpsRequest : httpRequest;
    const req = make(u, {
      method: opts.method ?? "GET",
      headers: opts.headers,
      ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
      ...(opts.ca ? { ca: opts.ca } : {}),
      ...(opts.cert ? { cert: opts.cert, key: opts.key } : {}),
    });
    req.on("error", reject);
    req.on("response", (res) => {
      let body = "";
      res.on("data", (c) => {
        body += c;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.end(opts.body);
  });
}

/** A multipart upload as a string, for raw requests. */
function multipart(fields: Record<string, string>, data: Buffer): { body: Buffer; type: string } {
  const b = "----sectest";
  let head = "";
  for (const [k, v] of Object.entries(fields)) {
    head += `--${b}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`;
  }
  head += `--${b}\r\nContent-Disposition: form-data; name="filedata"; filename="f"\r\n\r\n`;
  const body = Buffer.concat([Buffer.from(head), data, Buffer.from(`\r\n--${b}--\r\n`)]);
  return { body, type: `multipart/form-data; boundary=${b}` };
}

describe("who may talk to a node, and as whom", () => {
  let cluster: TestCluster;
  before(async () => {
    cluster = await TestCluster.start({
      nodes: 1,
      overrides: {
        node: {
          trustProxy: ["127.0.0.3/32"],
          allowedClients: ["127.0.0.1/32", "127.0.0.2/32", "127.0.0.3/32"],
        },
      },
    });
  });
  after(() => cluster?.stop());

  const signFrom = async (localAddress: string, token: string, headers: Record<string, string> = {}) => {
    const data = randomBytes(32);
    const m = multipart({ sha1: sha1(data), filename: "f", token, nonce: "" }, data);
    return send(cluster.node(0).url, {
      method: "POST",
      path: "/sign/gpg",
      headers: { "Content-Type": m.type, ...headers },
      body: m.body,
      localAddress,
    });
  };

  test("a token replayed from another machine is refused (IP binding)", async () => {
    const token = await getToken(cluster.node(0).url, cluster.basicAuth);
    const other = await signFrom("127.0.0.2", token);
    assert.equal(other.status, 403);
    assert.equal(JSON.parse(other.body).error.code, "IP_MISMATCH");
    assert.equal((await signFrom("127.0.0.1", token)).status, 202);
  });

  test("X-Forwarded-For is believed only from a trusted proxy", async () => {
    const token = await getToken(cluster.node(0).url, cluster.basicAuth);
    // 127.0.0.2 is not a proxy we trust: claiming to forward for 127.0.0.1 changes nothing.
    const spoofed = await signFrom("127.0.0.2", token, { "X-Forwarded-For": "127.0.0.1" });
    assert.equal(JSON.parse(spoofed.body).error.code, "IP_MISMATCH");
    // 127.0.0.3 is: the right-most untrusted hop is the client.
    const proxied = await signFrom("127.0.0.3", token, { "X-Forwarded-For": "10.9.9.9, 127.0.0.1" });
    assert.equal(proxied.status, 202, proxied.body);
  });

  test("clients outside allowedClients get 403 before anything is parsed", async () => {
    const r = await send(cluster.node(0).url, { path: "/formats", localAddress: "127.0.0.4" });
    assert.equal(r.status, 403);
    assert.equal(JSON.parse(r.body).error.code, "CLIENT_NOT_ALLOWED");
    const upload4 = await send(cluster.node(0).url, {
      method: "POST",
      path: "/sign/gpg",
      headers: { "Content-Type": "text/plain" },
      body: "x",
      localAddress: "127.0.0.4",
    });
    assert.equal(JSON.parse(upload4.body).error.code, "CLIENT_NOT_ALLOWED");
  });

  test("a wrong issuer password from an allowed host: 401 (guessing is rate-limited: resilience.test)", async () => {
    const url = cluster.node(0).url;
    // Not in token.issuers (127.0.0.0/8 includes 127.0.0.2, so use a narrower cluster below).
    const wrong = await send(url, {
      method: "POST",
      path: "/token",
      headers: {
        Authorization: `Basic ${Buffer.from("build-master:guess").toString("base64")}`,
        "Content-Type": "application/x-www-form-urlencoded",
      },
      body: "slave_ip=127.0.0.1",
    });
    assert.equal(wrong.status, 401);
  });

  test("the audit log records tokens and signatures: who, from where, what, which key, which node", async () => {
    const token = await getToken(cluster.node(0).url, cluster.basicAuth);
    const data = randomBytes(64);
    assert.equal((await upload(cluster.node(0).url, { token, nonce: "", data, wait: 30 })).status, 202);
    await new Promise((r) => setTimeout(r, 200));
    const lines = readFileSync(join(cluster.state.dir, "audit.log"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    const issued = lines.find((l) => l.event === "token_issued");
    assert.ok(issued, "token_issued");
    for (const f of ["time", "node", "issuer", "from", "slaveIp", "tokenHash", "expiresAt"])
      assert.ok(f in issued, f);
    const signed = lines.find((l) => l.event === "signed" && l.bytes === 64);
    assert.ok(signed, "signed");
    for (const f of ["time", "node", "format", "sha256", "keyFingerprint", "tokenHash", "from"])
      assert.ok(f in signed, f);
    const raw = readFileSync(join(cluster.state.dir, "audit.log"), "utf8");
    assert.ok(!raw.includes(token) && !raw.includes(cluster.state.issuer.password));
  });
});

describe("per-issuer scopes", () => {
  let cluster: TestCluster;
  before(async () => {
    cluster = await TestCluster.start({ nodes: 1 });
  });
  after(() => cluster?.stop());

  test("an issuer limited to some build machines, hosts and durations", async () => {
    // Re-start the node with a scoped issuer (same password hash as the dev issuer).
    const cred = cluster.loaded.config.token.credentials[0] as { user: string; passwordHash: string };
    const scoped = await TestCluster.start({
      nodes: 1,
      overrides: {
        token: {
          issuers: ["127.0.0.0/8"],
          credentials: [{ ...cred, from: ["127.0.0.1/32"], slaveIps: ["10.1.0.0/16"], maxDuration: 600 }],
        },
      },
    });
    try {
      const url = scoped.node(0).url;
      const post = (body: string, localAddress = "127.0.0.1") =>
        send(url, {
          method: "POST",
          path: "/token",
          headers: { Authorization: cluster.basicAuth, "Content-Type": "application/x-www-form-urlencoded" },
          body,
          localAddress,
        });
      assert.equal((await post("slave_ip=10.1.2.3&duration=600")).status, 200);
      // No duration given: the default, capped at this issuer's maximum.
      assert.equal((await post("slave_ip=10.1.2.3")).status, 200);
      assert.equal(
        JSON.parse((await post("slave_ip=10.2.0.1&duration=60")).body).error.code,
        "ISSUER_NOT_ALLOWED",
      );
      assert.equal(JSON.parse((await post("slave_ip=10.1.2.3&duration=601")).body).error.code, "BAD_REQUEST");
      assert.equal(
        JSON.parse((await post("slave_ip=10.1.2.3", "127.0.0.2")).body).error.code,
        "ISSUER_NOT_ALLOWED",
      );
    } finally {
      await scoped.stop();
    }
  });
});

describe("TLS", () => {
  let pki: TestPki;
  let cluster: TestCluster;
  let mtls: TestCluster;
  before(async () => {
    pki = makePki();
    cluster = await TestCluster.start({
      nodes: 1,
      overrides: { node: { allowPlaintext: false }, tls: { cert: pki.serverCert, key: pki.serverKey } },
    });
    mtls = await TestCluster.start({
      nodes: 1,
      overrides: {
        node: { allowPlaintext: false },
        tls: { cert: pki.serverCert, key: pki.serverKey, clientCa: pki.clientCa },
      },
    });
  });
  after(async () => {
    await cluster?.stop();
    await mtls?.stop();
    rmSync(pki.dir, { recursive: true, force: true });
  });

  // Asynchronously: the nodes run in this process and must keep answering meanwhile.
  const signtool = (args: string[]): Promise<{ status: number | null; stderr: string }> =>
    new Promise((resolve) => {
      const child = spawn(process.execPath, [SIGNTOOL, ...args], { cwd: pki.dir });
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => {
        stderr += d;
      });
      child.on("close", (status) => resolve({ status, stderr }));
    });
  const tokenFor = async (c: TestCluster, extra: { cert?: Buffer; key?: Buffer } = {}) => {
    const r = await send(c.node(0).url, {
      method: "POST",
      path: "/token",
      headers: { Authorization: c.basicAuth, "Content-Type": "application/x-www-form-urlencoded" },
      body: "slave_ip=127.0.0.1&duration=600",
      ca: readFileSync(pki.serverCert),
      ...extra,
    });
    assert.equal(r.status, 200, r.body);
    writeFileSync(join(pki.dir, "token"), r.body);
  };

  test("signtool signs over HTTPS with the pinned certificate, and refuses a wrong one", async () => {
    assert.match(cluster.node(0).url, /^https:/);
    await tokenFor(cluster);
    writeFileSync(join(pki.dir, "a.txt"), "sign me over tls");
    const host = cluster.node(0).url.replace("https://", "");
    const wrong = await signtool([
      "sign",
      "-t",
      "token",
      "-n",
      "nonce",
      "-H",
      host,
      "-c",
      pki.otherCert,
      "-f",
      "gpg",
      "--max-time",
      "2",
      "a.txt",
    ]);
    assert.equal(wrong.status, 2, wrong.stderr); // a setup mistake, not an outage: exit 2 at once
    assert.match(wrong.stderr, /TLS certificate is not one -c vouches for \(DEPTH_ZERO_SELF_SIGNED_CERT\)/);
    const right = await signtool([
      "sign",
      "-t",
      "token",
      "-n",
      "nonce",
      "-H",
      host,
      "-c",
      pki.serverCert,
      "-f",
      "gpg",
      "a.txt",
    ]);
    assert.equal(right.status, 0, right.stderr);
  });

  test("mutual TLS: no client certificate, no connection; with one, signing works", async () => {
    const url = mtls.node(0).url;
    await assert.rejects(send(url, { path: "/livez", ca: readFileSync(pki.serverCert) }));
    const ok = await send(url, {
      path: "/livez",
      ca: readFileSync(pki.serverCert),
      cert: readFileSync(pki.clientCert),
      key: readFileSync(pki.clientKey),
    });
    assert.equal(ok.status, 200);
    await tokenFor(mtls, { cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey) });
    writeFileSync(join(pki.dir, "b.txt"), "sign me over mutual tls");
    const host = url.replace("https://", "");
    const r = await signtool([
      "sign",
      "-t",
      "token",
      "-n",
      "nonce-m",
      "-H",
      host,
      "-c",
      pki.serverCert,
      "--client-cert",
      pki.clientCert,
      "--client-key",
      pki.clientKey,
      "-f",
      "gpg",
      "b.txt",
    ]);
    assert.equal(r.status, 0, r.stderr);
  });
});

test("a world-readable private key stops signing-node at start-up (exit 2, named)", async () => {
  const cluster = await TestCluster.start({ nodes: 1 });
  try {
    const keyFile = cluster.state.keys.gpg.keyFile;
    chmodSync(keyFile, 0o644);
    const cfg = join(cluster.state.dir, "open.yaml");
    writeFileSync(cfg, stringify(cluster.state.config));
    const r = spawnSync(process.execPath, [NODE_BIN, "--config", cfg], { encoding: "utf8", timeout: 20_000 });
    assert.equal(r.status, 2);
    assert.match(
      r.stderr,
      new RegExp(
        `signing.formats.gpg.keyFile: ${keyFile} is accessible to other users \\(mode 644\\): chmod 600 it`,
      ),
    );
    chmodSync(keyFile, 0o600);
  } finally {
    await cluster.stop();
  }
});

test("secret rotation: a token signed with a rotated-out secret is refused, one signed with a kept old secret is not", async () => {
  const dir = mkdtempSync(join(tmpdir(), "signing-rotation-"));
  const secret = (name: string) => {
    writeFileSync(join(dir, name), randomBytes(32).toString("hex"), { mode: 0o600 });
    return join(dir, name);
  };
  const [oldFile, newFile] = [secret("old"), secret("new")];
  const before = await TestCluster.start({
    nodes: 1,
    overrides: { token: { secrets: [{ kid: "old", file: oldFile }] } },
  });
  let oldToken: string;
  try {
    oldToken = await getToken(before.node(0).url, before.basicAuth);
  } finally {
    await before.stop();
  }
  // Step 1 of a rotation: the new secret signs, the old one still verifies.
  const during = await TestCluster.start({
    nodes: 1,
    overrides: {
      token: {
        secrets: [
          { kid: "new", file: newFile },
          { kid: "old", file: oldFile },
        ],
      },
    },
  });
  try {
    const res = await upload(during.node(0).url, { token: oldToken, nonce: "", data: randomBytes(8) });
    assert.notEqual(
      res.body?.error?.code,
      "TOKEN_BAD_SIGNATURE",
      "the old secret still verifies during the rotation",
    );
    const fresh = await getToken(during.node(0).url, during.basicAuth);
    assert.equal(fresh.split(".")[1], "new", "new tokens carry the new kid");
  } finally {
    await during.stop();
  }
  // Step 2: the old secret removed: its tokens are forged as far as the cluster knows.
  const after2 = await TestCluster.start({
    nodes: 1,
    overrides: { token: { secrets: [{ kid: "new", file: newFile }] } },
  });
  try {
    const res = await upload(after2.node(0).url, { token: oldToken, nonce: "", data: randomBytes(8) });
    assert.equal(res.status, 401);
    assert.equal(res.body.error.code, "TOKEN_BAD_SIGNATURE");
  } finally {
    await after2.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
