import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import {
  chmodSync,
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
import * as openpgp from "openpgp";
import { ProcessCluster } from "../../scripts/process-cluster.js";
import { freePort } from "../../scripts/redis-server.js";
import { type Answer, apiError, type ScriptedNode, startScriptedNode } from "../helpers/hostile-node.js";
import { fetchToken, hosts, signtool as runSigntool } from "../helpers/signtool.js";
import { makePki } from "../helpers/tls.js";
import { gpgVerify } from "../helpers/verify.js";

/**
 * Issue 28: exit 0 means every file has a valid signature. Hostile and broken nodes are
 * scripted (test/helpers/hostile-node.ts); honest cases run against three real nodes.
 */
const work = mkdtempSync(join(tmpdir(), "signtool-trust-"));
let cluster: ProcessCluster;
let gpgKey: string;
const scripted: ScriptedNode[] = [];
const pki = makePki();

before(async () => {
  cluster = await ProcessCluster.start({ nodes: 3 });
  gpgKey = readFileSync(cluster.state.keys.gpg.publicKeyFile, "utf8");
  await fetchToken(work, cluster.urls, cluster.state.issuer, join(work, "token"));
});
after(async () => {
  for (const n of scripted) await n.close();
  await cluster?.stop();
  rmSync(work, { recursive: true, force: true });
  rmSync(pki.dir, { recursive: true, force: true });
});

const signtool = (args: string[]) => runSigntool(work, args);
const real = () => cluster.urls[0] as string;
let files = 0;
function newFile(name = `f${files++}.txt`, bytes = randomBytes(200)): string {
  const f = join(work, name);
  writeFileSync(f, bytes);
  return f;
}
async function node(script: Parameters<typeof startScriptedNode>[0]): Promise<ScriptedNode> {
  const n = await startScriptedNode(script, real());
  scripted.push(n);
  return n;
}
const verified = (file: string) => gpgVerify(gpgKey, readFileSync(file), readFileSync(`${file}.asc`)).ok;
const sha256 = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");
/** A token file and nonce file of its own for one test (fresh chains do not collide). */
async function ownToken(name: string): Promise<string[]> {
  await fetchToken(work, cluster.urls, cluster.state.issuer, join(work, `${name}.token`));
  return ["-t", `${name}.token`, "-n", `${name}.nonce`];
}

describe("1. a node's bytes are never taken for a signature", () => {
  test("a 202 carrying 'NOT A SIGNATURE' is not written over a good .asc, nor cached; exit 1", async () => {
    const liar = await node((req): Answer | "proxy" => {
      if (req.method === "POST") {
        const body = JSON.stringify({ status: "queued", signature: "NOT A SIGNATURE" });
        return { status: 202, headers: { "Content-Type": "application/json" }, body };
      }
      if (!req.url?.startsWith("/sign/")) return "proxy";
      return {
        status: 200,
        headers: { "X-SHA256-Digest": sha256("NOT A SIGNATURE") },
        body: "NOT A SIGNATURE",
      };
    });
    const f = newFile();
    const auth = await ownToken("liar");
    const good = await signtool([...auth, ...hosts([real()]), "-f", "gpg", f]);
    assert.equal(good.code, 0, good.stderr);
    const before = readFileSync(`${f}.asc`);
    writeFileSync(f, randomBytes(200)); // a new build of the same file
    const cache = join(work, "liar-cache");
    const run = await signtool([
      ...auth,
      ...hosts([liar.url]),
      "--cachedir",
      cache,
      "-f",
      "gpg",
      "--max-time",
      "3",
      f,
    ]);
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, /does not verify/);
    assert.deepEqual(readFileSync(`${f}.asc`), before, "the existing output is untouched");
    assert.equal(
      existsSync(join(cache, "gpg")) ? readdirSync(join(cache, "gpg")).length : 0,
      0,
      "nothing cached",
    );
  });

  test("with the liar and a real node listed, the real node's signature is the one written", async () => {
    const liar = await node((req) =>
      req.url?.startsWith("/sign/") && req.method === "GET"
        ? { status: 200, headers: { "X-SHA256-Digest": sha256("NOT A SIGNATURE") }, body: "NOT A SIGNATURE" }
        : "proxy",
    );
    const f = newFile();
    const run = await signtool([...(await ownToken("mixed")), ...hosts([liar.url, real()]), "-f", "gpg", f]);
    assert.equal(run.code, 0, run.stderr);
    assert.ok(verified(f));
  });

  test("nodes that disagree on the key: an error naming them, exit 2, nothing uploaded", async () => {
    const { publicKey } = await openpgp.generateKey({
      type: "ecc",
      curve: "ed25519Legacy",
      userIDs: [{ email: "m@x.invalid" }],
      format: "armored",
    });
    const impostor = await node((req) =>
      req.url === "/keys/gpg" ? { status: 200, body: publicKey } : "proxy",
    );
    const f = newFile();
    const run = await signtool([
      ...(await ownToken("disagree")),
      ...hosts([impostor.url, real()]),
      "-f",
      "gpg",
      f,
    ]);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, new RegExp(`disagree on the gpg key.*${impostor.url}`));
    assert.equal(impostor.hits.filter((h) => h.method === "POST").length, 0);
    assert.equal(existsSync(`${f}.asc`), false);
  });

  test("a pinned key wins over what the nodes serve", async () => {
    const { publicKey } = await openpgp.generateKey({
      type: "ecc",
      curve: "ed25519Legacy",
      userIDs: [{ email: "p@x.invalid" }],
      format: "armored",
    });
    writeFileSync(join(work, "other.pub"), publicKey);
    const f = newFile();
    const wrong = await signtool([
      ...(await ownToken("pin")),
      ...hosts([real()]),
      "--trusted-key",
      "gpg=other.pub",
      "-f",
      "gpg",
      "--max-time",
      "3",
      f,
    ]);
    assert.equal(wrong.code, 1, wrong.stderr);
    assert.match(wrong.stderr, /does not verify with the key from other\.pub/);
  });
});

describe("2. --max-time bounds the run", () => {
  test("all nodes down: 50 files end by the deadline, not 50 times it", async () => {
    const dead = [await freePort(), await freePort()].map((p) => `127.0.0.1:${p}`);
    const many = Array.from({ length: 50 }, () => newFile());
    const run = await signtool([
      "-t",
      "token",
      "-n",
      "nonce",
      ...dead.flatMap((d) => ["-H", d]),
      "--trusted-key",
      `gpg=${cluster.state.keys.gpg.publicKeyFile}`,
      "-f",
      "gpg",
      "--max-time",
      "3",
      ...many,
    ]);
    assert.equal(run.code, 1, run.stderr);
    assert.ok(run.ms < 8000, `${run.ms} ms`);
  });

  test("a node that takes the upload and never answers holds no attempt past the deadline", async () => {
    const silent = await node((req) => (req.method === "POST" ? "hang" : "proxy"));
    const f = newFile("big.bin", randomBytes(3 * 1024 * 1024));
    const run = await signtool([
      ...(await ownToken("silent")),
      ...hosts([silent.url]),
      "-f",
      "gpg",
      "--max-time",
      "3",
      f,
    ]);
    assert.equal(run.code, 1, run.stderr);
    assert.ok(run.ms < 8000, `${run.ms} ms`);
  });

  test("Retry-After: 10^9 from one node moves on to the healthy one instead of sleeping", async () => {
    const busy = await node((req) =>
      req.method === "POST" ? apiError(503, "OVERLOADED", "busy", { "Retry-After": "1000000000" }) : "proxy",
    );
    const f = newFile();
    const run = await signtool([...(await ownToken("busy")), ...hosts([busy.url, real()]), "-f", "gpg", f]);
    assert.equal(run.code, 0, run.stderr);
    assert.ok(run.ms < 10_000, `${run.ms} ms`);
  });
});

describe("3. mistakes fail fast, in one line", () => {
  const fast = async (args: string[], pattern: RegExp) => {
    const run = await signtool([
      "-t",
      "token",
      "-n",
      "nonce",
      "--trusted-key",
      `gpg=${cluster.state.keys.gpg.publicKeyFile}`,
      "-f",
      "gpg",
      ...args,
      newFile(),
    ]);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, pattern);
    assert.ok(run.ms < 10_000, `${run.ms} ms at the default --max-time`);
  };

  test("a host that does not resolve", () =>
    fast(["-H", "no-such-node.invalid:9110"], /no-such-node\.invalid:9110 its host name does not resolve/));

  test("-c (TLS) against a plain-HTTP node", () =>
    fast(
      ["-c", pki.serverCert, "-H", real().replace("http://", "")],
      /speaks plain HTTP, but -c asks for TLS/,
    ));

  test("a redirect", async () => {
    const mover = await node(() => ({ status: 301, headers: { Location: "https://elsewhere.invalid/" } }));
    await fast(["-H", mover.host], /redirects \(301 to https:\/\/elsewhere\.invalid\/\)/);
  });

  test("a proxy's HTML 413", async () => {
    const proxy = await node((req) =>
      req.method === "POST"
        ? {
            status: 413,
            headers: { "Content-Type": "text/html" },
            body: "<html>Request Entity Too Large</html>",
          }
        : "proxy",
    );
    await fast(["-H", proxy.host], /answered 413 without the signing API's error body/);
  });
});

describe("4, 5, 10: the command line", () => {
  test("sign without -f is a usage error, exit 2; a config file's formats make it the default", async () => {
    const f = newFile();
    const none = await signtool(["sign", "-t", "token", "-n", "nonce", ...hosts([real()]), f]);
    assert.equal(none.code, 2, none.stderr);
    assert.match(none.stderr, /no format given/);
    writeFileSync(join(work, "signtool.yaml"), `formats: [gpg]\nhosts: [${real().replace("http://", "")}]\n`);
    const cfg = await signtool(["sign", ...(await ownToken("cfg")), "--config", "signtool.yaml", f]);
    assert.equal(cfg.code, 0, cfg.stderr);
    assert.ok(verified(f));
  });

  test("-f ../../x is refused before anything is written", async () => {
    const run = await signtool([
      "-t",
      "token",
      "-n",
      "nonce",
      ...hosts([real()]),
      "--cachedir",
      "c",
      "-f",
      "../../x",
      newFile(),
    ]);
    assert.equal(run.code, 2, run.stderr);
    assert.equal(existsSync(join(work, "c")), false);
  });

  test("an unwritable --output-dir is refused before an upload spends a nonce", async () => {
    const out = join(work, "readonly");
    mkdirSync(out);
    chmodSync(out, 0o500);
    const auth = await ownToken("ro");
    const run = await signtool([...auth, ...hosts([real()]), "-f", "gpg", "--output-dir", out, newFile()]);
    chmodSync(out, 0o700);
    if (process.getuid?.() === 0) return; // root writes anywhere: nothing to refuse
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /cannot write signatures to/);
    assert.equal(existsSync(join(work, "ro.nonce")), false, "no nonce was spent");
  });
});

describe("6. server text is printed safe", () => {
  test("terminal escapes are stripped, the length capped, tokens and nonces redacted", async () => {
    const token = readFileSync(join(work, "token"), "utf8");
    const evil = await node((req) =>
      req.method === "POST"
        ? apiError(
            400,
            "BAD_REQUEST",
            `\u001b[2J\u001b[31mpwned ${token} 12.abcdefghijk.ABCDEFGHIJK.abcdefghijklmnopqrstuv ${"x".repeat(5000)}`,
          )
        : "proxy",
    );
    const run = await signtool([...(await ownToken("evil")), ...hosts([evil.url]), "-f", "gpg", newFile()]);
    assert.equal(run.code, 1, run.stderr);
    assert.ok(!run.stderr.includes("\u001b"), "no escape reaches the log");
    assert.ok(!run.stderr.includes(token.trim()), "no token");
    assert.match(run.stderr, /pwned \[token\] \[nonce\]/);
    assert.ok(run.stderr.length < 2000, `${run.stderr.length} characters`);
  });
});

describe("7, 8: tokens and nonces", () => {
  test("--token-from keeps the token and nonce files until a new token has signed", async () => {
    const impostor = await node((req) =>
      req.url === "/token"
        ? {
            status: 200,
            headers: { "Content-Type": "text/plain" },
            body: "v1.evil.eyJ4IjoxfQ.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
          }
        : req.method === "POST"
          ? apiError(401, "TOKEN_EXPIRED", "expired", { "X-Nonce": "" })
          : "proxy",
    );
    const auth = await ownToken("kept");
    writeFileSync(join(work, "kept.nonce"), "");
    const tokenBefore = readFileSync(join(work, "kept.token"));
    const run = await signtool([
      ...auth,
      ...hosts([impostor.url]),
      "--token-from",
      `${cluster.state.issuer.user}:${cluster.state.issuer.passwordFile}`,
      "-f",
      "gpg",
      "--max-time",
      "5",
      newFile(),
    ]);
    assert.equal(run.code, 1, run.stderr);
    assert.deepEqual(readFileSync(join(work, "kept.token")), tokenBefore, "the token file is untouched");
    assert.equal(readFileSync(join(work, "kept.nonce"), "utf8"), "", "so is the nonce file");
  });

  test("NONCE_MISMATCH says why and what to do; with --token-from a new chain carries on", async () => {
    const auth = await ownToken("chain");
    const first = await signtool([...auth, ...hosts([real()]), "-f", "gpg", newFile()]);
    assert.equal(first.code, 0, first.stderr);
    const used = readFileSync(join(work, "chain.nonce"), "utf8");
    const second = await signtool([...auth, ...hosts([real()]), "-f", "gpg", newFile()]);
    assert.equal(second.code, 0, second.stderr);
    writeFileSync(join(work, "chain.nonce"), used); // a nonce file restored from an old copy
    const stuck = await signtool([...auth, ...hosts([real()]), "-f", "gpg", newFile()]);
    assert.equal(stuck.code, 1, stuck.stderr);
    assert.match(
      stuck.stderr,
      /NONCE_MISMATCH.*two jobs use one token and nonce file, or the nonce file was lost/,
    );
    const tokenBefore = readFileSync(join(work, "chain.token"), "utf8");
    const f = newFile();
    const carried = await signtool([
      ...auth,
      ...hosts([real()]),
      "--token-from",
      `${cluster.state.issuer.user}:${cluster.state.issuer.passwordFile}`,
      "-f",
      "gpg",
      f,
    ]);
    assert.equal(carried.code, 0, carried.stderr);
    assert.ok(verified(f));
    assert.notEqual(
      readFileSync(join(work, "chain.token"), "utf8"),
      tokenBefore,
      "the new token is kept once it signed",
    );
  });
});

describe("9, 10: what nodes say", () => {
  test("filenames with spaces and letters of any script sign, and verify", async () => {
    const auth = await ownToken("names");
    const names = ["Firefox Setup 29.0.exe", "Überblick – Ä ö.pdf", "日本語 ファイル.txt"];
    const paths = names.map((n) => newFile(n));
    const run = await signtool([...auth, ...hosts([real()]), "-f", "gpg", ...paths]);
    assert.equal(run.code, 0, run.stderr);
    for (const p of paths) assert.ok(verified(p), p);
  });

  test("a refused filename shows the pattern; IP_MISMATCH names the address the node saw", async () => {
    const auth = await ownToken("refused");
    const dashed = await signtool([...auth, ...hosts([real()]), "-f", "gpg", newFile("-dash.bin")]);
    assert.equal(dashed.code, 1, dashed.stderr);
    assert.match(dashed.stderr, /BAD_FILENAME.*pattern \^\[\\p\{L\}/);
    const other = join(work, "other-ip.token");
    const res = await fetch(`${real()}/token`, {
      method: "POST",
      headers: {
        Authorization: `Basic ${Buffer.from(`${cluster.state.issuer.user}:${cluster.state.issuer.password}`).toString("base64")}`,
        "Content-Type": "application/x-www-form-urlencoded",
      },
      body: "slave_ip=10.9.8.7&duration=600",
    });
    writeFileSync(other, await res.text());
    const mismatch = await signtool([
      "-t",
      other,
      "-n",
      "other-ip.nonce",
      ...hosts([real()]),
      "-f",
      "gpg",
      newFile(),
    ]);
    assert.equal(mismatch.code, 1, mismatch.stderr);
    assert.match(mismatch.stderr, /IP_MISMATCH.*this node sees you as 127\.0\.0\.1.*--slave-ip 127\.0\.0\.1/);
  });
});

describe("5. the classic command line, unchanged", () => {
  let tls: ProcessCluster;
  before(async () => {
    tls = await ProcessCluster.start({
      nodes: 3,
      env: {
        SIGNING__node__allowPlaintext: "false",
        SIGNING__tls: JSON.stringify({ cert: pki.serverCert, key: pki.serverKey }),
      },
      https: true,
    });
  });
  after(() => tls?.stop());

  test("signtool.py's line: no subcommand, -t -n -c -H host:port ×3 --cachedir, against https nodes", async () => {
    const dir = join(work, "classic");
    mkdirSync(dir);
    writeFileSync(join(dir, "host.cert"), readFileSync(pki.serverCert));
    await fetchToken(work, tls.urls, tls.state.issuer, join(dir, "token"), ["-c", pki.serverCert]);
    const f = join(dir, "FILE");
    writeFileSync(f, randomBytes(500));
    const [h1, h2, h3] = tls.urls.map((u) => u.replace("https://", ""));
    const line = `--cachedir DIR -t token -n nonce -c host.cert -H ${h1} -H ${h2} -H ${h3} -f gpg FILE`;
    const run = await runSigntool(dir, line.split(" "));
    assert.equal(run.code, 0, run.stderr);
    assert.ok(
      gpgVerify(
        readFileSync(tls.state.keys.gpg.publicKeyFile, "utf8"),
        readFileSync(f),
        readFileSync(`${f}.asc`),
      ).ok,
    );
    const again = await runSigntool(dir, line.split(" "));
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /1 from local cache/);
  });
});
