/**
 * Issue 32, Authenticode with the key in a PKCS#11 token: a real SoftHSM2 token whose RSA key
 * was generated inside it, a certificate for that key issued by the test CA, a real node that
 * has osslsigncode sign through OpenSSL's PKCS#11 engine (libengine-pkcs11-openssl), and
 * `osslsigncode verify` of what comes back. The node never reads the private key: only
 * osslsigncode logs in to the token, with the PIN on its stdin.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { createPublicKey, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { after, before, test } from "node:test";
import request from "supertest";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { SoftHsmToken } from "../../scripts/softhsm.js";
import { fetchSignature, getToken, sha256, upload } from "../helpers/api.js";
import {
  type CodeSigningPki,
  makeCodeSigningPki,
  minimalPe,
  osslsigncodeVerify,
  powershellScript,
} from "../helpers/authenticode.js";

/** Labels with a space, `;` and `/`: they reach osslsigncode percent-encoded (RFC 7512). */
const TOKEN_LABEL = "code signing;ci";
const KEY_LABEL = "release key/1";
const PIN = "pin-7391-unique";

let work: string;
let pki: CodeSigningPki;
let hsm: SoftHsmToken;
let certFile: string;
let cluster: TestCluster;
const logLines: string[] = [];

/** `pkcs11-tool` on the test's token, logged in. */
function tool(...args: string[]): string {
  const base = ["--module", hsm.module, "--token-label", hsm.label, "--login", "--pin", hsm.pin];
  const r = spawnSync("pkcs11-tool", [...base, ...args], { env: hsm.env(), encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

/** A code-signing certificate from the test CA for the token key's public half (the CSR's own key replaced). */
function certifyTokenKey(): string {
  const der = join(work, "token-key.der");
  tool("--read-object", "--type", "pubkey", "--label", KEY_LABEL, "-o", der);
  const pub = join(work, "token-key.pem");
  writeFileSync(
    pub,
    createPublicKey({ key: readFileSync(der), format: "der", type: "spki" }).export({
      format: "pem",
      type: "spki",
    }),
  );
  const out = join(work, "token-cert.pem");
  execFileSync(
    "openssl",
    [
      ...["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"],
      ...["-force_pubkey", pub, "-days", "1", "-extfile", "leaf.cnf", "-extensions", "leaf", "-out", out],
    ],
    { cwd: work, stdio: ["ignore", "ignore", "pipe"] },
  );
  return out;
}

/** The authenticode format's overrides: the token's key and its certificate, no key file. */
function pkcs11Overrides(cert: string) {
  return {
    signing: {
      formats: {
        authenticode: {
          keyFile: undefined,
          certFile: cert,
          pkcs11: {
            module: hsm.module,
            tokenLabel: TOKEN_LABEL,
            keyLabel: KEY_LABEL,
            pin: { file: hsm.pinFile },
          },
        },
      },
    },
  };
}

before(async () => {
  work = mkdtempSync(join(tmpdir(), "signing-authenticode-pkcs11-"));
  pki = makeCodeSigningPki(work);
  hsm = SoftHsmToken.create(join(work, "hsm"), {
    label: TOKEN_LABEL,
    pin: PIN,
    keys: [{ label: KEY_LABEL, id: "0a", type: "rsa:2048" }],
  });
  // osslsigncode gets SOFTHSM2_CONF from the node's environment, as a module's configuration.
  process.env.SOFTHSM2_CONF = hsm.conf;
  certFile = certifyTokenKey();
  const logTo = new Writable({
    write(chunk: Buffer, _enc, done) {
      logLines.push(chunk.toString("utf8"));
      done();
    },
  });
  cluster = await TestCluster.start({
    nodes: 1,
    authenticode: true,
    overrides: pkcs11Overrides(certFile),
    logTo,
  });
});
after(async () => {
  await cluster?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

async function uploadFile(data: Buffer, filename: string) {
  const { url } = cluster.node(0);
  const token = await getToken(url, cluster.basicAuth);
  return upload(url, { format: "authenticode", token, nonce: "", data, filename, wait: 30, acceptFile: true })
    .buffer(true)
    .parse((res, cb) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => cb(null, Buffer.concat(chunks)));
    });
}

/** An upload whose job fails: the upload is accepted (202), the GET of its result says why. */
async function failedJob(c: TestCluster, data: Buffer, filename: string) {
  const { url } = c.node(0);
  const token = await getToken(url, c.basicAuth);
  const res = await upload(url, { format: "authenticode", token, nonce: "", data, filename, wait: 30 });
  assert.equal(res.status, 202, res.text);
  return fetchSignature(url, "authenticode", sha256(data), 30);
}

/** Signed through the node; verifies against the test CA and not against another. */
async function signAndVerify(data: Buffer, filename: string): Promise<Buffer> {
  const res = await uploadFile(data, filename);
  assert.equal(res.status, 200, String(res.body));
  const signed = res.body as Buffer;
  const file = join(work, `signed-${filename}`);
  writeFileSync(file, signed);
  const verified = osslsigncodeVerify(file, pki.caFile);
  assert.ok(verified.ok, verified.output);
  assert.equal(osslsigncodeVerify(file, pki.otherCaFile).ok, false, "another CA does not vouch for it");
  return signed;
}

test("a PE and a PowerShell script are signed with the token's key and verify against the test CA only", async () => {
  await signAndVerify(minimalPe(), "tool.exe");
  const script = await signAndVerify(powershellScript("pkcs11"), "install.ps1");
  assert.match(script.toString("utf8"), /# SIG # Begin signature block/);
});

test("/formats and /readyz show the pkcs11 backend and the token certificate's fingerprint", async () => {
  const { url } = cluster.node(0);
  const formats = (await request(url).get("/formats")).body.formats as Record<string, string>[];
  const entry = formats.find((f) => f.name === "authenticode");
  const fingerprint = new X509Certificate(readFileSync(certFile)).fingerprint256;
  assert.equal(entry?.backend, "pkcs11", JSON.stringify(formats));
  assert.equal(entry?.fingerprint, fingerprint.replaceAll(":", "").toLowerCase());
  const ready = await request(url).get("/readyz");
  assert.equal(ready.body.status, "ok", JSON.stringify(ready.body));
});

test("the token's key is sensitive and non-extractable, and the PIN is in no log line", () => {
  assert.match(
    tool("--list-objects", "--type", "privkey"),
    /Access:\s+sensitive, always sensitive, never extractable/,
  );
  assert.ok(logLines.length > 0, "the node logged");
  assert.ok(!logLines.some((l) => l.includes(PIN)), "the PIN is logged nowhere");
});

test("a token that is gone answers 503 KEY_BACKEND_UNAVAILABLE (tool output in the log only); back, it signs again", async () => {
  hsm.remove();
  try {
    const pe = minimalPe();
    pe.write("token-away", 0x300, "latin1");
    const res = await uploadFile(pe, "away.exe");
    assert.equal(res.status, 503, String(res.body));
    const body = JSON.parse(String(res.body));
    assert.equal(body.error.code, "KEY_BACKEND_UNAVAILABLE");
    assert.doesNotMatch(body.error.message, /Unable to load module|PKCS11_get_private_key/);
    const got = await fetchSignature(cluster.node(0).url, "authenticode", sha256(pe), 0);
    assert.equal(got.status, 503, String(got.body));
    assert.ok(
      logLines.some((l) => l.includes("PKCS11_get_private_key")),
      "the tool's stderr is in the log",
    );
  } finally {
    hsm.restore();
  }
  const pe = minimalPe();
  pe.write("token-back", 0x300, "latin1");
  await signAndVerify(pe, "back.exe");
});

test("a wrong PIN fails the job SIGNING_FAILED; an unreadable certificate stops the node at start-up", async () => {
  const badPin = join(work, "bad-pin");
  writeFileSync(badPin, "0000\n", { mode: 0o600 });
  const overrides = pkcs11Overrides(certFile);
  overrides.signing.formats.authenticode.pkcs11.pin = { file: badPin };
  const wrong = await TestCluster.start({ nodes: 1, authenticode: true, overrides });
  try {
    const pe = minimalPe();
    pe.write("wrong-pin", 0x300, "latin1");
    const res = await failedJob(wrong, pe, "w.exe");
    assert.equal(res.status, 500, String(res.body));
    assert.equal(JSON.parse(String(res.body)).error.code, "SIGNING_FAILED");
  } finally {
    await wrong.stop();
  }
  await assert.rejects(
    TestCluster.start({
      nodes: 1,
      authenticode: true,
      overrides: pkcs11Overrides(join(work, "missing.pem")),
    }),
    /authenticode cannot sign with this key: the certificate in .*missing\.pem cannot be read/,
  );
});
