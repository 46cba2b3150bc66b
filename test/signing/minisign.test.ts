import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createReadStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  MINISIGN_SUFFIX,
  minisignHasher,
  minisignKeyId,
  minisignKeyIdHex,
  minisignPublicKey,
  signMinisign,
} from "../../src/signing/formats/minisign.js";
import { WrongKeyAlgorithmError } from "../../src/signing/formats/raw-key.js";
import { ed25519TestKey, rsaTestKey, type TestKey } from "../helpers/raw-keys.js";

let dir: string;
let key: TestKey;
let pubFile: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), "minisign-test-"));
  key = ed25519TestKey();
  pubFile = join(dir, "minisign.pub");
  writeFileSync(pubFile, minisignPublicKey(key));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** `minisign -V` on `file`, with the signature at `sigFile` (minisign's default: file.minisig). */
function minisignVerify(file: string, pub: string, sigFile?: string) {
  const args = ["-V", "-p", pub, "-m", file, ...(sigFile ? ["-x", sigFile] : [])];
  const r = spawnSync("minisign", args, { encoding: "utf8", env: { ...process.env, LC_ALL: "C" } });
  if (r.error) throw r.error;
  return { ok: r.status === 0, output: r.stdout + r.stderr };
}

/** Hashes the file in one streamed pass, as an upload is, and signs it. */
async function signFile(signer: TestKey, file: string, name: string, keyId?: Buffer): Promise<Buffer> {
  const hash = minisignHasher();
  for await (const chunk of createReadStream(file, { highWaterMark: 64 * 1024 })) hash.update(chunk);
  return signMinisign(signer, hash.digest(), { fileName: name, ...(keyId ? { keyId } : {}) });
}

function writeInput(name: string, data: Buffer): string {
  const file = join(dir, name);
  writeFileSync(file, data);
  return file;
}

describe("minisign", () => {
  test("a streamed multi-chunk file verifies with minisign -V, the trusted comment naming it", async () => {
    const file = writeInput("release.tar.gz", randomBytes(3 * 1024 * 1024 + 17));
    const created = new Date();
    const sig = await signFile(key, file, "release.tar.gz");
    writeFileSync(`${file}${MINISIGN_SUFFIX}`, sig);
    const r = minisignVerify(file, pubFile);
    assert.ok(r.ok, r.output);
    assert.match(r.output, /Signature and comment signature verified/);
    const stamp = /Trusted comment: timestamp:(\d+)\tfile:release\.tar\.gz\thashed\n/.exec(r.output);
    assert.ok(stamp, r.output);
    assert.ok(Math.abs(Number(stamp[1]) - created.getTime() / 1000) < 60);
  });

  test("the public key is in minisign's format, with its key id, and minisign -P takes it too", async () => {
    const text = minisignPublicKey(key);
    const id = minisignKeyIdHex(minisignKeyId(key.publicKey));
    assert.match(text, new RegExp(`^untrusted comment: minisign public key ${id}\n[A-Za-z0-9+/]{56}\n$`));
    const file = writeInput("small.txt", Buffer.from("hello\n"));
    const sigFile = join(dir, "elsewhere.minisig");
    writeFileSync(sigFile, await signFile(key, file, "small.txt"));
    const line = text.split("\n")[1] as string;
    const r = spawnSync("minisign", ["-V", "-P", line, "-m", file, "-x", sigFile], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stdout + r.stderr);
  });

  test("an empty file and a name with a tab and a newline still verify", async () => {
    const file = writeInput("empty", Buffer.alloc(0));
    const sigFile = join(dir, "empty.sig");
    writeFileSync(sigFile, await signFile(key, file, "odd\tname\n.bin"));
    const r = minisignVerify(file, pubFile, sigFile);
    assert.ok(r.ok, r.output);
    assert.match(r.output, /file:odd_name_\.bin\thashed/);
  });

  test("another key's signature fails, with the other key id or with the same one", async () => {
    const file = writeInput("wrong-key.bin", randomBytes(1000));
    const other = ed25519TestKey();
    const sigFile = join(dir, "wrong-key.sig");
    writeFileSync(sigFile, await signFile(other, file, "wrong-key.bin"));
    const byId = minisignVerify(file, pubFile, sigFile);
    assert.ok(!byId.ok, byId.output);
    assert.match(byId.output, /key id/i);
    // Claiming our key id gets past minisign's id check to the signature check itself.
    writeFileSync(sigFile, await signFile(other, file, "wrong-key.bin", minisignKeyId(key.publicKey)));
    const bySig = minisignVerify(file, pubFile, sigFile);
    assert.ok(!bySig.ok, bySig.output);
    assert.match(bySig.output, /verification failed/i);
  });

  test("a flipped byte in the file or in the trusted comment fails", async () => {
    const data = randomBytes(4096);
    const file = writeInput("flip.bin", data);
    const sigFile = join(dir, "flip.sig");
    const sig = await signFile(key, file, "flip.bin");
    writeFileSync(sigFile, sig);
    assert.ok(minisignVerify(file, pubFile, sigFile).ok);
    (data[1234] as number) ^= 0x01;
    writeFileSync(file, data);
    assert.ok(!minisignVerify(file, pubFile, sigFile).ok);
    (data[1234] as number) ^= 0x01;
    writeFileSync(file, data);
    writeFileSync(sigFile, sig.toString().replace("file:flip.bin", "file:flop.bin"));
    const r = minisignVerify(file, pubFile, sigFile);
    assert.ok(!r.ok, r.output);
    assert.match(r.output, /comment signature verification failed/i);
  });

  test("only an Ed25519 key can sign", async () => {
    await assert.rejects(
      signMinisign(rsaTestKey(), Buffer.alloc(64), { fileName: "x" }),
      WrongKeyAlgorithmError,
    );
  });
});

test("the signature file is minisign's four lines", async () => {
  const sig = (await signMinisign(key, minisignHasher().digest(), { fileName: "a", created: new Date(0) }))
    .toString()
    .split("\n");
  assert.equal(sig.length, 5);
  assert.match(sig[0] as string, /^untrusted comment: /);
  const blob = Buffer.from(sig[1] as string, "base64");
  assert.equal(blob.subarray(0, 2).toString(), "ED");
  assert.deepEqual(blob.subarray(2, 10), minisignKeyId(key.publicKey));
  assert.equal(sig[2], "trusted comment: timestamp:0\tfile:a\thashed");
  assert.equal(readFileSync(pubFile, "utf8"), minisignPublicKey(key));
});
