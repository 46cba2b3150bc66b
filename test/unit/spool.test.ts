import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { type OpenedFile, Spool } from "../../src/signing/spool.js";
import { sha1, sha256 } from "../helpers/api.js";

const work = mkdtempSync(join(tmpdir(), "signing-spool-test-"));
after(() => rmSync(work, { recursive: true, force: true }));

let n = 0;
/** A source file of `size` random bytes, and the metadata putFile would give for it. */
function output(size: number) {
  const data = randomBytes(size);
  const source = join(work, `source-${n++}`);
  writeFileSync(source, data);
  const input = randomBytes(16);
  return { data, source, meta: { format: "authenticode", inputSha256: sha256(input), fingerprint: "fp" } };
}

function freshDir(): string {
  return join(work, `spool-${n++}`);
}

async function readAll(opened: OpenedFile): Promise<Buffer> {
  try {
    return await opened.handle.readFile();
  } finally {
    await opened.handle.close();
  }
}

describe("the spool", () => {
  test("stores an output once with its digests, 0600 in a 0700 directory, no temp file left", async () => {
    const dir = freshDir();
    const spool = new Spool({ directory: dir, maxBytes: 1 << 20, maxEntries: 10 });
    const o = output(70_000);
    const file = await spool.put(o.meta, o.source);
    assert.deepEqual(
      { sha1: file.sha1, sha256: file.sha256, size: file.size },
      { sha1: sha1(o.data), sha256: sha256(o.data), size: o.data.length },
    );
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.deepEqual(readdirSync(dir), [`authenticode.${o.meta.inputSha256}`]);
    assert.equal(statSync(join(dir, `authenticode.${o.meta.inputSha256}`)).mode & 0o777, 0o600);
    const opened = await spool.open("authenticode", o.meta.inputSha256);
    assert.ok(typeof opened === "object");
    assert.ok((await readAll(opened)).equals(o.data));
    assert.equal(spool.usedBytes, o.data.length);
  });

  test("finds an output by the input's sha1 when it was given one", async () => {
    const spool = new Spool({ directory: freshDir(), maxBytes: 1 << 20, maxEntries: 10 });
    const o = output(100);
    const inputSha1 = "a".repeat(40);
    await spool.put({ ...o.meta, inputSha1 }, o.source);
    assert.equal(spool.get("authenticode", inputSha1)?.inputSha256, o.meta.inputSha256);
    assert.equal(spool.get("gpg", inputSha1), undefined);
  });

  test("evicts the least recently used to stay under its quota; opening one makes it recent", async () => {
    const dir = freshDir();
    const evicted: string[] = [];
    const spool = new Spool(
      { directory: dir, maxBytes: 3000, maxEntries: 10 },
      { evicted: (file, limit) => evicted.push(`${file.inputSha256} ${limit}`) },
    );
    const a = output(1000);
    const b = output(1000);
    const c = output(1000);
    for (const o of [a, b, c]) await spool.put(o.meta, o.source);
    const opened = await spool.open("authenticode", a.meta.inputSha256);
    assert.ok(typeof opened === "object");
    await opened.handle.close();
    const d = output(1500);
    await spool.put(d.meta, d.source);
    // b and c were used least recently: both go to make room for 1500 bytes.
    assert.equal(await spool.open("authenticode", b.meta.inputSha256), "missing");
    assert.equal(await spool.open("authenticode", c.meta.inputSha256), "missing");
    assert.equal(readdirSync(dir).length, 2);
    assert.equal(spool.usedBytes, 2500);
    assert.ok(spool.usedBytes <= 3000);
    // Each reported once, by the limit that made room: what signing_spool_evictions_total counts.
    assert.deepEqual(evicted, [`${b.meta.inputSha256} bytes`, `${c.meta.inputSha256} bytes`]);
  });

  test("an output evicted while it is being opened is still served from its handle, and the count stays true", async () => {
    const dir = freshDir();
    const MiB = 1024 * 1024;
    const spool = new Spool({ directory: dir, maxBytes: 3 * MiB, maxEntries: 10 });
    const a = output(2 * MiB);
    await spool.put(a.meta, a.source);
    const opening = spool.open("authenticode", a.meta.inputSha256); // reads 2 MiB: awaits the disk
    const b = output(2 * MiB);
    await spool.put(b.meta, b.source); // evicts a meanwhile
    const opened = await opening;
    assert.ok(typeof opened === "object");
    assert.ok((await readAll(opened)).equals(a.data), "the checked bytes, from the open handle");
    assert.equal(spool.size, 1, "a is not brought back");
    assert.equal(spool.usedBytes, 2 * MiB);
    assert.deepEqual(readdirSync(dir), [`authenticode.${b.meta.inputSha256}`]);
  });

  test("keeps at most maxEntries outputs", async () => {
    const dir = freshDir();
    const evicted: string[] = [];
    const spool = new Spool(
      { directory: dir, maxBytes: 1 << 20, maxEntries: 2 },
      { evicted: (file, limit) => evicted.push(`${file.inputSha256} ${limit}`) },
    );
    const oldest = output(10);
    const again = output(10);
    // put moves its source into the spool: the second put of the same output brings a copy.
    const againCopy = { ...again, source: `${again.source}-copy` };
    writeFileSync(againCopy.source, again.data);
    for (const o of [oldest, again, againCopy, output(10)]) await spool.put(o.meta, o.source);
    assert.equal(spool.size, 2);
    // The same output stored again replaces itself: not an eviction.
    assert.deepEqual(evicted, [`${oldest.meta.inputSha256} entries`]);
    assert.equal(readdirSync(dir).length, 2);
    assert.equal(spool.get("authenticode", oldest.meta.inputSha256), undefined);
  });

  test("outputs being copied in count against the quota: two at once never overrun it", async () => {
    const dir = freshDir();
    const spool = new Spool({ directory: dir, maxBytes: 3000, maxEntries: 10 });
    const old = output(1000);
    await spool.put(old.meta, old.source);
    const [a, b] = [output(1500), output(1500)];
    await Promise.all([spool.put(a.meta, a.source), spool.put(b.meta, b.source)]);
    assert.equal(spool.get("authenticode", old.meta.inputSha256), undefined, "evicted to make room for both");
    assert.equal(spool.usedBytes, 3000);
  });

  test("a directory it cannot make is a configuration error naming the key", () => {
    const file = join(work, `a-file-${n++}`);
    writeFileSync(file, "");
    assert.throws(
      () => new Spool({ directory: join(file, "spool"), maxBytes: 1, maxEntries: 1 }),
      (e: unknown) =>
        (e as { code?: string }).code === "CONFIG_INVALID" && /signing.spool.directory/.test(String(e)),
    );
  });

  test("refuses an output larger than the whole quota, keeping what it has", async () => {
    const spool = new Spool({ directory: freshDir(), maxBytes: 1000, maxEntries: 10 });
    const small = output(500);
    await spool.put(small.meta, small.source);
    const big = output(1001);
    await assert.rejects(spool.put(big.meta, big.source), /larger than signing.spool.maxBytes/);
    assert.equal(spool.size, 1);
  });

  test("an output whose bytes changed on disk is reported corrupt and dropped, never opened", async () => {
    const dir = freshDir();
    const spool = new Spool({ directory: dir, maxBytes: 1 << 20, maxEntries: 10 });
    const o = output(5000);
    await spool.put(o.meta, o.source);
    const changed = Buffer.from(o.data);
    changed[4999] = (changed[4999] as number) ^ 0x80;
    writeFileSync(join(dir, `authenticode.${o.meta.inputSha256}`), changed);
    assert.equal(await spool.open("authenticode", o.meta.inputSha256), "corrupt");
    assert.equal(spool.size, 0);
    assert.deepEqual(readdirSync(dir), []);
  });

  test("a restart empties a configured directory of earlier outputs only; a temporary one goes at close", async () => {
    const dir = freshDir();
    const first = new Spool({ directory: dir, maxBytes: 1 << 20, maxEntries: 10 });
    const o = output(10);
    await first.put(o.meta, o.source);
    writeFileSync(join(dir, `.authenticode.${"b".repeat(64)}.0123456789ab.tmp`), "half-written");
    writeFileSync(join(dir, "README"), "not the spool's");
    first.close();
    assert.equal(readdirSync(dir).length, 3, "a configured directory is kept at close");
    const second = new Spool({ directory: dir, maxBytes: 1 << 20, maxEntries: 10 });
    assert.deepEqual(readdirSync(dir), ["README"]);
    assert.equal(await second.open("authenticode", o.meta.inputSha256), "missing");

    const temporary = new Spool({ maxBytes: 1 << 20, maxEntries: 10 });
    const t = output(10);
    await temporary.put(t.meta, t.source);
    const made = readdirSync(tmpdir())
      .filter((d) => d.startsWith("signing-spool-"))
      .map((d) => join(tmpdir(), d))
      .find((d) => existsSync(join(d, `authenticode.${t.meta.inputSha256}`)));
    assert.ok(made, "the temporary spool is made on first use");
    assert.equal(statSync(made).mode & 0o777, 0o700);
    temporary.close();
    assert.equal(existsSync(made), false);
  });

  test("a missing configured directory is created 0700, parents included", () => {
    const dir = join(freshDir(), "nested", "spool");
    new Spool({ directory: dir, maxBytes: 1, maxEntries: 1 });
    assert.equal(statSync(dir).mode & 0o777, 0o700);
  });
});
