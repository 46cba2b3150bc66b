import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { get } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { sha1, sha256 } from "../helpers/api.js";

/**
 * Issue 32: a whole-file output streamed through a node that does not hold it never sits in
 * memory. Both nodes and the client run in this process, so its peak RSS bounds all three:
 * buffering the output anywhere on the way would raise it by the output's size.
 */
const MiB = 1024 * 1024;
const SIZE = 320 * MiB;

let cluster: TestCluster;
let work: string;
before(async () => {
  cluster = await TestCluster.start({ nodes: 2 });
  work = mkdtempSync(join(tmpdir(), "signing-file-memory-"));
});
after(async () => {
  await cluster?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

/** The output, written a block at a time, and its digests. */
function writeOutput(path: string): { sha1: string; sha256: string } {
  const block = randomBytes(MiB);
  const [h1, h256] = [createHash("sha1"), createHash("sha256")];
  const fd = openSync(path, "wx", 0o600);
  try {
    for (let i = 0; i < SIZE / MiB; i++) {
      block[0] = i & 0xff; // no two blocks alike
      h1.update(block);
      h256.update(block);
      writeSync(fd, block);
    }
  } finally {
    closeSync(fd);
  }
  return { sha1: h1.digest("hex"), sha256: h256.digest("hex") };
}

/** Peak resident set since the last reset (Linux: writing 5 to clear_refs resets VmHWM). */
function resetPeak(): number {
  writeFileSync("/proc/self/clear_refs", "5");
  return statusKiB("VmRSS");
}

function statusKiB(field: string): number {
  const line = readFileSync("/proc/self/status", "utf8")
    .split("\n")
    .find((l) => l.startsWith(`${field}:`));
  return Number(line?.split(/\s+/)[1]) * 1024;
}

/** GET through a node, hashing the body as it arrives and keeping none of it. */
function download(url: string) {
  return new Promise<{ status: number; headers: Record<string, unknown>; sha256: string; size: number }>(
    (resolve, reject) => {
      get(url, (res) => {
        const h = createHash("sha256");
        let size = 0;
        res.on("data", (chunk: Buffer) => {
          h.update(chunk);
          size += chunk.length;
        });
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, sha256: h.digest("hex"), size }),
        );
        res.on("error", reject);
      }).on("error", reject);
    },
  );
}

test(`a ${SIZE / MiB} MiB output streamed through a non-owner keeps RSS bounded`, async () => {
  const path = join(work, "signed.bin");
  const digests = writeOutput(path);
  const input = randomBytes(32);
  await cluster.node(0).results.putFile("gpg", { sha256: sha256(input), sha1: sha1(input) }, path); // moves it

  const baseline = resetPeak();
  const got = await download(`${cluster.node(1).url}/sign/gpg/${sha1(input)}`);
  const peak = statusKiB("VmHWM");

  assert.equal(got.status, 200);
  assert.equal(got.size, SIZE);
  assert.equal(got.sha256, digests.sha256);
  assert.equal(got.headers["x-sha1-digest"], digests.sha1);
  assert.equal(got.headers["x-sha256-digest"], digests.sha256);
  const grew = peak - baseline;
  console.log(`peak RSS ${Math.round(peak / MiB)} MiB, ${Math.round(grew / MiB)} MiB over the baseline`);
  // Holding the output anywhere (owner, non-owner or client) would add its whole size.
  assert.ok(
    grew < SIZE / 4,
    `RSS grew by ${Math.round(grew / MiB)} MiB while ${SIZE / MiB} MiB went through`,
  );
});
