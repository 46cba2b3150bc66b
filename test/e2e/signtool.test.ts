import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
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
import { ProcessCluster } from "../../scripts/process-cluster.js";
import { freePort } from "../../scripts/redis-server.js";
import { NONCE_SHAPE } from "../../src/tokens/nonce.js";
import { startFakeNode } from "../helpers/fake-node.js";
import {
  fetchToken as fetchTokenAs,
  hosts,
  signtool as runSigntool,
  signCommand,
} from "../helpers/signtool.js";
import { clearsignVerify, gpgVerify, minisignVerify, sshVerify } from "../helpers/verify.js";

const work = mkdtempSync(join(tmpdir(), "signtool-e2e-"));
let cluster: ProcessCluster;

before(async () => {
  // A short job lease: a job held by a killed node is given up (and re-signed) in 2 s.
  cluster = await ProcessCluster.start({ nodes: 3, env: { SIGNING__signing__jobLeaseMs: "2000" } });
});
after(async () => {
  await cluster?.stop();
  rmSync(work, { recursive: true, force: true });
});

const signtool = (args: string[], onLine?: (line: string) => void) => runSigntool(work, args, onLine);

const fetchToken = (file: string, urls = cluster.urls) =>
  fetchTokenAs(work, urls, cluster.state.issuer, file);

function makeFiles(dir: string, n: number): string[] {
  mkdirSync(dir, { recursive: true });
  return Array.from({ length: n }, (_, i) => {
    const f = join(dir, `artifact-${i}.bin`);
    // Sizes from a few bytes to 3 MiB, so uploads overlap and take a while.
    writeFileSync(f, randomBytes(i % 4 === 0 ? 3 * 1024 * 1024 : 100 + i * 997));
    return f;
  });
}

function summary(stderr: string): string {
  return stderr.trim().split("\n").at(-1) ?? "";
}

describe("signtool against three real nodes", () => {
  const files = () =>
    readdirSync(join(work, "build"))
      .filter((f) => f.endsWith(".bin"))
      .map((f) => join(work, "build", f));

  test("download token, then sign a file set with -j 4 while one node is down and another is killed", async (t) => {
    await fetchToken(join(work, "token"));
    assert.match(readFileSync(join(work, "token"), "utf8"), /^v1\./);
    makeFiles(join(work, "build"), 20);

    // One node is down before the run starts. The stopped and killed nodes come back after
    // this test whatever its outcome: the tests after it need all three.
    t.after(() =>
      Promise.all([0, 1, 2].filter((i) => !cluster.nodes[i]?.running).map((i) => cluster.restart(i))),
    );
    await (cluster.nodes[2] as NonNullable<(typeof cluster.nodes)[number]>).stop("SIGTERM");
    let killed: string | undefined;
    let oks = 0;
    const run = await signtool(
      [
        "sign",
        "-t",
        "token",
        "-n",
        "nonce",
        ...hosts(cluster.urls),
        "-f",
        "gpg",
        "-f",
        "sshsig",
        "-j",
        "4",
        "--cachedir",
        "cache",
        ...files(),
      ],
      (line) => {
        if (/ ok /.test(line)) oks++;
        // Mid-run, SIGKILL the node the client is uploading to right now.
        const m = / uploading @ (http:\/\/\S+)/.exec(line);
        if (m && oks >= 3 && !killed) {
          killed = m[1];
          cluster.nodes.find((n) => n.url === killed)?.child.kill("SIGKILL");
        }
      },
    );
    assert.equal(run.code, 0, run.stderr);
    assert.ok(killed, "a node was killed mid-run");
    t.diagnostic(summary(run.stderr));
    assert.match(
      summary(run.stderr),
      /^signtool: 40 signed \(40 newly, 0 from local cache, 0 from cluster cache\), 0 failed/,
    );

    const gpgKey = readFileSync(cluster.state.keys.gpg.publicKeyFile, "utf8");
    const sshKey = readFileSync(cluster.state.keys.sshsig.publicKeyFile, "utf8");
    for (const f of files()) {
      const data = readFileSync(f);
      const g = gpgVerify(gpgKey, data, readFileSync(`${f}.asc`));
      assert.ok(g.ok, `${f}.asc (${JSON.stringify(readFileSync(`${f}.asc`, "latin1"))}): ${g.output}`);
      const s = sshVerify(sshKey, "file", data, readFileSync(`${f}.sig`));
      assert.ok(s.ok, `${f}.sig: ${s.output}`);
    }
    assert.match(readFileSync(join(work, "nonce"), "utf8"), NONCE_SHAPE);
    assert.deepEqual(
      readdirSync(join(work, "build")).filter((f) => f.includes(".tmp")),
      [],
    );
  });

  test("a second run with the local cache uploads nothing", async () => {
    const run = await signtool([
      "sign",
      "-t",
      "token",
      "-n",
      "nonce",
      ...hosts(cluster.urls),
      "-f",
      "gpg",
      "-f",
      "sshsig",
      "--cachedir",
      "cache",
      ...files(),
    ]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(
      summary(run.stderr),
      /40 signed \(0 newly, 40 from local cache, 0 from cluster cache\), 0 failed/,
    );
  });

  test("another machine's run is served from the cluster's cache", async () => {
    await fetchToken(join(work, "token2"));
    const outDir = join(work, "machine2");
    mkdirSync(outDir);
    const run = await signtool([
      "sign",
      "-t",
      "token2",
      "-n",
      "nonce2",
      ...hosts(cluster.urls),
      "-f",
      "gpg",
      "--output-dir",
      outDir,
      ...files(),
    ]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(
      summary(run.stderr),
      /20 signed \(0 newly, 0 from local cache, 20 from cluster cache\), 0 failed/,
    );
    for (const f of files()) {
      const name = f.split("/").at(-1) as string;
      assert.deepEqual(readFileSync(join(outDir, `${name}.asc`)), readFileSync(`${f}.asc`));
    }
    // Without a local cache each file goes straight up, hashed as it is sent (one read); the
    // node answers "cached" and nothing is signed again.
    assert.match(readFileSync(join(work, "nonce2"), "utf8"), NONCE_SHAPE);
  });
});

describe("signtool when things go wrong", () => {
  const one = () => {
    const f = join(work, "bad", `x-${randomBytes(4).toString("hex")}.txt`);
    mkdirSync(join(work, "bad"), { recursive: true });
    writeFileSync(f, randomBytes(64));
    return f;
  };

  test("missing token file: a clear message, exit 1, no signature", async () => {
    const f = one();
    const run = await signtool([
      "sign",
      "-t",
      "absent-token",
      "-n",
      "n",
      ...hosts(cluster.urls),
      "-f",
      "gpg",
      f,
    ]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /cannot use token file absent-token \(ENOENT\): run the "download token" step/);
    assert.equal(existsSync(`${f}.asc`), false);
  });

  test("an input that is not a readable file fails at once as a local error; the others sign", async () => {
    const good = one();
    const notAFile = join(work, "bad", `dir-${randomBytes(4).toString("hex")}`);
    mkdirSync(notAFile);
    // A FIFO nobody writes to: opening it must not hang.
    const fifo = join(work, "bad", `fifo-${randomBytes(4).toString("hex")}`);
    const made = spawnSync("mkfifo", [fifo]);
    assert.equal(made.status, 0, String(made.stderr));
    const started = Date.now();
    const run = await signtool([
      "sign",
      "-t",
      "token",
      "-n",
      "nonce",
      ...hosts(cluster.urls),
      "-f",
      "gpg",
      notAFile,
      fifo,
      good,
    ]);
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, /cannot read .*dir-.*not a regular file/);
    assert.match(run.stderr, /cannot read .*fifo-.*not a regular file/);
    assert.match(summary(run.stderr), /1 signed .*, 2 failed/, run.stderr);
    assert.doesNotMatch(
      run.stderr,
      /(dir|fifo)-\w+ \[gpg\] (uploading|retrying)/,
      "local failures go to no node",
    );
    assert.ok(existsSync(`${good}.asc`));
    assert.ok(Date.now() - started < 10_000, "no retries through the nodes");
  });

  test("no node given: usage error, exit 2", async () => {
    const run = await signtool(["sign", "-t", "token", "-n", "n", "-f", "gpg", one()]);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /give at least one node with -H host:port/);
    const empty = await signtool(["sign", "-t", "token", "-n", "n", "-H", " ", "-f", "gpg", one()]);
    assert.equal(empty.code, 2, empty.stderr);
  });

  test("two inputs that would write one signature file: usage error before anything is signed", async () => {
    mkdirSync(join(work, "x"), { recursive: true });
    mkdirSync(join(work, "y"), { recursive: true });
    writeFileSync(join(work, "x", "app.bin"), "one");
    writeFileSync(join(work, "y", "app.bin"), "two");
    const out = join(work, "out-dup");
    const run = await signtool([
      "sign",
      "-t",
      "token",
      "-n",
      "nonce",
      ...hosts(cluster.urls),
      "-f",
      "gpg",
      "--output-dir",
      out,
      "x/app.bin",
      "y/app.bin",
    ]);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /would both write/);
  });

  test("only unreachable nodes: gives up after --max-time, exit 1, no signature", async () => {
    const f = one();
    const dead = [await freePort(), await freePort()].map((p) => `127.0.0.1:${p}`);
    const started = Date.now();
    const run = await signtool([
      "sign",
      "-t",
      "token",
      "-n",
      "nonce",
      ...dead.flatMap((d) => ["-H", d]),
      "-f",
      "gpg",
      "--max-time",
      "2",
      f,
    ]);
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, /gave up at the deadline.*ECONNREFUSED/);
    assert.ok(Date.now() - started < 15_000);
    assert.equal(existsSync(`${f}.asc`), false);
  });

  test("nodes that answer garbage or hang up mid-answer: no partial file; a real node among them wins", async () => {
    const garbage = await startFakeNode("garbage");
    const hangup = await startFakeNode("hangup");
    try {
      const f = one();
      const bad = [garbage.url, hangup.url];
      // The key is pinned: nodes that serve garbage would otherwise disagree with the real one.
      const pinned = ["--trusted-key", `gpg=${cluster.state.keys.gpg.publicKeyFile}`];
      const failed = await signtool([
        "sign",
        "-t",
        "token",
        "-n",
        "nonce",
        ...hosts(bad),
        ...pinned,
        "-f",
        "gpg",
        "--max-time",
        "2",
        f,
      ]);
      assert.equal(failed.code, 1, failed.stderr);
      assert.match(failed.stderr, /does not match its X-SHA256-Digest|closed the connection mid-answer/);
      assert.equal(existsSync(`${f}.asc`), false);
      assert.deepEqual(
        readdirSync(join(work, "bad")).filter((n) => n.includes(".tmp")),
        [],
      );

      const ok = await signtool([
        "sign",
        "-t",
        "token",
        "-n",
        "nonce",
        ...hosts([...bad, cluster.urls[0] as string]),
        ...pinned,
        "-f",
        "gpg",
        f,
      ]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.ok(
        gpgVerify(
          readFileSync(cluster.state.keys.gpg.publicKeyFile, "utf8"),
          readFileSync(f),
          readFileSync(`${f}.asc`),
        ).ok,
      );
    } finally {
      await garbage.close();
      await hangup.close();
    }
  });

  test("a revoked token: told to fetch a new one; with --token-from it is fetched", async () => {
    await fetchToken(join(work, "token3"));
    const token = readFileSync(join(work, "token3"), "utf8");
    const res = await fetch(`${cluster.urls[0]}/token`, {
      method: "POST",
      headers: {
        Authorization: `Basic ${Buffer.from(`${cluster.state.issuer.user}:${cluster.state.issuer.password}`).toString("base64")}`,
        "Content-Type": "application/x-www-form-urlencoded",
      },
      body: new URLSearchParams({ expire: token }).toString(),
    });
    assert.equal(res.status, 200);

    const f = one();
    const refused = await signtool([
      "sign",
      "-t",
      "token3",
      "-n",
      "nonce3",
      ...hosts(cluster.urls),
      "-f",
      "gpg",
      f,
    ]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /token was rejected \(401 TOKEN_REVOKED.*fetch a new one/);

    const renewed = await signtool([
      "sign",
      "-t",
      "token3",
      "-n",
      "nonce3",
      ...hosts(cluster.urls),
      "-f",
      "gpg",
      "--token-from",
      `${cluster.state.issuer.user}:${cluster.state.issuer.passwordFile}`,
      f,
    ]);
    assert.equal(renewed.code, 0, renewed.stderr);
    assert.notEqual(readFileSync(join(work, "token3"), "utf8"), token, "the token file holds the new token");
    assert.ok(existsSync(`${f}.asc`));
  });

  test("a refused file (wrong format) fails alone; the others are signed; exit 1", async () => {
    const good = one();
    const run = await signtool([
      "sign",
      "-t",
      "token",
      "-n",
      "nonce",
      ...hosts(cluster.urls),
      "-f",
      "nope",
      "-f",
      "gpg",
      good,
    ]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /FAILED .* \[nope\]: .*400 UNKNOWN_FORMAT/);
    assert.match(summary(run.stderr), /1 signed .* 1 failed/);
    assert.ok(existsSync(`${good}.asc`));
  });
});

describe("signtool with minisign and gpg-clearsign", () => {
  const dir = () => join(work, "release");
  const RELEASE = "Origin: Signing Cluster\nSuite: stable\n- a dash line\nSHA256:\n 00 0 main/Packages\n";
  const sign = (args: string[]) => signtool(signCommand(cluster.urls, ["--cachedir", "cache-new", ...args]));

  test("-f minisign writes <file>.minisig beside each file, verified by minisign -V; a second run is served from the cache", async () => {
    mkdirSync(dir(), { recursive: true });
    const tar = join(dir(), "app-1.0.tar.gz");
    writeFileSync(tar, randomBytes(300_000));
    writeFileSync(join(dir(), "Release"), RELEASE);
    const run = await sign(["-f", "minisign", tar, join(dir(), "Release")]);
    assert.equal(run.code, 0, run.stderr);
    const pub = await (await fetch(`${cluster.urls[0]}/keys/minisign`)).text();
    for (const f of [tar, join(dir(), "Release")]) {
      const v = minisignVerify(pub, readFileSync(f), readFileSync(`${f}.minisig`));
      assert.ok(v.ok, v.output);
    }
    const again = await sign(["-f", "minisign", tar, join(dir(), "Release")]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(
      summary(again.stderr),
      /2 signed \(0 newly, 2 from local cache, 0 from cluster cache\), 0 failed/,
    );
  });

  test("-f gpg-clearsign writes <file>.asc, or InRelease with -o, that gpg --verify and gpgv accept", async () => {
    const release = join(dir(), "Release");
    const pub = readFileSync(cluster.state.keys.gpg.publicKeyFile, "utf8");
    const byDefault = await sign(["-f", "gpg-clearsign", release]);
    assert.equal(byDefault.code, 0, byDefault.stderr);
    const v1 = clearsignVerify(pub, readFileSync(`${release}.asc`));
    assert.ok(v1.ok, v1.output);
    assert.equal(v1.text, RELEASE);
    const named = await sign(["-f", "gpg-clearsign", "-o", join(dir(), "InRelease"), release]);
    assert.equal(named.code, 0, named.stderr);
    const v2 = clearsignVerify(pub, readFileSync(join(dir(), "InRelease")));
    assert.ok(v2.ok, v2.output);
  });

  test("-f gpg-clearsign of a binary file fails that file with 400 UNSUPPORTED_INPUT and writes nothing", async () => {
    const bin = join(dir(), "app.bin");
    writeFileSync(bin, Buffer.concat([Buffer.from([0, 1, 2]), randomBytes(100)]));
    const run = await sign(["-f", "gpg-clearsign", bin]);
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, /FAILED .* \[gpg-clearsign\]: .*400 UNSUPPORTED_INPUT/);
    assert.equal(existsSync(`${bin}.asc`), false);
  });
});
