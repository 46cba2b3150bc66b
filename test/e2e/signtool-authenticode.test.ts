import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ProcessCluster } from "../../scripts/process-cluster.js";
import { sha256 } from "../helpers/api.js";
import { minimalPe, osslsigncodeVerify, powershellScript } from "../helpers/authenticode.js";
import { type ScriptedNode, startScriptedNode } from "../helpers/hostile-node.js";
import { fetchToken, signCommand, signtool, signtoolPeakRss } from "../helpers/signtool.js";

/**
 * signtool -f authenticode against two real node processes: the signed file is written whole
 * (beside the input, into --output-dir, or in place) and `osslsigncode verify` accepts it
 * against the dev CA.
 */
const ADMIN = new URL("../../src/bin/signing-admin.js", import.meta.url).pathname;
const work = mkdtempSync(join(tmpdir(), "signtool-authenticode-"));
let cluster: ProcessCluster;
const scripted: ScriptedNode[] = [];

before(async () => {
  cluster = await ProcessCluster.start({ nodes: 2, authenticode: true });
  await fetchToken(work, cluster.urls, cluster.state.issuer, "token");
});
after(async () => {
  for (const n of scripted) await n.close();
  await cluster?.stop();
  rmSync(work, { recursive: true, force: true });
});

const caFile = () => cluster.state.codeSigning?.caFile as string;
const signArgs = (nodes: string[], args: string[], format = "authenticode") =>
  signCommand(nodes, ["-f", format, ...args]);
const sign = (args: string[]) => signtool(work, signArgs(cluster.urls, args));

/** A node in front of node 0 that passes every request on, or tampers with signed files. */
async function inFront(how: "proxy" | "tamper"): Promise<ScriptedNode> {
  const node = await startScriptedNode(
    (req) => (how === "tamper" && req.url?.startsWith("/sign/authenticode") ? "tamper" : "proxy"),
    cluster.urls[0],
  );
  scripted.push(node);
  return node;
}

/** A minimal PE that no other test signs (identical bytes would come from the cluster's cache). */
function uniquePe(mark: string): Buffer {
  const pe = minimalPe();
  pe.write(mark, 0x300, "latin1");
  return pe;
}

function assertVerifies(file: string): void {
  const v = osslsigncodeVerify(file, caFile());
  assert.ok(v.ok, v.output);
}

describe("signing-admin keys test with authenticode", () => {
  test("each node signs an authenticode probe (a PowerShell script) and it carries the served certificate", async () => {
    const clusterFile = join(work, "cluster.json");
    const { user, passwordFile } = cluster.state.issuer;
    writeFileSync(
      clusterFile,
      JSON.stringify({ redisUrl: cluster.redis.url, nodes: cluster.urls, issuer: { user, passwordFile } }),
    );
    const admin = spawnSync(process.execPath, [ADMIN, "--cluster", clusterFile, "--json", "keys", "test"], {
      cwd: work,
      encoding: "utf8",
      timeout: 120_000,
    });
    assert.equal(admin.status, 0, `${admin.stdout}${admin.stderr}`);
    const probes = (JSON.parse(admin.stdout) as { probes: { format: string; ok: boolean; detail: string }[] })
      .probes;
    const authenticode = probes.filter((p) => p.format === "authenticode");
    assert.equal(authenticode.length, 2);
    for (const p of authenticode) assert.deepEqual([p.ok, p.detail], [true, "verified"]);
  });
});

describe("signtool -f authenticode", () => {
  test("by default the signed file goes beside its input as NAME.signed.EXT; the input is left as it was", async () => {
    const exe = join(work, "tool.exe");
    const ps1 = join(work, "install.ps1");
    writeFileSync(exe, minimalPe());
    writeFileSync(ps1, powershellScript());
    const run = await sign([exe, ps1]);
    assert.equal(run.code, 0, run.stderr);
    assertVerifies(join(work, "tool.signed.exe"));
    assertVerifies(join(work, "install.signed.ps1"));
    assert.equal(sha256(readFileSync(exe)), sha256(minimalPe()));
  });

  test("--output-dir keeps the name", async () => {
    const exe = join(work, "other.exe");
    const pe = minimalPe();
    pe.write("other", 0x300, "latin1");
    writeFileSync(exe, pe);
    const out = join(work, "signed");
    mkdirSync(out);
    const run = await sign(["--output-dir", out, exe]);
    assert.equal(run.code, 0, run.stderr);
    assertVerifies(join(out, "other.exe"));
  });

  test("a signed file in --cachedir whose bytes changed (its certificate still in it) is not used: signed again", async () => {
    const exe = join(work, "cached.exe");
    writeFileSync(exe, uniquePe("cached"));
    const cache = join(work, "cache-damaged");
    const [first, second] = ["first", "second"].map((d) => join(work, `cache-out-${d}`)) as [string, string];
    for (const d of [first, second]) mkdirSync(d);
    const one = await sign(["--cachedir", cache, "--output-dir", first, exe]);
    assert.equal(one.code, 0, one.stderr);
    const cached = join(cache, "authenticode", sha256(readFileSync(exe)));
    const bytes = readFileSync(cached);
    bytes[0x310] = (bytes[0x310] as number) ^ 0xff; // in the code, far from the signature block
    writeFileSync(cached, bytes);
    const two = await sign(["--cachedir", cache, "--output-dir", second, exe]);
    assert.equal(two.code, 0, two.stderr);
    assert.match(two.stderr, /\(0 newly, 0 from local cache, 1 from cluster cache\)/);
    assertVerifies(join(second, "cached.exe"));
    assert.ok(readFileSync(join(second, "cached.exe")).equals(readFileSync(join(first, "cached.exe"))));
  });

  test("--in-place replaces the file with its signed copy, and leaves no temp file", async () => {
    const dir = join(work, "in-place");
    mkdirSync(dir);
    const exe = join(dir, "app.exe");
    const pe = minimalPe();
    pe.write("in-place", 0x300, "latin1");
    writeFileSync(exe, pe, { mode: 0o755 });
    const run = await sign(["--in-place", exe]);
    assert.equal(run.code, 0, run.stderr);
    assert.notEqual(sha256(readFileSync(exe)), sha256(pe));
    assertVerifies(exe);
    assert.deepEqual(readdirSync(dir), ["app.exe"]);
    assert.equal(statSync(exe).mode & 0o777, 0o755, "an executable stays one");
  });

  test("--in-place with a detached format is a usage error, before any upload", async () => {
    const exe = join(work, "tool.exe");
    const run = await signtool(work, signArgs(cluster.urls, ["--in-place", exe], "gpg"));
    assert.notEqual(run.code, 0);
    assert.match(run.stderr, /--in-place/);
    assert.equal(existsSync(`${exe}.asc`), false);
  });
});

describe("signtool -f authenticode: one request, and no signed file in memory", () => {
  test("the signed file comes in the upload's answer (?wait): one POST, no GET", async () => {
    const proxy = await inFront("proxy");
    const dir = join(work, "one-request");
    mkdirSync(dir);
    const exe = join(dir, "quick.exe");
    writeFileSync(exe, uniquePe("one request"));
    const run = await signtool(work, signArgs([proxy.url], [exe]));
    assert.equal(run.code, 0, run.stderr);
    assertVerifies(join(dir, "quick.signed.exe"));
    const signing = proxy.hits.filter((h) => h.path.startsWith("/sign/"));
    assert.deepEqual(
      signing.map((h) => h.method),
      ["POST"],
      `requests: ${JSON.stringify(signing)}`,
    );
  });

  test("a node sending other bytes than its X-SHA256-Digest names: no file written, the input untouched, exit 1", async () => {
    const tamperer = await inFront("tamper");
    const dir = join(work, "tampered");
    mkdirSync(dir);
    const exe = join(dir, "app.exe");
    const pe = uniquePe("tampered");
    writeFileSync(exe, pe, { mode: 0o755 });
    const inPlace = await signtool(work, signArgs([tamperer.url], ["--max-time", "5", "--in-place", exe]));
    assert.equal(inPlace.code, 1, inPlace.stderr);
    assert.match(inPlace.stderr, /FAILED app\.exe \[authenticode\].*gave up at the deadline/);
    assert.match(inPlace.stderr, /sent a signed file that does not match its X-SHA256-Digest/);
    assert.ok(readFileSync(exe).equals(pe), "the input is as it was");
    const beside = await signtool(work, signArgs([tamperer.url], ["--max-time", "5", exe]));
    assert.equal(beside.code, 1, beside.stderr);
    assert.deepEqual(readdirSync(dir), ["app.exe"], "no signed file, no temp file");
    assert.ok(
      tamperer.hits.some((h) => h.method === "GET" && h.path.startsWith("/sign/authenticode/")),
      "after the upload's file, the GET's was refused too",
    );
  });

  const MiB = 1024 * 1024;
  const SIZE = 160 * MiB;

  /** A minimal PE with SIZE bytes of data after its last section (an overlay, as installers carry), written a block at a time. */
  function largePe(path: string): void {
    const block = randomBytes(MiB);
    const fd = openSync(path, "wx");
    try {
      writeSync(fd, uniquePe("large"));
      for (let i = 0; i < SIZE / MiB; i++) {
        block[0] = i & 0xff; // no two blocks alike
        writeSync(fd, block);
      }
    } finally {
      closeSync(fd);
    }
  }

  function sha256Of(path: string): string {
    const hash = createHash("sha256");
    const fd = openSync(path, "r");
    try {
      const buf = Buffer.alloc(4 * MiB);
      for (let n = readSync(fd, buf); n > 0; n = readSync(fd, buf)) hash.update(buf.subarray(0, n));
    } finally {
      closeSync(fd);
    }
    return hash.digest("hex");
  }

  test(`a ${SIZE / MiB} MiB signed file is written, and copied from the local cache, with signtool's peak RSS well under its size`, async () => {
    const dir = join(work, "large");
    const [first, second, cache] = ["first", "second", "cache"].map((d) => join(dir, d)) as [
      string,
      string,
      string,
    ];
    for (const d of [dir, first, second]) mkdirSync(d);
    const exe = join(dir, "setup.exe");
    largePe(exe);
    const small = join(dir, "small.exe");
    writeFileSync(small, uniquePe("small"));

    // signtool's own footprint, signing a 1 KiB file the same way.
    const baseline = await signtoolPeakRss(work, signArgs(cluster.urls, ["--output-dir", first, small]));
    assert.equal(baseline.code, 0, baseline.stderr);
    const signed = await signtoolPeakRss(
      work,
      signArgs(cluster.urls, ["--cachedir", cache, "--output-dir", first, exe]),
    );
    assert.equal(signed.code, 0, signed.stderr);
    assertVerifies(join(first, "setup.exe"));
    const cached = await signtoolPeakRss(
      work,
      signArgs(cluster.urls, ["--cachedir", cache, "--output-dir", second, exe]),
    );
    assert.equal(cached.code, 0, cached.stderr);
    assert.match(cached.stderr, /1 from local cache/);
    assert.equal(sha256Of(join(second, "setup.exe")), sha256Of(join(first, "setup.exe")));

    const mib = (b: number) => `${Math.round(b / MiB)} MiB`;
    console.log(
      `peak RSS: ${mib(baseline.peakRssBytes)} signing 1 KiB, ${mib(signed.peakRssBytes)} signing ${mib(SIZE)}, ${mib(cached.peakRssBytes)} from the cache`,
    );
    // Holding the signed file (or the cached copy) anywhere would add at least its whole size;
    // the margin is for garbage not yet collected.
    for (const [what, run] of [
      ["signing", signed],
      ["from the cache", cached],
    ] as const)
      assert.ok(
        run.peakRssBytes - baseline.peakRssBytes < SIZE / 2,
        `${what}: peak RSS ${mib(run.peakRssBytes)} against ${mib(baseline.peakRssBytes)} for a 1 KiB file`,
      );
    for (const d of [first, second])
      assert.deepEqual(
        readdirSync(d).filter((n) => n.includes(".tmp")),
        [],
      );
  });
});
