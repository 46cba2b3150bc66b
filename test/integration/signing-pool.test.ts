/**
 * The signing worker pool (DESIGN.md §6, "Off the event loop"): RSA file keys and PKCS#11 keys
 * sign in worker threads, each PKCS#11 thread with its own session; a dead thread is replaced;
 * the event loop answers while RSA signatures queue. Every signature is verified by gpg or
 * ssh-keygen.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import * as openpgp from "openpgp";
import request from "supertest";
import { type Overrides, TestCluster } from "../../scripts/in-process-cluster.js";
import { SoftHsmToken } from "../../scripts/softhsm.js";
import { fileKey } from "../../src/keys/file.js";
import { SigningPool } from "../../src/keys/pool.js";
import type { RunningNode } from "../../src/node.js";
import { getToken, upload } from "../helpers/api.js";
import { hsmFormats } from "../helpers/hsm-formats.js";
import { gpgVerify, sshVerify } from "../helpers/verify.js";

let dir: string;
let gpgKeyFile: string;
let sshKeyFile: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "signing-pool-"));
  const { privateKey } = await openpgp.generateKey({
    type: "rsa",
    rsaBits: 3072,
    userIDs: [{ email: "rsa3072@signing.invalid" }],
    format: "armored",
  });
  gpgKeyFile = join(dir, "gpg-rsa3072.asc");
  await import("node:fs/promises").then((fs) => fs.writeFile(gpgKeyFile, privateKey, { mode: 0o600 }));
  sshKeyFile = join(dir, "ssh-rsa3072");
  const gen = spawnSync("ssh-keygen", [
    "-t",
    "rsa",
    "-b",
    "3072",
    "-N",
    "",
    "-C",
    "rsa@test",
    "-f",
    sshKeyFile,
    "-q",
  ]);
  assert.equal(gen.status, 0, gen.stderr.toString());
  chmodSync(sshKeyFile, 0o600);
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** Both formats with the RSA-3072 file keys; many uploads from one address allowed. */
function rsaFormats(workers: number): Overrides {
  return {
    signing: {
      workers,
      maxPending: 256,
      maxPendingPerIp: 256,
      formats: {
        gpg: { keyFile: gpgKeyFile, passphrase: undefined },
        sshsig: { keyFile: sshKeyFile },
      },
    },
  };
}

async function withCluster(overrides: Overrides, fn: (c: TestCluster) => Promise<void>): Promise<void> {
  const c = await TestCluster.start({ nodes: 1, overrides });
  try {
    await fn(c);
  } finally {
    await c.stop();
  }
}

/** One upload; answers the response and the data it signed. */
async function sign(c: TestCluster, format: "gpg" | "sshsig") {
  const { url } = c.node(0);
  const data = randomBytes(2048);
  const token = await getToken(url, c.basicAuth);
  const res = await upload(url, { format, token, nonce: "", data, wait: 60 });
  return { res, data };
}

async function verified(c: TestCluster, format: "gpg" | "sshsig", data: Buffer, signature: string) {
  const publicKey = (await request(c.node(0).url).get(`/keys/${format}`)).text;
  const sig = Buffer.from(signature);
  const v = format === "gpg" ? gpgVerify(publicKey, data, sig) : sshVerify(publicKey, "file", data, sig);
  assert.ok(v.ok, v.output);
}

async function signAndVerify(c: TestCluster, format: "gpg" | "sshsig"): Promise<void> {
  const { res, data } = await sign(c, format);
  assert.equal(res.status, 202, res.text);
  await verified(c, format, data, res.body.signature as string);
}

function poolOf(node: RunningNode): SigningPool {
  assert.ok(node.pool, "the node has a signing pool");
  return node.pool;
}

async function until(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (check()) return;
    await sleep(5);
  }
  assert.fail(`timed out waiting for ${what}`);
}

test("RSA-3072 file keys (gpg and sshsig) sign in the pool's threads, verified by gpg and ssh-keygen", async () => {
  await withCluster(rsaFormats(2), async (c) => {
    assert.equal(poolOf(c.node(0)).size, 2);
    await signAndVerify(c, "gpg");
    await signAndVerify(c, "sshsig");
    // Every thread replaced at once: the keys are opened again in the new ones.
    const pool = poolOf(c.node(0));
    const before = pool.workers.map((w) => w.threadId);
    await Promise.all(pool.workers.map((w) => w.terminate()));
    await until("replacement threads", () => pool.workers.every((w) => !before.includes(w.threadId)));
    await signAndVerify(c, "gpg");
  });
});

test("the event loop answers /livez, /readyz and /metrics while 64 RSA signatures are in flight", async () => {
  await withCluster(rsaFormats(1), async (c) => {
    const { url } = c.node(0);
    const pool = poolOf(c.node(0));
    const tokens = await Promise.all(Array.from({ length: 64 }, () => getToken(url, c.basicAuth)));
    const uploads = tokens.map(async (token) => {
      const data = randomBytes(1024);
      const res = await upload(url, { format: "sshsig", token, nonce: "", data, wait: 120 });
      return { res, data };
    });
    let outstanding = uploads.length;
    for (const u of uploads)
      u.then(
        () => outstanding--,
        () => outstanding--,
      );
    // Probes until one is answered while signatures wait for the thread (the gauge says so).
    let answeredUnderLoad = false;
    while (outstanding > 0 && !answeredUnderLoad) {
      const [live, ready, metrics] = await Promise.all(
        ["/livez", "/readyz", "/metrics"].map((path) => request(url).get(path)),
      );
      assert.equal(live?.status, 200, live?.text);
      assert.equal(ready?.status, 200, ready?.text);
      answeredUnderLoad = Number(/^signing_worker_pool_queue (\d+)/m.exec(metrics?.text ?? "")?.[1]) > 0;
    }
    assert.ok(answeredUnderLoad, "no probe was answered while signatures were queued");
    for (const { res, data } of await Promise.all(uploads)) {
      assert.equal(res.status, 202, res.text);
      await verified(c, "sshsig", data, res.body.signature as string);
    }
    assert.equal(pool.waiting, 0);
  });
});

test("a thread killed mid-run is replaced: its task fails as KEY_BACKEND_UNAVAILABLE (retryable), never a bad signature, and the next request signs", async () => {
  await withCluster(rsaFormats(1), async (c) => {
    const { url } = c.node(0);
    const pool = poolOf(c.node(0));
    const tokens = await Promise.all(Array.from({ length: 16 }, () => getToken(url, c.basicAuth)));
    const uploads = tokens.map(async (token) => {
      const data = randomBytes(1024);
      return { res: await upload(url, { format: "sshsig", token, nonce: "", data, wait: 120 }), data };
    });
    // Signatures queued behind it: the one thread is busy signing.
    await until("the thread busy", () => pool.waiting > 0);
    const [killed] = pool.workers;
    await killed?.terminate();
    let failed = 0;
    for (const { res, data } of await Promise.all(uploads)) {
      if (res.status === 503) {
        failed++;
        assert.equal(res.body.error.code, "KEY_BACKEND_UNAVAILABLE", res.text);
        assert.equal(res.body.error.retryable, true);
        continue;
      }
      assert.equal(res.status, 202, res.text);
      await verified(c, "sshsig", data, res.body.signature as string);
    }
    // Only the task inside the dead thread can fail; the queued ones went to its replacement.
    assert.ok(failed <= 1, `${failed} failed`);
    assert.notEqual(pool.workers[0]?.threadId, killed?.threadId);
    await signAndVerify(c, "sshsig");
    await signAndVerify(c, "gpg");
  });
});

test("a task in a thread that dies fails with the reason; queued ones run in its replacement", async () => {
  const { privateKey } = await import("node:crypto").then((cr) =>
    cr.generateKeyPairSync("rsa", { modulusLength: 3072 }),
  );
  const pool = new SigningPool(1);
  try {
    const key = await fileKey(privateKey, "test key", pool);
    const digest = randomBytes(32);
    const first = key.sign(digest).then(
      () => undefined,
      (err: Error & { code?: string }) => err,
    );
    const rest = [key.sign(digest), key.sign(digest)];
    await pool.workers[0]?.terminate();
    const err = await first;
    assert.equal(err?.code, "KEY_BACKEND_UNAVAILABLE");
    assert.match(err.message, /signing worker exited/);
    const { publicDecrypt } = await import("node:crypto");
    for (const sig of await Promise.all(rest))
      assert.equal(publicDecrypt(key.publicKey, sig).subarray(-32).toString("hex"), digest.toString("hex"));
  } finally {
    await pool.close();
  }
});

test("with a SoftHSM2 key, every pool thread opens its own logged-in session, and signatures verify", async () => {
  const t = SoftHsmToken.create(mkdtempSync(join(tmpdir(), "softhsm-")), {
    keys: [
      { label: "gpg-key", id: "01", type: "EC:edwards25519" },
      { label: "ssh-key", id: "02", type: "rsa:2048" },
    ],
  });
  process.env.SOFTHSM2_CONF = t.conf;
  const overrides = hsmFormats(t, "gpg-key", "ssh-key", { workers: 3 });
  try {
    await withCluster(overrides, async (c) => {
      const pool = poolOf(c.node(0));
      const perThread = await pool.everyThread({ op: "pkcs11-sessions" });
      assert.equal(perThread.length, 3);
      const sessions = perThread.flat();
      // Two keys in each of three threads: six sessions, all distinct, all logged in (CKS_RO_USER_FUNCTIONS).
      assert.equal(sessions.length, 6, JSON.stringify(perThread));
      assert.equal(new Set(sessions.map((s) => s.session)).size, 6, JSON.stringify(perThread));
      for (const s of sessions) assert.equal(s.state, 1, JSON.stringify(s));
      for (const thread of perThread) assert.deepEqual(thread.map((s) => s.key).sort(), [0, 1]);
      const results = await Promise.all(
        Array.from({ length: 12 }, (_, i) => sign(c, i % 2 ? "sshsig" : "gpg").then((r) => ({ ...r, i }))),
      );
      for (const { res, data, i } of results) {
        assert.equal(res.status, 202, res.text);
        await verified(c, i % 2 ? "sshsig" : "gpg", data, res.body.signature as string);
      }
    });
  } finally {
    t.destroy();
  }
});
