import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { hasCode } from "../../src/errors.js";
import { ERROR_STATUS } from "../../src/http/errors.js";
import {
  CLEARSIGN_MAX_LINE_BYTES,
  clearsign,
  cleartextLines,
} from "../../src/signing/formats/gpg-clearsign.js";
import { FormatKeyError } from "../../src/signing/formats/raw-key.js";
import { type OpenPgpTestKey, openPgpTestKey } from "../helpers/openpgp-keys.js";
import { ed25519TestKey } from "../helpers/raw-keys.js";

let dir: string;
let ed: OpenPgpTestKey;
let rsa: OpenPgpTestKey;
let other: OpenPgpTestKey;
/** A GNUPGHOME holding the public keys of `ed` and `rsa` (not `other`), and gpgv's keyring of them. */
let home: string;
let keyring: string;
let count = 0;

function run(cmd: string, args: string[], input?: string | Buffer) {
  const r = spawnSync(cmd, args, {
    input: input ?? "",
    env: { ...process.env, GNUPGHOME: home, LC_ALL: "C" },
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, output: r.stdout.toString() + r.stderr.toString() };
}

function writeTemp(data: Buffer | string): string {
  const file = join(dir, `input-${count++}`);
  writeFileSync(file, data);
  return file;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "clearsign-test-"));
  home = join(dir, "gnupg");
  mkdirSync(home, { mode: 0o700 });
  [ed, rsa, other] = await Promise.all([
    openPgpTestKey("ed25519"),
    openPgpTestKey("rsa"),
    openPgpTestKey("ed25519"),
  ]);
  for (const k of [ed, rsa]) assert.equal(run("gpg", ["--batch", "--import"], k.publicArmored).status, 0);
  keyring = join(dir, "trusted.gpg");
  writeFileSync(keyring, run("gpg", ["--batch", "--export"]).stdout);
});
after(() => {
  spawnSync("gpgconf", ["--homedir", home, "--kill", "all"]);
  rmSync(dir, { recursive: true, force: true });
});

/** `gpg --verify` and `gpgv` on a clearsigned file; `text` is what gpg says was signed. */
function verify(signed: Buffer): { gpg: boolean; gpgv: boolean; text: string; output: string } {
  const file = writeTemp(signed);
  const g = run("gpg", ["--batch", "--status-fd", "1", "--verify", file]);
  const v = run("gpgv", ["--keyring", keyring, file]);
  const d = run("gpg", ["--batch", "--output", "-", "--decrypt", file]);
  return {
    gpg: g.status === 0 && g.output.includes("[GNUPG:] GOODSIG"),
    gpgv: v.status === 0 && v.output.includes("Good signature"),
    text: d.stdout.toString(),
    output: `${g.output}\n${v.output}`,
  };
}

const RELEASE = `Origin: Signing Cluster
Label: signing-cluster
Suite: stable
Codename: bookworm
Date: Sun, 06 Dec 2026 21:00:00 UTC
Architectures: amd64 arm64
Components: main
Description: test repository
MD5Sum:
 d41d8cd98f00b204e9800998ecf8427e 0 main/binary-amd64/Packages
SHA256:
 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 0 main/binary-amd64/Packages
`;

describe("gpg-clearsign", () => {
  test("an apt Release becomes an InRelease that gpg and gpgv verify, with the text unchanged", async () => {
    for (const k of [ed, rsa]) {
      const signed = await clearsign(Buffer.from(RELEASE), k.key, k.identity);
      assert.match(
        signed.toString(),
        /^-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nOrigin: Signing Cluster\n/,
      );
      const r = verify(signed);
      assert.ok(r.gpg && r.gpgv, r.output);
      assert.equal(r.text, RELEASE);
    }
  });

  test("lines that look like armor or mail headers are dash-escaped, and come back as they were", async () => {
    const text = "-----BEGIN PGP SIGNATURE-----\n- already dashed\n--\nFrom the top\nplain\n-\n";
    const signed = await clearsign(Buffer.from(text), ed.key, ed.identity);
    assert.match(
      signed.toString(),
      /\n\n- -----BEGIN PGP SIGNATURE-----\n- - already dashed\n- --\n- From the top\nplain\n- -\n-----BEGIN PGP SIGNATURE-----\n/,
    );
    const r = verify(signed);
    assert.ok(r.gpg && r.gpgv, r.output);
    assert.equal(r.text, text);
  });

  test("CRLF line endings and trailing whitespace sign as the canonical text does", async () => {
    // Whole seconds: the signature stores seconds, and gpg refuses a signature older than its key.
    const created = new Date(Math.floor(Date.now() / 1000) * 1000);
    const crlf = await clearsign(Buffer.from("one  \r\ntwo\t\r\n\r\nthree \t"), ed.key, ed.identity, {
      created,
    });
    const lf = await clearsign(Buffer.from("one\ntwo\n\nthree\n"), ed.key, ed.identity, { created });
    // Ed25519 is deterministic: the same canonical text at the same time is the same signature.
    const signature = (b: Buffer) =>
      b.toString().slice(b.toString().indexOf("-----BEGIN PGP SIGNATURE-----"));
    assert.equal(signature(crlf), signature(lf));
    const r = verify(crlf);
    assert.ok(r.gpg && r.gpgv, r.output);
    // gpg writes out what was signed: the text without its trailing whitespace.
    assert.equal(r.text, "one\ntwo\n\nthree\n");
  });

  test("an empty text and a text without a final line ending verify", async () => {
    for (const text of ["", "no newline at the end", "\n\n"]) {
      const r = verify(await clearsign(Buffer.from(text), ed.key, ed.identity));
      assert.ok(r.gpg && r.gpgv, `${JSON.stringify(text)}: ${r.output}`);
    }
  });

  test("the text part is what gpg --clearsign itself writes", async () => {
    const text = "Origin: x\n-dash\nFrom here\n  indented  \n\nend\n";
    const gpgHome = join(dir, "gpg-signer");
    mkdirSync(gpgHome, { mode: 0o700 });
    const env = { ...process.env, GNUPGHOME: gpgHome, LC_ALL: "C" };
    assert.equal(spawnSync("gpg", ["--batch", "--import"], { input: ed.privateArmored, env }).status, 0);
    const theirs = spawnSync("gpg", ["--batch", "--digest-algo", "SHA256", "--clearsign"], {
      input: text,
      env,
    });
    spawnSync("gpgconf", ["--homedir", gpgHome, "--kill", "all"]);
    assert.equal(theirs.status, 0, theirs.stderr.toString());
    const ours = await clearsign(Buffer.from(text), ed.key, ed.identity);
    const head = (b: Buffer) => b.toString().slice(0, b.toString().indexOf("-----BEGIN PGP SIGNATURE-----"));
    assert.equal(head(ours), head(theirs.stdout));
  });

  test("a wrong key's signature, or an edited text, fails gpg and gpgv", async () => {
    // Signed by `other` while claiming to be `ed`: gpg finds ed's key and must reject the signature.
    const forged = await clearsign(Buffer.from(RELEASE), other.key, ed.identity);
    const wrong = verify(forged);
    assert.ok(!wrong.gpg && !wrong.gpgv, wrong.output);
    assert.match(wrong.output, /BADSIG|BAD signature/);
    const unknown = verify(await clearsign(Buffer.from(RELEASE), other.key, other.identity));
    assert.ok(!unknown.gpg && !unknown.gpgv, unknown.output);
    const good = await clearsign(Buffer.from(RELEASE), ed.key, ed.identity);
    const edited = verify(Buffer.from(good.toString().replace("Suite: stable", "Suite: stablE")));
    assert.ok(!edited.gpg && !edited.gpgv, edited.output);
  });

  test("binary input, over-long lines and bare carriage returns are UNSUPPORTED_INPUT (400)", async () => {
    const bad: [string, Buffer][] = [
      ["NUL", Buffer.from("text\0more\n")],
      ["invalid UTF-8", Buffer.from([0x61, 0xff, 0xfe, 0x0a])],
      ["long line", Buffer.from(`${"x".repeat(CLEARSIGN_MAX_LINE_BYTES + 1)}\n`)],
      ["bare CR", Buffer.from("old\rmac\n")],
    ];
    for (const [name, input] of bad) {
      const err = await clearsign(input, ed.key, ed.identity).then(
        () => assert.fail(`${name} was signed`),
        (e: unknown) => e,
      );
      assert.ok(hasCode(err, "UNSUPPORTED_INPUT"), `${name}: ${err}`);
      assert.equal(ERROR_STATUS[err.code], 400);
    }
    // The limit counts the bytes of a line, not of its line ending.
    const longest = `${"é".repeat(CLEARSIGN_MAX_LINE_BYTES / 2)}\r\n`;
    assert.equal(cleartextLines(Buffer.from(longest)).length, 1);
  });

  test("a key that does not match the OpenPGP key's algorithm is refused", async () => {
    await assert.rejects(clearsign(Buffer.from("x"), ed25519TestKey(), rsa.identity), FormatKeyError);
    await assert.rejects(
      clearsign(Buffer.from("x"), ed.key, { pubkeyAlgorithm: 19, fingerprint: ed.identity.fingerprint }),
      FormatKeyError,
    );
  });
});
