import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { hasCode } from "../../src/errors.js";
import { ERROR_STATUS } from "../../src/http/errors.js";
import {
  type AuthenticodeOptions,
  osslsigncodeArgs,
  pkcs11KeyUri,
  signAuthenticode,
} from "../../src/signing/formats/authenticode.js";
import { loadAuthenticodeCertificate } from "../../src/signing/formats/authenticode-cert.js";
import { FormatKeyError } from "../../src/signing/formats/raw-key.js";
import {
  AuthenticodeScan,
  authenticodeCertificate,
  checkAuthenticodeFile,
} from "../../src/signing/verify-authenticode.js";
import {
  type CodeSigningPki,
  makeCodeSigningPki,
  minimalPe,
  osslsigncodeVerify,
  powershellScript,
} from "../helpers/authenticode.js";

let dir: string;
/** The parent of the signer's private dirs: empty again after every run. */
let spool: string;
let pki: CodeSigningPki;
let pem: AuthenticodeOptions;
let count = 0;

/** What the signer logged: the tool's output goes here and nowhere else. */
const logged: { obj: Record<string, unknown>; msg: string }[] = [];
const log = { warn: (obj: Record<string, unknown>, msg: string) => logged.push({ obj, msg }) } as never;

before(() => {
  dir = mkdtempSync(join(tmpdir(), "authenticode-test-"));
  spool = join(dir, "spool");
  mkdirSync(spool);
  pki = makeCodeSigningPki(dir);
  pem = { credentials: { kind: "pem", certFile: pki.certFile, keyFile: pki.keyFile }, tmpDir: spool };
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** Signs `data` uploaded as `fileName`; returns the signed file's path. */
async function sign(data: Buffer, fileName: string, options: AuthenticodeOptions = pem): Promise<string> {
  const inputFile = join(dir, `upload-${count++}`);
  writeFileSync(inputFile, data);
  const outputFile = join(dir, `signed-${count++}-${fileName}`);
  try {
    await signAuthenticode({ inputFile, fileName, outputFile }, options, log);
  } finally {
    assert.deepEqual(readdirSync(spool), [], "the private dir is removed");
  }
  return outputFile;
}

async function signingError(
  data: Buffer,
  fileName: string,
  options: AuthenticodeOptions = pem,
): Promise<unknown> {
  return sign(data, fileName, options).then(
    () => assert.fail(`${fileName} was signed`),
    (err: unknown) => err,
  );
}

describe("authenticode", () => {
  test("a PE executable signed with a PEM chain and key verifies against the test CA", async () => {
    const signed = await sign(minimalPe(), "tool.exe");
    const r = osslsigncodeVerify(signed, pki.caFile);
    assert.ok(r.ok, r.output);
    assert.match(r.output, /Subject: \/CN=signing-cluster test code signing/);
    assert.match(r.output, /Message digest algorithm {2}: SHA256/);
  });

  test("a PKCS#12 file with a passphrase on stdin signs too", async () => {
    const options: AuthenticodeOptions = {
      credentials: { kind: "pkcs12", pkcs12File: pki.pkcs12File, passphrase: pki.pkcs12Passphrase },
      tmpDir: spool,
    };
    assert.ok(!osslsigncodeArgs(options, "in", "out").some((a) => a.includes(pki.pkcs12Passphrase)));
    const r = osslsigncodeVerify(await sign(minimalPe(), "setup.exe", options), pki.caFile);
    assert.ok(r.ok, r.output);
  });

  test("a PowerShell script gets its signature block, and verifies", async () => {
    const signed = await sign(powershellScript(), "deploy.ps1");
    const text = readFileSync(signed, "utf8");
    assert.ok(text.startsWith(powershellScript().toString()));
    assert.match(text, /# SIG # Begin signature block\r\n[\s\S]*# SIG # End signature block/);
    const r = osslsigncodeVerify(signed, pki.caFile);
    assert.ok(r.ok, r.output);
  });

  test("the verifier checks: another CA fails it, and so does a flipped byte of the code", async () => {
    const signed = await sign(minimalPe(), "check.exe");
    const otherCa = osslsigncodeVerify(signed, pki.otherCaFile);
    assert.ok(!otherCa.ok, otherCa.output);
    const bytes = readFileSync(signed);
    (bytes[0x200] as number) ^= 0x01;
    const tampered = join(dir, "tampered.exe");
    writeFileSync(tampered, bytes);
    const r = osslsigncodeVerify(tampered, pki.caFile);
    assert.ok(!r.ok, r.output);
    assert.match(r.output, /MISMATCH|verification: failed/i);
  });

  test("garbage, an empty file and a text file are UNSUPPORTED_INPUT (400), and no output is left", async () => {
    const inputs: [Buffer, string][] = [
      [Buffer.from("MZ but nothing after that makes a PE file"), "broken.exe"],
      [Buffer.alloc(0), "empty.exe"],
      [Buffer.from("just some notes\n"), "notes.txt"],
    ];
    for (const [data, name] of inputs) {
      logged.length = 0;
      const err = await signingError(data, name);
      assert.ok(hasCode(err, "UNSUPPORTED_INPUT"), `${name}: ${err}`);
      assert.equal(ERROR_STATUS[err.code], 400);
      assert.ok(!existsSync(join(dir, `signed-${count - 1}-${name}`)));
      assert.match(String(logged[0]?.obj.stderr), /unsupported input file type/i);
    }
  });

  test("our own failures are SIGNING_FAILED, with the tool's output in the log only", async () => {
    const cases: [string, AuthenticodeOptions][] = [
      [
        "wrong passphrase",
        { ...pem, credentials: { kind: "pkcs12", pkcs12File: pki.pkcs12File, passphrase: "wrong" } },
      ],
      [
        "missing key",
        { ...pem, credentials: { kind: "pem", certFile: pki.certFile, keyFile: join(dir, "nope.key") } },
      ],
      ["timeout", { ...pem, timeoutMs: 1 }],
      ["no such tool", { ...pem, command: join(dir, "no-osslsigncode") }],
      // Offline machines: asking for a timestamp that cannot be had fails the signing, never skips it.
      ["unreachable timestamp server", { ...pem, timestampUrl: "http://127.0.0.1:9/" }],
    ];
    for (const [name, options] of cases) {
      logged.length = 0;
      const err = await signingError(minimalPe(), "app.exe", options);
      assert.ok(hasCode(err, "SIGNING_FAILED"), `${name}: ${err}`);
      assert.doesNotMatch((err as Error).message, /error:|PKCS12|Failed/, name);
      if (name === "timeout") assert.equal(logged[0]?.obj.timedOut, true);
    }
  });

  test("a missing input is SIGNING_FAILED, not the client's UNSUPPORTED_INPUT", async () => {
    const err = await signAuthenticode(
      { inputFile: join(dir, "gone"), fileName: "gone.exe", outputFile: join(dir, "gone-signed.exe") },
      pem,
      log,
    ).then(
      () => assert.fail("signed"),
      (e: unknown) => e,
    );
    assert.ok(hasCode(err, "SIGNING_FAILED"), String(err));
  });

  test("a client's file name is never parsed by a shell: only its plain extension reaches the tool", async () => {
    const signed = await sign(powershellScript(), "$(touch pwned); rm -rf ~ #.ps1");
    assert.ok(osslsigncodeVerify(signed, pki.caFile).ok);
    // Without a plain extension the tool decides by content: a script is then not a file it knows.
    assert.ok(hasCode(await signingError(powershellScript(), "deploy.p s1"), "UNSUPPORTED_INPUT"));
  });

  test("a PKCS#11 key: engine, module, certificate and an RFC 7512 URI without the PIN, which goes on stdin", () => {
    const key = {
      kind: "pkcs11" as const,
      certFile: "chain.pem",
      engine: "/e/pkcs11.so",
      module: "/m/libsofthsm2.so",
      tokenLabel: "code signing;ci",
      keyLabel: "release/1 %",
      keyId: "0a1B",
      pin: "secret-pin-4711",
    };
    const args = osslsigncodeArgs({ credentials: key }, "in", "out");
    assert.deepEqual(args.slice(1, 11), [
      ...["-pkcs11engine", "/e/pkcs11.so", "-pkcs11module", "/m/libsofthsm2.so", "-certs", "chain.pem"],
      ...["-key", "pkcs11:token=code%20signing%3Bci;object=release%2F1%20%25;id=%0A%1B;type=private"],
      ...["-readpass", "-"],
    ]);
    assert.ok(!args.some((a) => a.includes(key.pin)), "the PIN is never an argument");
    const byId = { ...key, keyLabel: undefined };
    delete byId.keyLabel;
    assert.equal(pkcs11KeyUri(byId), "pkcs11:token=code%20signing%3Bci;id=%0A%1B;type=private");
  });

  test("no timestamp unless configured", () => {
    assert.ok(!osslsigncodeArgs(pem, "in", "out").some((a) => a === "-ts" || a === "-t"));
    assert.deepEqual(
      osslsigncodeArgs({ ...pem, timestampUrl: "http://tsa.invalid/" }, "in", "out").slice(-6, -4),
      ["-ts", "http://tsa.invalid/"],
    );
  });

  test("the signing certificate's fingerprint, from PEM or PKCS#12; unreadable credentials are refused", async () => {
    const printed = execFileSync(
      "openssl",
      ["x509", "-noout", "-fingerprint", "-sha256", "-in", pki.certFile],
      {
        encoding: "utf8",
      },
    );
    const expected = printed.trim().split("=")[1];
    const fromPem = await loadAuthenticodeCertificate(pem.credentials);
    assert.equal(fromPem.fingerprint256, expected);
    assert.match(fromPem.subject, /CN=signing-cluster test code signing/);
    const p12 = { kind: "pkcs12", pkcs12File: pki.pkcs12File } as const;
    const fromP12 = await loadAuthenticodeCertificate({ ...p12, passphrase: pki.pkcs12Passphrase });
    assert.equal(fromP12.fingerprint256, expected);
    await assert.rejects(loadAuthenticodeCertificate({ ...p12, passphrase: "wrong" }), FormatKeyError);
    await assert.rejects(loadAuthenticodeCertificate({ ...p12, pkcs12File: pki.keyFile }), FormatKeyError);
    await assert.rejects(
      loadAuthenticodeCertificate({ kind: "pem", certFile: join(dir, "none.pem"), keyFile: pki.keyFile }),
      FormatKeyError,
    );
  });
});

describe("signtool's and signing-admin's check of a signed file", () => {
  test("a file signed with the certificate carries it; the input, or a file signed by another, does not", async () => {
    const cert = authenticodeCertificate(readFileSync(pki.certFile, "utf8"));
    for (const [data, name] of [
      [minimalPe(), "tool.exe"],
      [powershellScript(), "install.ps1"],
    ] as const) {
      assert.equal(checkAuthenticodeFile(readFileSync(await sign(data, name)), cert), undefined, name);
      assert.match(checkAuthenticodeFile(data, cert) ?? "", /no Authenticode signature/);
    }
    const other = makeCodeSigningPki(mkdtempSync(join(dir, "other-")));
    const byOther = await sign(minimalPe(), "tool.exe", {
      credentials: { kind: "pem", certFile: other.certFile, keyFile: other.keyFile },
      tmpDir: spool,
    });
    assert.notEqual(checkAuthenticodeFile(readFileSync(byOther), cert), undefined);
    const ps1ByOther = await sign(powershellScript(), "x.ps1", {
      credentials: { kind: "pem", certFile: other.certFile, keyFile: other.keyFile },
      tmpDir: spool,
    });
    assert.match(
      checkAuthenticodeFile(readFileSync(ps1ByOther), cert) ?? "",
      /does not carry the trusted certificate/,
    );
  });

  /** The scan's verdict on `data` fed in pieces cut at `cuts` (offsets into it). */
  function scanInPieces(data: Buffer, cert: Buffer, cuts: number[]): string | undefined {
    const scan = new AuthenticodeScan(cert);
    let at = 0;
    for (const cut of [...cuts, data.length]) {
      scan.update(data.subarray(at, cut));
      at = cut;
    }
    return scan.result();
  }

  test("fed in pieces as it streams: the certificate cut across two pieces, or a script's block after MiBs of text", async () => {
    const cert = authenticodeCertificate(readFileSync(pki.certFile, "utf8"));
    const pe = readFileSync(await sign(minimalPe(), "tool.exe"));
    const at = pe.indexOf(cert);
    assert.ok(at > 0);
    for (const cut of [at + 1, at + (cert.length >> 1), at + cert.length - 1])
      assert.equal(scanInPieces(pe, cert, [cut]), undefined, `cut at ${cut - at} bytes into the certificate`);
    const everyFewBytes = Array.from({ length: Math.floor(pe.length / 7) }, (_, i) => (i + 1) * 7);
    assert.equal(scanInPieces(pe, cert, everyFewBytes), undefined);
    assert.match(scanInPieces(minimalPe(), cert, [100, 200]) ?? "", /no Authenticode signature/);

    // A script whose block starts after more text than the scan keeps of a file's end.
    const long = Buffer.concat([
      Buffer.from("# padding line of a long script\r\n".repeat(80_000)),
      powershellScript(),
    ]);
    const ps1 = readFileSync(await sign(long, "long.ps1"));
    const pieces = Array.from({ length: Math.floor(ps1.length / 65_536) }, (_, i) => (i + 1) * 65_536);
    assert.ok(ps1.length > 2 * 1024 * 1024);
    assert.equal(scanInPieces(ps1, cert, pieces), undefined);
    assert.match(scanInPieces(long, cert, pieces) ?? "", /no Authenticode signature/);
  });
});
