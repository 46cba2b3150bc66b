import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as openpgp from "openpgp";
import { SoftHsmToken } from "../../scripts/softhsm.js";
import { verifyP256Digest } from "../../src/client/ecdsa-p256.js";
import { checkClearsigned } from "../../src/client/verify-clearsign.js";
import { checkOpenpgpSignature, openpgpVerifyingKeys } from "../../src/client/verify-openpgp.js";
import { fileKey } from "../../src/keys/file.js";
import type { SigningKey } from "../../src/keys/key.js";
import { openPkcs11Key } from "../../src/keys/pkcs11/key.js";
import { SigningPool } from "../../src/keys/pool.js";
import { type DevKeys, generateDevKeys } from "../../src/signing/dev-keys.js";
import { encodeOpenSshEd25519 } from "../../src/signing/openssh-key.js";
import { hashInput, type Signer } from "../../src/signing/signer.js";
import { gpgSignerForKey, loadGpgSigner } from "../../src/signing/signers/gpg.js";
import { loadMinisignSigner } from "../../src/signing/signers/minisign.js";
import { loadSshsigSigner, sshsigSignerForKey } from "../../src/signing/signers/sshsig.js";
import { checkMinisignSignature, minisignVerifyingKey } from "../../src/signing/verify-minisign.js";
import { checkSshSignature, sshVerifyingKey } from "../../src/signing/verify-sshsig.js";
import { clearsignVerify, gpgVerify, sshVerify } from "../helpers/verify.js";

/**
 * signtool's own signature checks (issue 28): every signature the nodes make verifies, and
 * anything else (another file, another key, a flipped bit, not a signature) does not. gpg and
 * ssh-keygen make signatures too, so the checks are not only in agreement with our signer.
 */
let dir: string;
let keys: DevKeys;
let gpg: Signer;
let ssh: Signer;
const data = randomBytes(3000);
const other = randomBytes(3000);
const sha = (b: Buffer) => createHash("sha256").update(b);
const rehashOf = (b: Buffer) => async (alg: string) => createHash(alg).update(b);

/** An armored signature (or cleartext-signed text) with the last byte of its binary, the signature's own, changed. */
function flipLastByte(armored: string | Buffer): string {
  const lines = armored.toString().split("\n");
  const begin = lines.findIndex((l) => /^-----BEGIN (PGP|SSH) SIGNATURE-----$/.test(l));
  const end = lines.findIndex((l) => /^-----END (PGP|SSH) SIGNATURE-----$/.test(l));
  const base64 = lines.slice(begin + 1, end).filter((l) => l !== "" && !l.startsWith("="));
  const bytes = Buffer.from(base64.join(""), "base64");
  bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 1;
  return [...lines.slice(0, begin + 1), "", bytes.toString("base64"), ...lines.slice(end)].join("\n");
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "client-verify-"));
  keys = await generateDevKeys(join(dir, "keys"));
  const passphrase = readFileSync(keys.gpg.passphraseFile, "utf8").trim();
  gpg = await loadGpgSigner({ keyFile: keys.gpg.keyFile, passphrase });
  ssh = await loadSshsigSigner({ keyFile: keys.sshsig.keyFile, namespace: "file" });
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe("OpenPGP detached signatures", () => {
  test("the node's signature verifies; another file, another key, or a changed byte does not", async () => {
    const trusted = await openpgpVerifyingKeys(gpg.publicKey());
    const sig = (await gpg.sign({ sha256: sha(data), fileName: "data" })).toString();
    assert.equal(await checkOpenpgpSignature(sig, trusted, sha(data), rehashOf(data)), undefined);
    assert.match(
      (await checkOpenpgpSignature(sig, trusted, sha(other), rehashOf(other))) ?? "",
      /not made over this file|does not verify/,
    );
    const stranger = await openpgp.generateKey({
      type: "ecc",
      curve: "ed25519Legacy",
      userIDs: [{ email: "x@y.invalid" }],
      format: "armored",
    });
    const strangerKeys = await openpgpVerifyingKeys(stranger.publicKey);
    assert.match(
      (await checkOpenpgpSignature(sig, strangerKeys, sha(data), rehashOf(data))) ?? "",
      /does not verify/,
    );
    const lines = sig.split("\n");
    const i = lines.findIndex((l) => l.length > 40);
    const flipped = lines[i] as string;
    lines[i] = `${flipped.slice(0, 20)}${flipped[20] === "A" ? "B" : "A"}${flipped.slice(21)}`;
    assert.notEqual(
      await checkOpenpgpSignature(lines.join("\n"), trusted, sha(data), rehashOf(data)),
      undefined,
    );
    for (const junk of [
      "NOT A SIGNATURE",
      "",
      "-----BEGIN PGP SIGNATURE-----\n\n!!!\n-----END PGP SIGNATURE-----\n",
    ])
      assert.notEqual(await checkOpenpgpSignature(junk, trusted, sha(data), rehashOf(data)), undefined, junk);
  });
});

describe("signatures made by gpg itself", () => {
  let home: string;
  const text = Buffer.from("Suite: stable\n- dash\nFrom here\n");
  const gpgRun = (args: string[]) =>
    spawnSync(
      "gpg",
      ["--homedir", home, "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "", ...args],
      { input: "", encoding: "utf8" },
    );
  /** gpg's public key of `name`, as signtool reads it. */
  const trustedKey = async (name: string) =>
    openpgpVerifyingKeys(gpgRun(["--armor", "--export", `${name}@test.invalid`]).stdout);
  /** gpg's signature (detached, or the cleartext-signed file) of `file` by `name`'s key. */
  function gpgSign(name: string, file: string, how: string[]): string {
    const out = join(dir, `${name}-${how.join("")}.asc`);
    const signed = gpgRun(["--local-user", `${name}@test.invalid`, ...how, "-o", out, file]);
    assert.equal(signed.status, 0, signed.stderr);
    return readFileSync(out, "utf8");
  }
  const KEYS = [
    ["ed25519", "ed"],
    ["rsa2048", "rsa"],
    ["nistp256", "p256"],
    ["dsa2048", "dsa"],
  ] as const;

  before(() => {
    home = join(dir, "gnupg");
    mkdirSync(home, { mode: 0o700 });
    writeFileSync(join(dir, "data.bin"), data);
    writeFileSync(join(dir, "Release"), text);
    for (const [algo, name] of KEYS) {
      const made = gpgRun(["--quick-gen-key", `${name}@test.invalid`, algo, "sign", "never"]);
      assert.equal(made.status, 0, made.stderr);
    }
  });
  after(() => spawnSync("gpgconf", ["--homedir", home, "--kill", "all"], { stdio: "ignore" }));

  test("detached, with SHA-256 and SHA-512, by Ed25519, RSA and ECDSA P-256 keys: they verify; over another file they do not", async () => {
    for (const name of ["ed", "rsa", "p256"]) {
      const trusted = await trustedKey(name);
      for (const digest of ["SHA256", "SHA512"]) {
        const sig = gpgSign(name, join(dir, "data.bin"), [
          "--digest-algo",
          digest,
          "--armor",
          "--detach-sign",
        ]);
        assert.equal(
          await checkOpenpgpSignature(sig, trusted, sha(data), rehashOf(data)),
          undefined,
          `${name} ${digest}`,
        );
        assert.notEqual(await checkOpenpgpSignature(sig, trusted, sha(other), rehashOf(other)), undefined);
        assert.match(
          (await checkOpenpgpSignature(flipLastByte(sig), trusted, sha(data), rehashOf(data))) ?? "",
          /does not verify with the trusted key/,
          `${name} ${digest} flipped`,
        );
      }
    }
  });

  test("cleartext-signed by Ed25519, RSA and ECDSA P-256 keys: they verify; for other text they do not", async () => {
    for (const name of ["ed", "rsa", "p256"]) {
      const trusted = await trustedKey(name);
      const signed = Buffer.from(gpgSign(name, join(dir, "Release"), ["--clearsign"]));
      assert.equal(await checkClearsigned(signed, text, trusted), undefined, name);
      assert.match(
        (await checkClearsigned(signed, Buffer.from("Suite: unstable\n"), trusted)) ?? "",
        /not this file's/,
      );
      assert.match(
        (await checkClearsigned(Buffer.from(flipLastByte(signed)), text, trusted)) ?? "",
        /does not verify with the trusted key/,
      );
    }
  });

  test("a signature of an algorithm no node makes (DSA) is refused naming it; so is a key of one, and a key of another algorithm", async () => {
    const dsaSig = gpgSign("dsa", join(dir, "data.bin"), ["--armor", "--detach-sign"]);
    const p256 = await trustedKey("p256");
    assert.match(
      (await checkOpenpgpSignature(dsaSig, p256, sha(data), rehashOf(data))) ?? "",
      /algorithm is DSA \(public-key algorithm 17\): this client checks only Ed25519, EdDSA, ECDSA P-256 or RSA/,
    );
    await assert.rejects(trustedKey("dsa"), /no Ed25519, EdDSA, ECDSA P-256 or RSA key .*it has: DSA/);
    const edSig = gpgSign("ed", join(dir, "data.bin"), ["--armor", "--detach-sign"]);
    assert.match(
      (await checkOpenpgpSignature(edSig, p256, sha(data), rehashOf(data))) ?? "",
      /algorithm is EdDSA .*, the trusted key's ECDSA .*: it does not verify/,
    );
  });
});

describe("SSHSIG signatures", () => {
  test("the node's signature verifies; another file, another key or a changed byte does not", async () => {
    const trusted = sshVerifyingKey(ssh.publicKey());
    const sig = (await ssh.sign({ sha256: sha(data), fileName: "data" })).toString();
    assert.equal(await checkSshSignature(sig, trusted, sha(data), rehashOf(data)), undefined);
    assert.match(
      (await checkSshSignature(sig, trusted, sha(other), rehashOf(other))) ?? "",
      /does not verify/,
    );
    const { privateKey } = generateKeyPairSync("ed25519");
    const strangerFile = join(dir, "stranger");
    writeFileSync(strangerFile, encodeOpenSshEd25519(privateKey, "stranger"), { mode: 0o600 });
    const stranger = await loadSshsigSigner({ keyFile: strangerFile, namespace: "file" });
    assert.match(
      (await checkSshSignature(sig, sshVerifyingKey(stranger.publicKey()), sha(data), rehashOf(data))) ?? "",
      /another key/,
    );
    for (const junk of [
      "NOT A SIGNATURE",
      "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n",
    ])
      assert.notEqual(await checkSshSignature(junk, trusted, sha(data), rehashOf(data)), undefined, junk);
  });

  test("a signature made by ssh-keygen (sha512) verifies", async () => {
    const file = join(dir, "ssh-data.bin");
    writeFileSync(file, data);
    const made = spawnSync("ssh-keygen", ["-Y", "sign", "-f", keys.sshsig.keyFile, "-n", "file", file], {
      encoding: "utf8",
    });
    assert.equal(made.status, 0, made.stderr);
    const sig = readFileSync(`${file}.sig`, "utf8");
    const trusted = sshVerifyingKey(ssh.publicKey());
    assert.equal(await checkSshSignature(sig, trusted, sha(data), rehashOf(data)), undefined);
    assert.notEqual(await checkSshSignature(sig, trusted, sha(other), rehashOf(other)), undefined);
  });

  test("ECDSA P-256 and RSA signatures made by ssh-keygen verify (keys a node may hold in an HSM); another file does not", async () => {
    const file = join(dir, "ssh-data-hsm.bin");
    writeFileSync(file, data);
    for (const [type, bits] of [
      ["ecdsa", "256"],
      ["rsa", "2048"],
    ] as const) {
      const keyFile = join(dir, `id_${type}`);
      const made = spawnSync("ssh-keygen", ["-q", "-t", type, "-b", bits, "-N", "", "-f", keyFile]);
      assert.equal(made.status, 0, String(made.stderr));
      const signed = spawnSync("ssh-keygen", ["-Y", "sign", "-f", keyFile, "-n", "file", file], {
        encoding: "utf8",
      });
      assert.equal(signed.status, 0, signed.stderr);
      const sig = readFileSync(`${file}.sig`, "utf8");
      rmSync(`${file}.sig`);
      const trusted = sshVerifyingKey(readFileSync(`${keyFile}.pub`, "utf8"));
      assert.equal(await checkSshSignature(sig, trusted, sha(data), rehashOf(data)), undefined, type);
      assert.match(
        (await checkSshSignature(sig, trusted, sha(other), rehashOf(other))) ?? "",
        /does not verify/,
      );
      assert.match(
        (await checkSshSignature(sig, sshVerifyingKey(ssh.publicKey()), sha(data), rehashOf(data))) ?? "",
        /another key/,
      );
    }
  });
});

describe("minisign signatures", () => {
  test("the node's signature verifies (and with minisign -V); another file, another key or a changed byte does not", async () => {
    const signer = await loadMinisignSigner({ keyFile: keys.minisign.keyFile });
    const sig = await signer.sign(await hashInput(data, signer.needs, "data.bin"));
    const trusted = minisignVerifyingKey(signer.publicKey());
    const check = (s: string, b: Buffer, k = trusted) =>
      checkMinisignSignature(s, k, rehashOf(b), async () => b);
    assert.equal(await check(sig.toString(), data), undefined);
    assert.match((await check(sig.toString(), other)) ?? "", /not made over this file/);
    const file = join(dir, "minisign-data.bin");
    writeFileSync(file, data);
    writeFileSync(`${file}.minisig`, sig);
    const real = spawnSync("minisign", ["-V", "-p", keys.minisign.publicKeyFile, "-m", file]);
    assert.equal(real.status, 0, real.stderr.toString());
    const strangerFile = join(dir, "stranger.pem");
    const pem = generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" });
    writeFileSync(strangerFile, pem as string, { mode: 0o600 });
    const stranger = await loadMinisignSigner({ keyFile: strangerFile });
    assert.match(
      (await check(sig.toString(), data, minisignVerifyingKey(stranger.publicKey()))) ?? "",
      /another key/,
    );
    const lines = sig.toString().split("\n");
    lines[2] = "trusted comment: timestamp:0\tfile:something-else\thashed";
    assert.match((await check(lines.join("\n"), data)) ?? "", /trusted comment does not verify/);
    assert.notEqual(await check("NOT A SIGNATURE", data), undefined);
  });
});

describe("OpenPGP cleartext signatures", () => {
  test("the node's clearsigned text verifies; other text, another key or a detached signature does not", async () => {
    const clear = await loadGpgSigner(
      { keyFile: keys.gpg.keyFile, passphrase: readFileSync(keys.gpg.passphraseFile, "utf8").trim() },
      undefined,
      "gpg-clearsign",
    );
    const text = Buffer.from("Suite: stable\n- dash\nFrom here\ntrailing  \n");
    const signed = await clear.sign(await hashInput(text, clear.needs, "Release"));
    const trusted = await openpgpVerifyingKeys(clear.publicKey());
    assert.equal(await checkClearsigned(signed, text, trusted), undefined);
    // CRLF line endings and trailing whitespace are not part of what is signed.
    assert.equal(
      await checkClearsigned(signed, Buffer.from(text.toString().replaceAll("\n", "\r\n")), trusted),
      undefined,
    );
    assert.match(
      (await checkClearsigned(signed, Buffer.from("Suite: unstable\n"), trusted)) ?? "",
      /not this file's/,
    );
    const tampered = Buffer.from(signed.toString().replace("Suite: stable", "Suite: stab1e"));
    assert.notEqual(
      await checkClearsigned(tampered, Buffer.from("Suite: stab1e\n- dash\nFrom here\ntrailing\n"), trusted),
      undefined,
    );
    const { publicKey } = await openpgp.generateKey({
      type: "ecc",
      curve: "curve25519Legacy",
      userIDs: [{ name: "stranger" }],
      format: "armored",
    });
    assert.match(
      (await checkClearsigned(signed, text, await openpgpVerifyingKeys(publicKey))) ?? "",
      /does not verify|not made over/,
    );
    const detached = await gpg.sign(await hashInput(text));
    assert.notEqual(await checkClearsigned(detached, text, trusted), undefined);
  });
});

describe("ECDSA P-256 over a digest (what an OpenPGP ECDSA signature signs)", () => {
  const N = Buffer.from("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551", "hex");

  test("agrees with node's crypto: its SHA-256 and SHA-512 signatures verify; another digest, key or signature does not", () => {
    const pair = () => generateKeyPairSync("ec", { namedCurve: "P-256" });
    const [a, b] = [pair(), pair()];
    for (let i = 0; i < 40; i++) {
      const [mine, theirs] = i % 2 ? [a, b] : [b, a];
      const message = randomBytes(i * 37);
      const hash = i % 4 < 2 ? "sha256" : "sha512";
      const sig = sign(hash, message, { key: mine.privateKey, dsaEncoding: "ieee-p1363" });
      const digest = createHash(hash).update(message).digest();
      assert.equal(verifyP256Digest(mine.publicKey, digest, sig), true, `${i} ${hash}`);
      assert.equal(verifyP256Digest(theirs.publicKey, digest, sig), false, `${i}: another key`);
      const changed = Buffer.from(digest);
      changed[i % 32] = (changed[i % 32] as number) ^ 0x10;
      assert.equal(verifyP256Digest(mine.publicKey, changed, sig), false, `${i}: another digest`);
      const bad = Buffer.from(sig);
      bad[i % 64] = (bad[i % 64] as number) ^ 0x01;
      assert.equal(verifyP256Digest(mine.publicKey, digest, bad), false, `${i}: a changed signature`);
      if (hash === "sha512") {
        // Only the digest's leftmost 256 bits are signed (FIPS 186): the rest may be anything.
        const tail = Buffer.concat([digest.subarray(0, 32), randomBytes(32)]);
        assert.equal(verifyP256Digest(mine.publicKey, tail, sig), true, `${i}: truncation`);
      }
    }
  });

  test("r or s zero or not below the group order, a short signature, or a key of another curve: refused", () => {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const digest = randomBytes(32);
    const sig = sign("sha256", digest, { key: privateKey, dsaEncoding: "ieee-p1363" });
    const [r, s] = [sig.subarray(0, 32), sig.subarray(32)];
    const zero = Buffer.alloc(32);
    for (const [what, bad] of [
      ["r = 0", Buffer.concat([zero, s])],
      ["s = 0", Buffer.concat([r, zero])],
      ["r = n", Buffer.concat([N, s])],
      ["s = n", Buffer.concat([r, N])],
      ["63 bytes", sig.subarray(1)],
    ] as const)
      assert.equal(verifyP256Digest(publicKey, digest, bad), false, what);
    const p384 = generateKeyPairSync("ec", { namedCurve: "P-384" }).publicKey;
    assert.equal(verifyP256Digest(p384, digest, sig), false);
    assert.equal(verifyP256Digest(generateKeyPairSync("ed25519").publicKey, digest, sig), false);
  });
});

describe("signatures the node makes with ECDSA P-256 and RSA keys in a SoftHSM2 token, and an RSA file key", () => {
  let token: SoftHsmToken;
  let pool: SigningPool;
  const keys = new Map<string, SigningKey>();
  const identity = { userId: "HSM <hsm@signing.invalid>", createdAt: new Date("2026-01-01T00:00:00Z") };
  const text = Buffer.from("Suite: stable\nComponents: main\n- dash\n");
  const key = (label: string) => keys.get(label) as SigningKey;

  before(async () => {
    token = SoftHsmToken.create(mkdtempSync(join(tmpdir(), "softhsm-")), {
      keys: [
        { label: "p256", id: "01", type: "EC:prime256v1" },
        { label: "p256-other", id: "02", type: "EC:prime256v1" },
        { label: "rsa", id: "03", type: "rsa:2048" },
      ],
    });
    // The module reads SOFTHSM2_CONF when the pool's thread loads it.
    process.env.SOFTHSM2_CONF = token.conf;
    pool = new SigningPool(1);
    for (const keyLabel of ["p256", "p256-other", "rsa"]) {
      const o = {
        module: token.module,
        tokenLabel: token.label,
        keyLabel,
        pin: token.pin,
        timeoutMs: 10_000,
      };
      keys.set(keyLabel, await openPkcs11Key(o, pool));
    }
    const rsaFile = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
    keys.set("rsa-file", await fileKey(rsaFile, "rsa-file"));
  });
  after(async () => {
    for (const k of keys.values()) await k.close();
    await pool?.close();
    token?.destroy();
  });

  for (const [label, stranger] of [
    ["p256", "p256-other"],
    ["rsa", "rsa-file"],
    ["rsa-file", "rsa"],
  ] as const) {
    test(`gpg and gpg-clearsign (${label}): verified here and by gpg; another file or text, another key, a changed byte: not`, async () => {
      const gpg = await gpgSignerForKey(key(label), identity);
      const trusted = await openpgpVerifyingKeys(gpg.publicKey());
      const strangers = await openpgpVerifyingKeys(
        (await gpgSignerForKey(key(stranger), identity)).publicKey(),
      );
      const sig = (await gpg.sign({ sha256: sha(data), fileName: "data" })).toString();
      const check = (s: string, b = data, k = trusted) => checkOpenpgpSignature(s, k, sha(b), rehashOf(b));
      assert.equal(await check(sig), undefined);
      const real = gpgVerify(gpg.publicKey(), data, Buffer.from(sig));
      assert.ok(real.ok, real.output);
      assert.notEqual(await check(sig, other), undefined);
      assert.match((await check(sig, data, strangers)) ?? "", /does not verify with the trusted key/);
      assert.match((await check(flipLastByte(sig))) ?? "", /does not verify with the trusted key/);

      const clear = await gpgSignerForKey(key(label), identity, "gpg-clearsign");
      const signed = await clear.sign(await hashInput(text, clear.needs, "Release"));
      assert.equal(await checkClearsigned(signed, text, trusted), undefined);
      const realClear = clearsignVerify(clear.publicKey(), signed);
      assert.ok(realClear.ok, realClear.output);
      assert.match(
        (await checkClearsigned(signed, Buffer.from("Suite: old\n"), trusted)) ?? "",
        /not this file's/,
      );
      assert.match((await checkClearsigned(signed, text, strangers)) ?? "", /does not verify/);
      assert.match(
        (await checkClearsigned(Buffer.from(flipLastByte(signed)), text, trusted)) ?? "",
        /does not verify with the trusted key/,
      );
    });

    test(`sshsig (${label}): verified here and by ssh-keygen; another file, another key, a changed byte: not`, async () => {
      const ssh = sshsigSignerForKey(key(label), "file", "hsm@signing.invalid");
      const trusted = sshVerifyingKey(ssh.publicKey());
      const sig = (await ssh.sign({ sha256: sha(data), fileName: "data" })).toString();
      const check = (s: string, b = data, k = trusted) => checkSshSignature(s, k, sha(b), rehashOf(b));
      assert.equal(await check(sig), undefined);
      const real = sshVerify(ssh.publicKey(), "file", data, Buffer.from(sig));
      assert.ok(real.ok, real.output);
      assert.match((await check(sig, other)) ?? "", /does not verify/);
      const strangerKey = sshVerifyingKey(sshsigSignerForKey(key(stranger), "file", "").publicKey());
      assert.match((await check(sig, data, strangerKey)) ?? "", /another key/);
      assert.match((await check(flipLastByte(sig))) ?? "", /does not verify/);
    });
  }
});
