/**
 * Keys in a real PKCS#11 token: SoftHSM2, a token of its own per test in a temp dir
 * (SOFTHSM2_CONF), keys generated inside it by pkcs11-tool. Every signature goes through the
 * node's HTTP path (or signtool's) and is verified by gpg or ssh-keygen.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createPublicKey, randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import request from "supertest";
import { stringify } from "yaml";
import { type Overrides, TestCluster } from "../../scripts/in-process-cluster.js";
import { type SoftHsmKey, SoftHsmToken } from "../../scripts/softhsm.js";
import { buildConfig } from "../../src/config/load.js";
import { getToken, sha1, upload } from "../helpers/api.js";
import { HSM_KEY_CREATED_AT, hsmFormats } from "../helpers/hsm-formats.js";
import { fetchToken, hosts, signtool } from "../helpers/signtool.js";
import { clearsignVerify, gpgVerify, minisignVerify, sshVerify } from "../helpers/verify.js";

const NODE_BIN = new URL("../../src/bin/signing-node.js", import.meta.url).pathname;

/** Whatever a test made is gone after it, passed or failed. */
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function token(keys: SoftHsmKey[], opts: { pin?: string } = {}): SoftHsmToken {
  const t = SoftHsmToken.create(mkdtempSync(join(tmpdir(), "softhsm-")), { keys, ...opts });
  cleanups.push(() => t.destroy());
  // The module reads SOFTHSM2_CONF when it is initialized, in this process.
  process.env.SOFTHSM2_CONF = t.conf;
  return t;
}

async function cluster(overrides: Overrides): Promise<TestCluster> {
  const c = await TestCluster.start({ nodes: 1, overrides });
  cleanups.push(() => c.stop());
  return c;
}

/** One upload through the HTTP path, its signature verified by the format's real tool. */
async function signAndVerify(c: TestCluster, format: "gpg" | "sshsig"): Promise<void> {
  const { url } = c.node(0);
  const data = randomBytes(4096);
  const res = await upload(url, {
    format,
    token: await getToken(url, c.basicAuth),
    nonce: "",
    data,
    wait: 10,
  });
  assert.equal(res.status, 202, res.text);
  const signature = Buffer.from(res.body.signature as string);
  const publicKey = (await request(url).get(`/keys/${format}`)).text;
  const verified =
    format === "gpg" ? gpgVerify(publicKey, data, signature) : sshVerify(publicKey, "file", data, signature);
  assert.ok(verified.ok, verified.output);
}

for (const [gpgType, sshType] of [
  ["EC:edwards25519", "EC:edwards25519"],
  ["EC:prime256v1", "rsa:2048"],
  ["rsa:2048", "EC:prime256v1"],
] as const) {
  test(`gpg (${gpgType}) and sshsig (${sshType}) sign through a SoftHSM2 token, verified by gpg and ssh-keygen`, async () => {
    const t = token([
      { label: "gpg-key", id: "01", type: gpgType },
      { label: "ssh-key", id: "02", type: sshType },
    ]);
    const c = await cluster(hsmFormats(t, "gpg-key", "ssh-key"));
    await signAndVerify(c, "gpg");
    await signAndVerify(c, "sshsig");
    const formats = (await request(c.node(0).url).get("/formats")).body.formats as { fingerprint: string }[];
    assert.equal(formats.length, 2);
    const ready = await request(c.node(0).url).get("/readyz");
    assert.equal(ready.body.status, "ok", JSON.stringify(ready.body));
  });
}

test("minisign (its own Ed25519 key) and gpg-clearsign (gpg's key, shared) sign through a SoftHSM2 token, verified by minisign -V and gpg/gpgv", async () => {
  const t = token([
    { label: "gpg-key", id: "01", type: "EC:edwards25519" },
    { label: "ssh-key", id: "02", type: "EC:edwards25519" },
    { label: "minisign-key", id: "03", type: "EC:edwards25519" },
  ]);
  const pkcs11 = (label: string) => ({
    module: t.module,
    tokenLabel: t.label,
    keyLabel: label,
    pin: { file: t.pinFile },
  });
  const overrides = hsmFormats(t, "gpg-key", "ssh-key");
  const formats = (overrides.signing as { formats: Record<string, unknown> }).formats;
  formats["gpg-clearsign"] = {
    enabled: true,
    keyFile: undefined,
    passphrase: undefined,
    pkcs11: {
      ...pkcs11("gpg-key"),
      userId: "HSM Release <hsm@signing.invalid>",
      createdAt: HSM_KEY_CREATED_AT,
    },
  };
  formats.minisign = { enabled: true, keyFile: undefined, pkcs11: pkcs11("minisign-key") };
  const c = await cluster(overrides);
  const { url } = c.node(0);
  const listed = (await request(url).get("/formats")).body.formats as { name: string; backend: string }[];
  assert.deepEqual(listed.map((f) => [f.name, f.backend]).sort(), [
    ["gpg", "pkcs11"],
    ["gpg-clearsign", "pkcs11"],
    ["minisign", "pkcs11"],
    ["sshsig", "pkcs11"],
  ]);
  const tok = await getToken(url, c.basicAuth);
  const data = randomBytes(10_000);
  const mini = await upload(url, { format: "minisign", token: tok, nonce: "", data, wait: 10 });
  assert.equal(mini.status, 202, mini.text);
  const v1 = minisignVerify(
    (await request(url).get("/keys/minisign")).text,
    data,
    Buffer.from(mini.body.signature),
  );
  assert.ok(v1.ok, v1.output);
  const text = Buffer.from("Suite: stable\nComponents: main\n");
  const nonce = mini.headers["x-nonce"] as string;
  const clear = await upload(url, { format: "gpg-clearsign", token: tok, nonce, data: text, wait: 10 });
  assert.equal(clear.status, 202, clear.text);
  // The same OpenPGP key as gpg's: one certificate verifies both.
  assert.equal(
    (await request(url).get("/keys/gpg-clearsign")).text,
    (await request(url).get("/keys/gpg")).text,
  );
  const v2 = clearsignVerify((await request(url).get("/keys/gpg")).text, Buffer.from(clear.body.signature));
  assert.ok(v2.ok, v2.output);
  assert.equal(v2.text, text.toString());
});

test("signtool signs through ECDSA P-256 keys in a SoftHSM2 token (gpg, gpg-clearsign, sshsig): its own check accepts them, and so do gpg --verify, gpgv and ssh-keygen -Y verify", async () => {
  const t = token([
    { label: "gpg-key", id: "01", type: "EC:prime256v1" },
    { label: "ssh-key", id: "02", type: "EC:prime256v1" },
  ]);
  const overrides = hsmFormats(t, "gpg-key", "ssh-key");
  const formats = (overrides.signing as { formats: Record<string, object> }).formats;
  formats["gpg-clearsign"] = { ...formats.gpg, enabled: true };
  const c = await cluster(overrides);
  const { url } = c.node(0);
  const work = mkdtempSync(join(tmpdir(), "signtool-hsm-"));
  cleanups.push(() => rmSync(work, { recursive: true, force: true }));
  await fetchToken(work, [url], c.state.issuer, join(work, "token"));
  const text = Buffer.from("Suite: stable\nComponents: main\n");
  writeFileSync(join(work, "Release"), text);
  const sign = (...args: string[]) =>
    signtool(work, ["sign", "-t", "token", "-n", "nonce", "--max-time", "60", ...hosts([url]), ...args]);
  const detached = await sign("-f", "gpg", "-f", "sshsig", "Release");
  assert.equal(detached.code, 0, detached.stderr);
  const clear = await sign("-f", "gpg-clearsign", "-o", "InRelease", "Release");
  assert.equal(clear.code, 0, clear.stderr);

  const keyOf = async (format: string) => (await request(url).get(`/keys/${format}`)).text;
  const gpg = gpgVerify(await keyOf("gpg"), text, readFileSync(join(work, "Release.asc")));
  assert.ok(gpg.ok, gpg.output);
  assert.match(gpg.output, /using ECDSA key/);
  const ssh = sshVerify(await keyOf("sshsig"), "file", text, readFileSync(join(work, "Release.sig")));
  assert.ok(ssh.ok, ssh.output);
  assert.match(await keyOf("sshsig"), /^ecdsa-sha2-nistp256 /);
  const inRelease = clearsignVerify(await keyOf("gpg-clearsign"), readFileSync(join(work, "InRelease")));
  assert.ok(inRelease.ok, inRelease.output);
  assert.equal(inRelease.text, text.toString());
});

test("the gpg key's fingerprint is fixed by its public key and createdAt: a restart serves the same OpenPGP key", async () => {
  const t = token([
    { label: "gpg-key", id: "01", type: "EC:edwards25519" },
    { label: "ssh-key", id: "02", type: "EC:edwards25519" },
  ]);
  const fingerprints: string[] = [];
  for (let i = 0; i < 2; i++) {
    const c = await TestCluster.start({ nodes: 1, overrides: hsmFormats(t, "gpg-key", "ssh-key") });
    try {
      const res = await request(c.node(0).url).get("/keys/gpg");
      fingerprints.push(String(res.headers["x-key-fingerprint"]));
    } finally {
      await c.stop();
    }
  }
  assert.equal(fingerprints[0], fingerprints[1]);
  assert.match(fingerprints[0] ?? "", /^[0-9A-F]{40}$/);
});

test("the token's private keys are sensitive and non-extractable, and the node never asks for private key material", async () => {
  const t = token([{ label: "gpg-key", id: "01", type: "EC:edwards25519" }]);
  const objects = spawnSync(
    "pkcs11-tool",
    [
      "--module",
      t.module,
      "--token-label",
      t.label,
      "--login",
      "--pin",
      t.pin,
      "--list-objects",
      "--type",
      "privkey",
    ],
    { env: t.env(), encoding: "utf8" },
  );
  assert.equal(objects.status, 0, objects.stderr);
  assert.match(objects.stdout, /Access:\s+sensitive, always sensitive, never extractable/);
  // What the node asks a token for is in src/keys/pkcs11: no private value attribute, no wrap or copy.
  const dir = new URL("../../../src/keys/pkcs11/", import.meta.url).pathname;
  for (const file of readdirSync(dir).filter((f) => f.endsWith(".ts"))) {
    const source = readFileSync(join(dir, file), "utf8");
    for (const forbidden of [
      /CKA_VALUE\b/,
      /CKA_PRIVATE_EXPONENT/,
      /CKA_PRIME_[12]/,
      /CKA_EXPONENT_[12]/,
      /CKA_COEFFICIENT/,
      /C_WrapKey/,
      /C_CopyObject/,
      /C_SetAttributeValue/,
    ])
      assert.doesNotMatch(source, forbidden, `${file} names ${forbidden.source}`);
  }
});

test("PKCS#11 calls run only in the signing pool's worker threads: the main thread never loads pkcs11js", () => {
  const src = new URL("../../../src/", import.meta.url).pathname;
  const files = readdirSync(src, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".ts"));
  const loaders = files.filter((f) => {
    const text = readFileSync(join(src, f), "utf8");
    // A type-only import is erased at compile time: it loads nothing.
    const loads = (module: string) => new RegExp(`^import (?!type )[^;]*from "${module}";`, "m").test(text);
    return loads("pkcs11js") || (f.startsWith("keys/") && loads("\\.(/pkcs11)?/token\\.js"));
  });
  assert.deepEqual(loaders.sort(), ["keys/pkcs11/token.ts", "keys/pool-worker.ts"]);
  assert.match(readFileSync(join(src, "keys/pool.ts"), "utf8"), /new Worker\(new URL\("\.\/pool-worker\.js"/);
});

test("an extractable key in the token is refused at start-up", async () => {
  const t = token([]);
  // pkcs11-tool --extractable marks the private key CKA_EXTRACTABLE: a key that may leave the token.
  const gen = spawnSync(
    "pkcs11-tool",
    [
      ...["--module", t.module, "--token-label", t.label, "--login", "--pin", t.pin],
      ...["--keypairgen", "--key-type", "EC:prime256v1", "--label", "loose", "--id", "09", "--extractable"],
    ],
    { env: t.env(), encoding: "utf8" },
  );
  assert.equal(gen.status, 0, gen.stderr);
  const ssh = spawnSync(
    "pkcs11-tool",
    [
      ...["--module", t.module, "--token-label", t.label, "--login", "--pin", t.pin],
      ...["--keypairgen", "--key-type", "EC:edwards25519", "--label", "ssh-key", "--id", "02"],
    ],
    { env: t.env(), encoding: "utf8" },
  );
  assert.equal(ssh.status, 0, ssh.stderr);
  await assert.rejects(
    TestCluster.start({ nodes: 1, overrides: hsmFormats(t, "loose", "ssh-key") }),
    /cannot load gpg key from PKCS#11 token "signing" key label "loose": the private key may leave the token/,
  );
});

/** `pkcs11-tool` on the test's token, logged in. */
function tool(t: SoftHsmToken, ...args: string[]): string {
  const base = ["--module", t.module, "--token-label", t.label, "--login", "--pin", t.pin];
  const r = spawnSync("pkcs11-tool", [...base, ...args], { env: t.env(), encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

/** A token public key as a PEM file, and the token's public key object deleted. */
function exportPublicKey(t: SoftHsmToken, label: string): string {
  const der = join(t.dir, `${label}.der`);
  tool(t, "--read-object", "--type", "pubkey", "--label", label, "-o", der);
  tool(t, "--delete-object", "--type", "pubkey", "--label", label);
  const pem = join(t.dir, `${label}.pem`);
  const key = createPublicKey({ key: readFileSync(der), format: "der", type: "spki" });
  writeFileSync(pem, key.export({ format: "pem", type: "spki" }));
  return pem;
}

test("a configured public key file stands in for the token's public key object; one of another key is refused", async () => {
  const t = token([
    { label: "gpg-key", id: "01", type: "EC:prime256v1" },
    { label: "ssh-key", id: "02", type: "EC:edwards25519" },
    { label: "other", id: "03", type: "EC:prime256v1" },
  ]);
  const gpgPem = exportPublicKey(t, "gpg-key");
  const otherPem = exportPublicKey(t, "other");
  const withPublicKey = (file: string) => {
    const o = hsmFormats(t, "gpg-key", "ssh-key") as { signing: { formats: { gpg: { pkcs11: object } } } };
    o.signing.formats.gpg.pkcs11 = { ...o.signing.formats.gpg.pkcs11, publicKeyFile: file };
    return o;
  };
  await assert.rejects(
    TestCluster.start({ nodes: 1, overrides: withPublicKey(otherPem) }),
    /cannot load gpg key from PKCS#11 token "signing" key label "gpg-key": a probe signature does not verify with the public key/,
  );
  const c = await cluster(withPublicKey(gpgPem));
  await signAndVerify(c, "gpg");
});

/** The one line signing-node prints when it refuses to start, and its exit code. */
function startupLine(
  c: TestCluster,
  overrides: (config: Record<string, unknown>) => void,
): { status: number | null; stderr: string } {
  const config = structuredClone(c.state.config);
  overrides(config);
  const file = join(c.state.dir, "refused.yaml");
  writeFileSync(file, stringify(config), { mode: 0o600 });
  return spawnSync(process.execPath, [NODE_BIN, "--config", file], {
    encoding: "utf8",
    timeout: 30_000,
    env: process.env,
  });
}

function pkcs11Of(config: Record<string, unknown>, format: "gpg" | "sshsig"): Record<string, unknown> {
  const formats = (config.signing as { formats: Record<string, Record<string, unknown>> }).formats;
  const f = formats[format] as Record<string, unknown>;
  return f.pkcs11 as Record<string, unknown>;
}

test("wrong PIN, unloadable module, missing key label: signing-node refuses to start with one line naming the key and the reason, never the PIN", async () => {
  const t = token(
    [
      { label: "gpg-key", id: "01", type: "EC:edwards25519" },
      { label: "ssh-key", id: "02", type: "EC:edwards25519" },
    ],
    { pin: "246813" },
  );
  const c = await cluster({});
  const asHsm = (config: Record<string, unknown>) => {
    const merged = hsmFormats(t, "gpg-key", "ssh-key").signing as Record<string, unknown>;
    const signing = config.signing as Record<string, unknown>;
    signing.keyBreaker = merged.keyBreaker;
    signing.formats = JSON.parse(JSON.stringify(merged.formats));
  };
  const wrongPin = join(t.dir, "wrong-pin");
  writeFileSync(wrongPin, "999999\n", { mode: 0o600 });

  const cases: [string, (config: Record<string, unknown>) => void, RegExp][] = [
    [
      "wrong PIN",
      (config) => {
        asHsm(config);
        pkcs11Of(config, "gpg").pin = { file: wrongPin };
      },
      /^signing-node: cannot load gpg key from PKCS#11 token "signing" key label "gpg-key": wrong PIN \(CKR_PIN_INCORRECT\)\n$/,
    ],
    [
      "module unloadable",
      (config) => {
        asHsm(config);
        pkcs11Of(config, "sshsig").module = "/nonexistent/libnothing.so";
      },
      /^signing-node: cannot load sshsig key from PKCS#11 token "signing" key label "ssh-key": cannot load PKCS#11 module \/nonexistent\/libnothing\.so \(.+\)\n$/,
    ],
    [
      "missing key label",
      (config) => {
        asHsm(config);
        pkcs11Of(config, "gpg").keyLabel = "no-such-key";
      },
      /^signing-node: cannot load gpg key from PKCS#11 token "signing" key label "no-such-key": no private key with label "no-such-key" on token "signing"\n$/,
    ],
    [
      "missing token",
      (config) => {
        asHsm(config);
        pkcs11Of(config, "gpg").tokenLabel = "elsewhere";
      },
      /^signing-node: cannot load gpg key from PKCS#11 token "elsewhere" key label "gpg-key": no token labelled "elsewhere" \(tokens present: "signing"\)\n$/,
    ],
  ];
  for (const [what, change, line] of cases) {
    const r = startupLine(c, change);
    assert.equal(r.status, 2, `${what}: ${r.stderr}`);
    assert.match(r.stderr, line, what);
    assert.doesNotMatch(r.stderr, /246813|999999/, `${what}: the PIN is never printed`);
  }
});

test("a PIN file other users can read is refused at start-up, as every secret is", async () => {
  const t = token([
    { label: "gpg-key", id: "01", type: "EC:edwards25519" },
    { label: "ssh-key", id: "02", type: "EC:edwards25519" },
  ]);
  chmodSync(t.pinFile, 0o644);
  const c = await cluster({});
  const config = structuredClone(c.state.config);
  const signing = config.signing as Record<string, unknown>;
  signing.formats = JSON.parse(
    JSON.stringify((hsmFormats(t, "gpg-key", "ssh-key").signing as Record<string, unknown>).formats),
  );
  assert.throws(
    () => buildConfig(config, c.state.dir, {}),
    new RegExp(
      `signing.formats.gpg.pkcs11.pin: ${t.pinFile} is accessible to other users \\(mode 644\\): chmod 600 it`,
    ),
  );
});

async function readiness(url: string) {
  const r = await request(url).get("/readyz");
  return {
    status: r.status,
    body: r.body as { status: string; checks: { keys: { ok: boolean; detail: string } } },
  };
}

async function until<T>(
  what: string,
  probe: () => Promise<T>,
  ok: (v: T) => boolean,
  ms = 15_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`${what}: still ${JSON.stringify(v)}`);
    await sleep(100);
  }
}

test("the token removed mid-run: 503 KEY_BACKEND_UNAVAILABLE (never a bad signature), breaker open, readiness says so; then recovery when it is back", async () => {
  const t = token([
    { label: "gpg-key", id: "01", type: "EC:edwards25519" },
    { label: "ssh-key", id: "02", type: "EC:prime256v1" },
  ]);
  const c = await cluster(hsmFormats(t, "gpg-key", "ssh-key"));
  const { url } = c.node(0);
  await signAndVerify(c, "gpg");

  t.remove();
  const data = randomBytes(1024);
  const failed = await upload(url, { token: await getToken(url, c.basicAuth), nonce: "", data, wait: 10 });
  assert.equal(failed.status, 503, failed.text);
  assert.equal(failed.body.error.code, "KEY_BACKEND_UNAVAILABLE");
  assert.equal(failed.body.error.retryable, true);
  assert.equal(failed.headers["retry-after"], "1");
  // A client polling for that job is told the same, on any node.
  const polled = await request(url).get(`/sign/gpg/${sha1(data)}`);
  assert.equal(polled.status, 503, polled.text);
  assert.equal(polled.body.error.code, "KEY_BACKEND_UNAVAILABLE");

  // Readiness tries both keys through their breakers: both fail, so this node cannot sign at all.
  const down = await until(
    "readiness down",
    () => readiness(url),
    (r) => r.status === 503,
  );
  assert.equal(down.body.status, "unavailable");
  assert.match(down.body.checks.keys.detail, /gpg key \(pkcs11\): .*unavailable/);
  assert.match(down.body.checks.keys.detail, /sshsig key \(pkcs11\): .*unavailable/);
  // The breaker is open: an upload is refused at once, without a job.
  const refused = await upload(url, {
    format: "sshsig",
    token: await getToken(url, c.basicAuth),
    nonce: "",
    data: randomBytes(64),
    wait: 10,
  });
  assert.equal(refused.status, 503, refused.text);
  assert.equal(refused.body.error.code, "KEY_BACKEND_UNAVAILABLE");

  t.restore();
  await until(
    "readiness back",
    () => readiness(url),
    (r) => r.body.status === "ok",
  );
  await signAndVerify(c, "gpg");
  await signAndVerify(c, "sshsig");
});
