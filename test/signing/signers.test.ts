import assert from "node:assert/strict";
import { type SpawnSyncReturns, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  createReadStream,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as openpgp from "openpgp";
import { type DevKeys, generateDevKeys } from "../../src/signing/dev-keys.js";
import { encodeOpenSshEd25519, parseOpenSshEd25519 } from "../../src/signing/openssh-key.js";
import { hashInput, KeyLoadError, type Signer } from "../../src/signing/signer.js";
import { loadGpgSigner } from "../../src/signing/signers/gpg.js";
import { loadSshsigSigner } from "../../src/signing/signers/sshsig.js";

const NAMESPACE = "file";
const IDENTITY = "dev@signing.invalid";

let dir: string;
let gnupgHome: string;
let keys: DevKeys;
let passphrase: string;
let gpgSigner: Signer;
let sshSigner: Signer;
/** name -> path of the sample inputs. */
const inputs = new Map<string, string>();

function run(cmd: string, args: string[], input?: Buffer | string): SpawnSyncReturns<string> {
  const res = spawnSync(cmd, args, {
    input: input ?? "",
    encoding: "utf8",
    stdio: ["pipe", "pipe", "pipe"],
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, GNUPGHOME: gnupgHome, LC_ALL: "C" },
  });
  if (res.error) throw res.error;
  return res;
}

async function signToFile(signer: Signer, file: string): Promise<string> {
  const sig = await signer.sign(await hashInput(createReadStream(file)));
  const sigFile = `${file}${signer.suffix}`;
  writeFileSync(sigFile, sig);
  return sigFile;
}

function gpgVerify(sigFile: string, dataFile: string): SpawnSyncReturns<string> {
  return run("gpg", ["--homedir", gnupgHome, "--batch", "--status-fd", "1", "--verify", sigFile, dataFile]);
}

function allowedSigners(pubLine: string): string {
  const file = join(dir, `allowed_signers_${randomBytes(4).toString("hex")}`);
  writeFileSync(file, `${IDENTITY} ${pubLine.trim()}\n`);
  return file;
}

function sshVerify(allowed: string, sigFile: string, dataFile: string): SpawnSyncReturns<string> {
  return run(
    "ssh-keygen",
    ["-Y", "verify", "-f", allowed, "-I", IDENTITY, "-n", NAMESPACE, "-s", sigFile],
    readFileSync(dataFile),
  );
}

function tamperedCopy(file: string): string {
  const data = readFileSync(file);
  const copy = `${file}.tampered`;
  const changed = data.length === 0 ? Buffer.from("x") : Buffer.from(data);
  if (data.length > 0) changed[changed.length >> 1] = (changed[changed.length >> 1] ?? 0) ^ 0x01;
  writeFileSync(copy, changed);
  return copy;
}

async function assertKeyLoadError(p: Promise<unknown>, check?: (err: KeyLoadError) => void): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof KeyLoadError, `expected KeyLoadError, got ${String(err)}`);
    check?.(err);
    return true;
  });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "signers-test-"));
  gnupgHome = join(dir, "gnupg");
  mkdirSync(gnupgHome, { mode: 0o700 });
  keys = await generateDevKeys(join(dir, "keys"));
  passphrase = readFileSync(keys.gpg.passphraseFile, "utf8").replace(/\r?\n$/, "");
  gpgSigner = await loadGpgSigner({ keyFile: keys.gpg.keyFile, passphrase });
  sshSigner = await loadSshsigSigner({ keyFile: keys.sshsig.keyFile, namespace: NAMESPACE });

  const imported = run("gpg", ["--homedir", gnupgHome, "--batch", "--import", keys.gpg.publicKeyFile]);
  assert.equal(imported.status, 0, imported.stderr);

  const inputDir = join(dir, "inputs");
  mkdirSync(inputDir);
  const empty = join(inputDir, "empty.bin");
  writeFileSync(empty, Buffer.alloc(0));
  inputs.set("empty", empty);
  const small = join(inputDir, "small.bin");
  writeFileSync(small, randomBytes(1024));
  inputs.set("1 KiB", small);
  const big = join(inputDir, "big.bin");
  const chunks: Buffer[] = [];
  for (let i = 0; i < 80; i++) chunks.push(randomBytes(64 * 1024));
  chunks.push(randomBytes(12345));
  writeFileSync(big, Buffer.concat(chunks));
  inputs.set("~5 MiB", big);
});

after(() => {
  if (!dir) return;
  spawnSync("gpgconf", ["--homedir", gnupgHome, "--kill", "all"], { stdio: "ignore" });
  rmSync(dir, { recursive: true, force: true });
});

describe("gpg signer", () => {
  test("metadata", () => {
    assert.equal(gpgSigner.format, "gpg");
    assert.equal(gpgSigner.suffix, ".asc");
    assert.match(gpgSigner.fingerprint, /^[0-9A-F]{40}$/);
    assert.match(gpgSigner.publicKey(), /^-----BEGIN PGP PUBLIC KEY BLOCK-----/);
    assert.equal(gpgSigner.publicKey().trim(), readFileSync(keys.gpg.publicKeyFile, "utf8").trim());
  });

  for (const name of ["empty", "1 KiB", "~5 MiB"]) {
    test(`signature over ${name} input verifies with gpg; tampered input does not`, async () => {
      const file = inputs.get(name) as string;
      const sigFile = await signToFile(gpgSigner, file);
      assert.match(readFileSync(sigFile, "utf8"), /^-----BEGIN PGP SIGNATURE-----/);
      const ok = gpgVerify(sigFile, file);
      assert.equal(ok.status, 0, ok.stderr);
      assert.match(ok.stdout, /\[GNUPG:\] GOODSIG /);
      assert.match(ok.stdout, new RegExp(`\\[GNUPG:\\] VALIDSIG ${gpgSigner.fingerprint} `));
      const bad = gpgVerify(sigFile, tamperedCopy(file));
      assert.notEqual(bad.status, 0);
      assert.doesNotMatch(bad.stdout, /GOODSIG/);
    });
  }

  test("a wrong passphrase is a KeyLoadError that does not reveal the passphrase", async () => {
    const wrong = "not-the-right-passphrase-Zq81";
    await assertKeyLoadError(loadGpgSigner({ keyFile: keys.gpg.keyFile, passphrase: wrong }), (err) => {
      assert.equal(err.format, "gpg");
      assert.ok(!err.message.includes(wrong));
      assert.ok(!err.message.includes(passphrase));
      assert.match(err.message, /passphrase/);
    });
  });

  test("an encrypted key without a passphrase is a KeyLoadError", async () => {
    await assertKeyLoadError(loadGpgSigner({ keyFile: keys.gpg.keyFile }));
  });

  test("a missing key file is a KeyLoadError", async () => {
    await assertKeyLoadError(loadGpgSigner({ keyFile: join(dir, "no-such-key.asc"), passphrase }), (err) => {
      assert.equal(err.file, join(dir, "no-such-key.asc"));
    });
  });

  test("a garbage key file is a KeyLoadError", async () => {
    const garbage = join(dir, "garbage.asc");
    writeFileSync(garbage, randomBytes(300));
    await assertKeyLoadError(loadGpgSigner({ keyFile: garbage, passphrase }));
    writeFileSync(garbage, readFileSync(keys.gpg.publicKeyFile));
    await assertKeyLoadError(loadGpgSigner({ keyFile: garbage, passphrase }));
  });
});

async function writeKey(name: string, armored: string): Promise<string> {
  const file = join(dir, name);
  writeFileSync(file, armored, { mode: 0o600 });
  return file;
}

describe("gpg signer: key types", () => {
  test("an RSA key signs natively and gpg verifies it", async () => {
    const { privateKey, publicKey } = await openpgp.generateKey({
      type: "rsa",
      rsaBits: 2048,
      userIDs: [{ email: "rsa@signing.invalid" }],
      format: "armored",
    });
    const signer = await loadGpgSigner({ keyFile: await writeKey("rsa.asc", privateKey) });
    const imported = run("gpg", ["--homedir", gnupgHome, "--batch", "--import"], publicKey);
    assert.equal(imported.status, 0, imported.stderr);
    for (const name of ["empty", "~5 MiB"]) {
      const file = inputs.get(name) as string;
      const sigFile = await signToFile(signer, file);
      const ok = gpgVerify(sigFile, file);
      assert.equal(ok.status, 0, ok.stderr);
      assert.match(ok.stdout, new RegExp(`\\[GNUPG:\\] VALIDSIG ${signer.fingerprint} `));
      assert.notEqual(gpgVerify(sigFile, tamperedCopy(file)).status, 0);
    }
  });

  test("a key that signs with a subkey: the signature names the subkey and verifies", async () => {
    const { privateKey, publicKey } = await openpgp.generateKey({
      type: "ecc",
      curve: "curve25519Legacy",
      userIDs: [{ email: "subkey@signing.invalid" }],
      subkeys: [{}, { sign: true }],
      format: "armored",
    });
    const key = await openpgp.readPrivateKey({ armoredKey: privateKey });
    const subkeyFpr = (await key.getSigningKey()).getFingerprint().toUpperCase();
    assert.notEqual(subkeyFpr, key.getFingerprint().toUpperCase());
    const signer = await loadGpgSigner({ keyFile: await writeKey("subkey.asc", privateKey) });
    assert.equal(run("gpg", ["--homedir", gnupgHome, "--batch", "--import"], publicKey).status, 0);
    const file = inputs.get("1 KiB") as string;
    const ok = gpgVerify(await signToFile(signer, file), file);
    assert.equal(ok.status, 0, ok.stderr);
    // VALIDSIG <signing key> ... <primary key>
    assert.match(ok.stdout, new RegExp(`VALIDSIG ${subkeyFpr} .* ${signer.fingerprint}\\n`));
  });

  test("an unsupported algorithm (ECDSA P-256) is a KeyLoadError naming it", async () => {
    const { privateKey } = await openpgp.generateKey({
      type: "ecc",
      curve: "nistP256",
      userIDs: [{ email: "p256@signing.invalid" }],
      format: "armored",
    });
    await assertKeyLoadError(loadGpgSigner({ keyFile: await writeKey("p256.asc", privateKey) }), (err) => {
      assert.match(err.message, /ecdsa.*supported: Ed25519, RSA/);
    });
  });

  test("a v6 key is a KeyLoadError", async () => {
    const { privateKey } = await openpgp.generateKey({
      type: "curve25519",
      userIDs: [{ email: "v6@signing.invalid" }],
      format: "armored",
      config: { v6Keys: true },
    });
    await assertKeyLoadError(loadGpgSigner({ keyFile: await writeKey("v6.asc", privateKey) }), (err) => {
      assert.match(err.message, /v6 key/);
    });
  });

  test("two signatures of the same input both verify, and a signature carries its creation time", async () => {
    const file = inputs.get("1 KiB") as string;
    const hash = await hashInput(createReadStream(file));
    // The hash is copied, not consumed: it signs twice and still digests.
    const first = await gpgSigner.sign(hash);
    const second = await gpgSigner.sign(hash);
    assert.equal(hash.sha256.digest("hex").length, 64);
    for (const sig of [first, second]) {
      const parsed = await openpgp.readSignature({ armoredSignature: sig.toString("utf8") });
      const created = parsed.packets[0]?.created?.getTime() ?? 0;
      assert.ok(Math.abs(created - Date.now()) < 60_000, `creation time ${created}`);
      const sigFile = join(dir, `twice-${randomBytes(4).toString("hex")}.asc`);
      writeFileSync(sigFile, sig);
      assert.equal(gpgVerify(sigFile, file).status, 0);
    }
  });

  test("a signature whose packet is a multiple of 3 bytes verifies with gpg (armor checksum, GnuPG T7071)", async () => {
    // An EdDSA value with a leading zero byte is one byte shorter; with both shorter (about
    // one signature in 25 000) the packet is 117 bytes, its base64 ends without '=' padding,
    // and gpg 2.2/2.4 cannot read such armor unless a CRC-24 line ends it.
    const packetLength = (sig: Buffer) =>
      Buffer.from(
        sig
          .toString("utf8")
          .split("\n")
          .filter((l) => l !== "" && !l.startsWith("-----") && !l.startsWith("="))
          .join(""),
        "base64",
      ).length;
    for (let tries = 0; tries < 1_000_000; tries++) {
      const data = randomBytes(16);
      const sig = await gpgSigner.sign(await hashInput(data));
      if (packetLength(sig) % 3 !== 0) continue;
      const file = join(dir, "padless");
      writeFileSync(file, data);
      writeFileSync(`${file}.asc`, sig);
      const r = gpgVerify(`${file}.asc`, file);
      assert.equal(r.status, 0, `${sig.toString("utf8")}\n${r.stdout}${r.stderr}`);
      assert.match(sig.toString("utf8"), /\n=[A-Za-z0-9+/]{4}\n-----END PGP SIGNATURE-----\n$/);
      return;
    }
    assert.fail("no signature with a 117-byte packet in a million tries");
  });
});

describe("sshsig signer", () => {
  test("metadata", () => {
    assert.equal(sshSigner.format, "sshsig");
    assert.equal(sshSigner.suffix, ".sig");
    assert.match(sshSigner.fingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/);
    assert.match(sshSigner.publicKey(), /^ssh-ed25519 AAAA\S+ dev@signing\.invalid$/);
    assert.equal(sshSigner.publicKey(), readFileSync(keys.sshsig.publicKeyFile, "utf8").trim());
  });

  test("the dev key file is a valid OpenSSH key for ssh-keygen", () => {
    const derived = run("ssh-keygen", ["-y", "-f", keys.sshsig.keyFile]);
    assert.equal(derived.status, 0, derived.stderr);
    assert.equal(
      derived.stdout.trim().split(" ").slice(0, 2).join(" "),
      sshSigner.publicKey().split(" ").slice(0, 2).join(" "),
    );
    const fp = run("ssh-keygen", ["-lf", keys.sshsig.keyFile]);
    assert.equal(fp.status, 0, fp.stderr);
    assert.equal(fp.stdout.split(" ")[1], sshSigner.fingerprint);
  });

  for (const name of ["empty", "1 KiB", "~5 MiB"]) {
    test(`signature over ${name} input verifies with ssh-keygen; tampered input does not`, async () => {
      const file = inputs.get(name) as string;
      const sigFile = await signToFile(sshSigner, file);
      const armored = readFileSync(sigFile, "utf8");
      assert.match(armored, /^-----BEGIN SSH SIGNATURE-----\n/);
      assert.match(armored, /\n-----END SSH SIGNATURE-----\n$/);
      const allowed = allowedSigners(sshSigner.publicKey());
      const ok = sshVerify(allowed, sigFile, file);
      assert.equal(ok.status, 0, ok.stderr);
      const bad = sshVerify(allowed, sigFile, tamperedCopy(file));
      assert.notEqual(bad.status, 0);
    });
  }

  test("a signature for another namespace does not verify", async () => {
    const other = await loadSshsigSigner({ keyFile: keys.sshsig.keyFile, namespace: "git" });
    const file = inputs.get("1 KiB") as string;
    const sigFile = join(dir, "other-namespace.sig");
    writeFileSync(sigFile, await other.sign(await hashInput(createReadStream(file))));
    const res = sshVerify(allowedSigners(sshSigner.publicKey()), sigFile, file);
    assert.notEqual(res.status, 0);
  });

  test("a key written by ssh-keygen loads, verifies, and has ssh-keygen's fingerprint", async () => {
    const keyFile = join(dir, "ssh-keygen-ed25519");
    const gen = run("ssh-keygen", ["-t", "ed25519", "-N", "", "-C", "compat@test", "-f", keyFile, "-q"]);
    assert.equal(gen.status, 0, gen.stderr);
    const signer = await loadSshsigSigner({ keyFile, namespace: NAMESPACE });
    const fp = run("ssh-keygen", ["-lf", keyFile]);
    assert.equal(fp.status, 0, fp.stderr);
    assert.equal(fp.stdout.split(" ")[1], signer.fingerprint);
    assert.equal(signer.publicKey(), readFileSync(`${keyFile}.pub`, "utf8").trim());
    for (const name of ["empty", "~5 MiB"]) {
      const file = inputs.get(name) as string;
      const sigFile = join(dir, `compat-${name.replace(/\W/g, "")}.sig`);
      writeFileSync(sigFile, await signer.sign(await hashInput(createReadStream(file))));
      const res = sshVerify(allowedSigners(signer.publicKey()), sigFile, file);
      assert.equal(res.status, 0, res.stderr);
    }
  });

  test("an encrypted OpenSSH key is a KeyLoadError mentioning encryption", async () => {
    const keyFile = join(dir, "ssh-keygen-encrypted");
    const gen = run("ssh-keygen", ["-t", "ed25519", "-N", "secretpw", "-f", keyFile, "-q"]);
    assert.equal(gen.status, 0, gen.stderr);
    await assertKeyLoadError(loadSshsigSigner({ keyFile, namespace: NAMESPACE }), (err) => {
      assert.equal(err.format, "sshsig");
      assert.match(err.message, /encrypted/);
    });
  });

  test("an OpenSSH key neither Ed25519 nor RSA is a KeyLoadError", async () => {
    const keyFile = join(dir, "ssh-keygen-ecdsa");
    const gen = run("ssh-keygen", ["-t", "ecdsa", "-N", "", "-f", keyFile, "-q"]);
    assert.equal(gen.status, 0, gen.stderr);
    await assertKeyLoadError(loadSshsigSigner({ keyFile, namespace: NAMESPACE }), (err) => {
      assert.match(err.message, /ecdsa/);
    });
  });

  test("a missing key file is a KeyLoadError", async () => {
    await assertKeyLoadError(loadSshsigSigner({ keyFile: join(dir, "no-such-key"), namespace: NAMESPACE }));
  });

  test("a garbage key file is a KeyLoadError", async () => {
    const garbage = join(dir, "garbage-ssh");
    writeFileSync(garbage, randomBytes(300));
    await assertKeyLoadError(loadSshsigSigner({ keyFile: garbage, namespace: NAMESPACE }));
    writeFileSync(garbage, "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n");
    await assertKeyLoadError(loadSshsigSigner({ keyFile: garbage, namespace: NAMESPACE }));
  });
});

describe("openssh-key", () => {
  test("checkint mismatch is reported", async () => {
    const { generateKeyPairSync } = await import("node:crypto");
    const pem = encodeOpenSshEd25519(generateKeyPairSync("ed25519").privateKey, "x");
    const body = pem.split("\n").slice(1, -2).join("");
    const raw = Buffer.from(body, "base64");
    // The private section starts after magic(15) + "none"(8) + "none"(8) + ""(4) + nkeys(4) + pubblob(4+51) + len(4).
    const checkOffset = 15 + 8 + 8 + 4 + 4 + 4 + 51 + 4;
    raw[checkOffset] = (raw[checkOffset] ?? 0) ^ 0xff;
    const broken = `-----BEGIN OPENSSH PRIVATE KEY-----\n${raw.toString("base64")}\n-----END OPENSSH PRIVATE KEY-----\n`;
    assert.throws(() => parseOpenSshEd25519(broken), /checkint/);
  });

  test("encoded keys wrap base64 at 70 columns", async () => {
    const { generateKeyPairSync } = await import("node:crypto");
    const pem = encodeOpenSshEd25519(generateKeyPairSync("ed25519").privateKey, "comment here");
    const lines = pem.trimEnd().split("\n").slice(1, -1);
    assert.ok(lines.slice(0, -1).every((l) => l.length === 70));
    assert.equal(parseOpenSshEd25519(pem).comment, "comment here");
  });
});

describe("generateDevKeys", () => {
  test("is idempotent: a second call reuses the same files unchanged", async () => {
    const files = [
      keys.gpg.keyFile,
      keys.gpg.passphraseFile,
      keys.gpg.publicKeyFile,
      keys.sshsig.keyFile,
      keys.sshsig.publicKeyFile,
    ];
    const before = files.map((f) => readFileSync(f));
    const again = await generateDevKeys(join(dir, "keys"));
    assert.deepEqual(again, keys);
    files.forEach((f, i) => {
      assert.ok(readFileSync(f).equals(before[i] as Buffer), `${f} changed`);
    });
  });

  test("key and passphrase files are mode 0600, the directory 0700", () => {
    for (const f of [keys.gpg.keyFile, keys.gpg.passphraseFile, keys.sshsig.keyFile]) {
      assert.equal(statSync(f).mode & 0o777, 0o600, f);
    }
    assert.equal(statSync(join(dir, "keys")).mode & 0o777, 0o700);
  });

  test("the passphrase is 24 random bytes in base64url", () => {
    assert.match(passphrase, /^[A-Za-z0-9_-]{32}$/);
  });
});

test("a gpg signer refuses to sign past its key's expiry", async () => {
  const { privateKey } = await openpgp.generateKey({
    type: "ecc",
    curve: "curve25519Legacy",
    userIDs: [{ email: "short@signing.invalid" }],
    keyExpirationTime: 2,
    format: "armored",
  });
  const signer = await loadGpgSigner({ keyFile: await writeKey("short.asc", privateKey) });
  assert.ok(signer.expiresAt && signer.expiresAt.getTime() > Date.now());
  await signer.sign(await hashInput(Buffer.from("in time")));
  await new Promise((r) => setTimeout(r, (signer.expiresAt as Date).getTime() - Date.now() + 100));
  await assert.rejects(signer.sign(await hashInput(Buffer.from("too late"))), /expired at/);
});
