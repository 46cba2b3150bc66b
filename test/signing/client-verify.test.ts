import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as openpgp from "openpgp";
import { checkClearsigned } from "../../src/client/verify-clearsign.js";
import { checkOpenpgpSignature, openpgpVerifyingKeys } from "../../src/client/verify-openpgp.js";
import { type DevKeys, generateDevKeys } from "../../src/signing/dev-keys.js";
import { encodeOpenSshEd25519 } from "../../src/signing/openssh-key.js";
import { hashInput, type Signer } from "../../src/signing/signer.js";
import { loadGpgSigner } from "../../src/signing/signers/gpg.js";
import { loadMinisignSigner } from "../../src/signing/signers/minisign.js";
import { loadSshsigSigner } from "../../src/signing/signers/sshsig.js";
import { checkMinisignSignature, minisignVerifyingKey } from "../../src/signing/verify-minisign.js";
import { checkSshSignature, sshVerifyingKey } from "../../src/signing/verify-sshsig.js";

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

  test("signatures made by gpg itself, with SHA-256 and SHA-512, Ed25519 and RSA keys, verify", async () => {
    const home = join(dir, "gnupg");
    mkdirSync(home, { mode: 0o700 });
    const file = join(dir, "data.bin");
    writeFileSync(file, data);
    const gpgRun = (args: string[], input?: string) =>
      spawnSync(
        "gpg",
        ["--homedir", home, "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "", ...args],
        {
          input: input ?? "",
          encoding: "utf8",
        },
      );
    for (const [algo, name] of [
      ["ed25519", "ed"],
      ["rsa2048", "rsa"],
    ] as const) {
      const made = gpgRun(["--quick-gen-key", `${name}@test.invalid`, algo, "sign", "never"]);
      assert.equal(made.status, 0, made.stderr);
      const pub = gpgRun(["--armor", "--export", `${name}@test.invalid`]).stdout;
      const trusted = await openpgpVerifyingKeys(pub);
      for (const digest of ["SHA256", "SHA512"]) {
        const out = join(dir, `${name}-${digest}.asc`);
        const signed = gpgRun([
          "--local-user",
          `${name}@test.invalid`,
          "--digest-algo",
          digest,
          "--armor",
          "--detach-sign",
          "-o",
          out,
          file,
        ]);
        assert.equal(signed.status, 0, signed.stderr);
        const sig = readFileSync(out, "utf8");
        assert.equal(
          await checkOpenpgpSignature(sig, trusted, sha(data), rehashOf(data)),
          undefined,
          `${name} ${digest}`,
        );
        assert.notEqual(await checkOpenpgpSignature(sig, trusted, sha(other), rehashOf(other)), undefined);
      }
    }
    spawnSync("gpgconf", ["--homedir", home, "--kill", "all"], { stdio: "ignore" });
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
