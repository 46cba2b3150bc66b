import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import request from "supertest";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { StoreKeys } from "../../src/store/keys.js";
import { fetchSignature, getToken, sha1, sha256, upload } from "../helpers/api.js";
import { gpgVerify, sshVerify } from "../helpers/verify.js";

let cluster: TestCluster;
let a: string;
let b: string;
before(async () => {
  cluster = await TestCluster.start({ nodes: 2 });
  a = cluster.node(0).url;
  b = cluster.node(1).url;
});
after(() => cluster?.stop());

describe("two nodes over one Redis", () => {
  test("a token issued by node A signs on node B, and an upload to A is collected from B", async () => {
    const token = await getToken(a, cluster.basicAuth);
    const data = randomBytes(4096);
    const up = await upload(b, { token, nonce: "", data });
    assert.equal(up.status, 202, up.text);
    assert.equal(up.body.sha256, sha256(data));

    const res = await fetchSignature(a, "gpg", sha1(data), 30);
    assert.equal(res.status, 200, String(res.body));
    assert.equal(res.headers["x-sha1-digest"], sha1(res.body));
    assert.equal(res.headers["x-sha256-digest"], sha256(res.body));
    const v = gpgVerify(readFileSync(cluster.state.keys.gpg.publicKeyFile, "utf8"), data, res.body);
    assert.ok(v.ok, v.output);
  });

  test("sshsig signatures verify with ssh-keygen -Y verify, fetched by sha256", async () => {
    const token = await getToken(b, cluster.basicAuth);
    const data = Buffer.from("sha256sums of a release\n");
    const up = await upload(a, { format: "sshsig", token, nonce: "", data, wait: 30 });
    assert.equal(up.status, 202, up.text);
    const res = await fetchSignature(b, "sshsig", sha256(data));
    assert.equal(res.status, 200);
    const pub = (await request(b).get("/keys/sshsig")).text;
    assert.equal(pub.trim(), readFileSync(cluster.state.keys.sshsig.publicKeyFile, "utf8").trim());
    const v = sshVerify(pub, "file", data, res.body);
    assert.ok(v.ok, v.output);
    // The signature is over these bytes, not any others.
    assert.equal(sshVerify(pub, "file", Buffer.from("something else\n"), res.body).ok, false);
  });

  test("the nonce chain advances across nodes and a replayed nonce is refused", async () => {
    const token = await getToken(a, cluster.basicAuth);
    const f1 = randomBytes(100);
    const f2 = randomBytes(100);
    const f3 = randomBytes(100);
    const r1 = await upload(a, { token, nonce: "", data: f1 });
    assert.equal(r1.status, 202);
    const n1 = r1.headers["x-nonce"] as string;
    const r2 = await upload(b, { token, nonce: n1, data: f2 });
    assert.equal(r2.status, 202, r2.text);
    const n2 = r2.headers["x-nonce"] as string;
    assert.notEqual(n2, n1);

    // The empty nonce again, and n1 for a different file: both replays.
    const replayEmpty = await upload(b, { token, nonce: "", data: f3 });
    assert.equal(replayEmpty.status, 403);
    assert.equal(replayEmpty.body.error.code, "NONCE_MISMATCH");
    const replay = await upload(a, { token, nonce: n1, data: f3 });
    assert.equal(replay.status, 403);
    assert.equal(replay.body.error.code, "NONCE_MISMATCH");
    assert.equal(replay.headers["x-nonce"], n1, "a refused upload echoes the nonce it was given");
    // A made-up nonce is refused without touching the chain.
    const forged = await upload(a, { token, nonce: "7.AAAAAAAAAAAAAAAAAAAAAA", data: f3 });
    assert.equal(forged.status, 403);

    // The retry of the last upload (its answer lost in transit) passes once with the same nonce.
    const retry = await upload(a, { token, nonce: n1, data: f2 });
    assert.equal(retry.status, 202, retry.text);
    assert.equal(retry.headers["x-nonce"], n2);

    const r3 = await upload(a, { token, nonce: n2, data: f3 });
    assert.equal(r3.status, 202, r3.text);
  });

  test("a refused upload leaves no job behind; a signed one ends its job in its result's step", async () => {
    const redis = new Redis(cluster.redis.url);
    const monitor = await redis.monitor(); // a connection of its own
    const seen: { args: string[]; source: string }[] = [];
    monitor.on("monitor", (_time: string, args: string[], source: string) => seen.push({ args, source }));
    const keys = new StoreKeys("signing:");
    try {
      const token = await getToken(a, cluster.basicAuth);
      const data = randomBytes(300);
      const job = keys.job("gpg", sha256(data));
      const replay = await upload(a, { token, nonce: "7.AAAAAAAAAAAAAAAAAAAAAA", data });
      assert.equal(replay.status, 403, replay.text);
      const revoked = await getToken(a, cluster.basicAuth);
      await request(a)
        .post("/token")
        .set("Authorization", cluster.basicAuth)
        .type("form")
        .send({ expire: revoked });
      const refused = await upload(b, { token: revoked, nonce: "", data });
      assert.equal(refused.body.error?.code, "TOKEN_REVOKED", refused.text);
      assert.equal(await redis.exists(job), 0, "a refused upload holds no lease");

      const signed = await upload(b, { token, nonce: "", data, wait: 30 });
      assert.equal(signed.status, 202, signed.text);
      assert.equal(signed.body.status, "queued", "signed at once, not left waiting on a lease");
      const verified = gpgVerify(
        readFileSync(cluster.state.keys.gpg.publicKeyFile, "utf8"),
        data,
        Buffer.from(signed.body.signature, "utf8"),
      );
      assert.ok(verified.ok, verified.output);
      assert.equal(await redis.exists(job), 0, "the job ended with its result");
      assert.equal(await redis.exists(keys.result("gpg", sha256(data))), 1);

      // On one server the job's DEL runs inside the script that stores the result: one round
      // trip, and no moment with neither. MONITOR names a script's own calls' source "lua".
      const dels = () => seen.filter((c) => c.args[0]?.toLowerCase() === "del" && c.args.includes(job));
      for (let i = 0; i < 100 && dels().length === 0; i++) await sleep(20);
      assert.deepEqual(
        dels().map((c) => c.source),
        ["lua"],
        "one DEL of the job, from the result's script",
      );
    } finally {
      monitor.disconnect();
      redis.disconnect();
    }
  });

  test("two uploads racing with one nonce: exactly one passes", async () => {
    const token = await getToken(a, cluster.basicAuth);
    const results = await Promise.all([
      upload(a, { token, nonce: "", data: randomBytes(64) }),
      upload(b, { token, nonce: "", data: randomBytes(64) }),
    ]);
    assert.deepEqual(results.map((r) => r.status).sort(), [202, 403]);
  });

  test("an identical file is served from the cache without signing it again", async () => {
    const data = randomBytes(2048);
    const t1 = await getToken(a, cluster.basicAuth);
    const first = await upload(a, { token: t1, nonce: "", data, wait: 30 });
    assert.equal(first.status, 202);
    assert.equal(first.body.status, "queued");
    const sig1 = await fetchSignature(a, "gpg", sha1(data));

    const t2 = await getToken(b, cluster.basicAuth);
    const again = await upload(b, { token: t2, nonce: "", data });
    assert.equal(again.status, 202);
    assert.equal(again.body.status, "cached");
    const sig2 = await fetchSignature(b, "gpg", sha1(data));
    // openpgp signatures carry a timestamp: byte-identical output proves it was not re-signed.
    assert.deepEqual(sig2.body, sig1.body);
  });

  test("?wait holds the upload until the signature is ready", async () => {
    const token = await getToken(a, cluster.basicAuth);
    const data = randomBytes(1000);
    const up = await upload(a, { token, nonce: "", data, wait: 30 });
    assert.equal(up.status, 202);
    const res = await fetchSignature(b, "gpg", sha256(data));
    assert.equal(res.status, 200);
  });

  test("expire=<token> revokes it everywhere", async () => {
    const token = await getToken(a, cluster.basicAuth);
    const res = await request(b)
      .post("/token")
      .set("Authorization", cluster.basicAuth)
      .type("form")
      .send({ expire: token });
    assert.equal(res.status, 200, res.text);
    const up = await upload(a, { token, nonce: "", data: randomBytes(10) });
    assert.equal(up.status, 401);
    assert.equal(up.body.error.code, "TOKEN_REVOKED");
  });

  test("a token scoped to formats is refused for the others", async () => {
    const token = await getToken(a, cluster.basicAuth, {
      slave_ip: "127.0.0.1",
      duration: "60",
      formats: "sshsig",
    });
    const up = await upload(b, { format: "gpg", token, nonce: "", data: randomBytes(10) });
    assert.equal(up.status, 403);
    assert.equal(up.body.error.code, "FORMAT_NOT_ALLOWED");
    // The refusal did not consume the nonce: the allowed format still starts the chain.
    assert.equal(
      (await upload(b, { format: "sshsig", token, nonce: "", data: randomBytes(10) })).status,
      202,
    );
  });

  test("GET /formats, /keys/:format, health and version", async () => {
    const formats = await request(a).get("/formats");
    assert.equal(formats.status, 200);
    assert.deepEqual(formats.body.formats.map((f: { name: string }) => f.name).sort(), [
      "gpg",
      "gpg-clearsign",
      "minisign",
      "sshsig",
    ]);
    // The dev keys: file keys, Ed25519, and an OpenPGP key without expiry.
    for (const f of formats.body.formats as Record<string, unknown>[])
      assert.deepEqual([f.backend, f.algorithm, f.expiresAt], ["file", "ed25519", null], String(f.name));
    const key = await request(a).get("/keys/gpg");
    assert.equal(key.status, 200);
    assert.match(key.text, /BEGIN PGP PUBLIC KEY BLOCK/);
    assert.doesNotMatch(key.text, /PRIVATE/);
    assert.equal((await request(a).get("/keys/nope")).status, 400);
    assert.equal((await request(a).get("/__lbheartbeat__")).status, 200);
    const ready = await request(a).get("/readyz");
    assert.equal(ready.status, 200, ready.text);
    const version = await request(a).get("/__version__");
    assert.equal(version.body.version, "0.1.0");
    // Stamped by npm run build from the checkout it was built in.
    const head = execFileSync("git", ["rev-parse", "HEAD"], { cwd: new URL("../../..", import.meta.url) });
    assert.match(version.body.commit, new RegExp(`^${head.toString().trim()}(-dirty)?$`));
    assert.ok(Date.parse(version.body.builtAt) <= Date.now());
  });
});
