import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import request from "supertest";
import { fetchSignature, getToken, sha256, upload } from "../helpers/api.js";
import { sample } from "../helpers/metrics.js";
import { ProcessCluster } from "../helpers/process-cluster.js";
import { gpgVerify } from "../helpers/verify.js";

let cluster: ProcessCluster;
before(async () => {
  cluster = await ProcessCluster.start({ nodes: 2 });
});
after(() => cluster?.stop());

test("SIGTERM with uploads in flight: they complete, clients get their signatures, exit 0", async () => {
  const [a, b] = cluster.urls as [string, string];
  const auth = `Basic ${Buffer.from(`${cluster.state.issuer.user}:${cluster.state.issuer.password}`).toString("base64")}`;
  const files = [randomBytes(96 * 1024 * 1024), randomBytes(1000), randomBytes(2000)];
  const tokens = await Promise.all(files.map(() => getToken(a, auth)));
  // Each client holds its upload open with ?wait until its signature is ready.
  const uploads = files.map((data, i) =>
    upload(a, { token: tokens[i] as string, nonce: "", data, wait: 60 }).then((r) => r),
  );

  const inflight = async () => sample((await request(a).get("/metrics")).text, "signing_inflight_jobs") ?? 0;
  for (let i = 0; i < 200 && (await inflight()) < 1; i++) await sleep(20);
  assert.ok((await inflight()) >= 1, "an upload is in flight");

  const node = cluster.nodes[0];
  assert.ok(node);
  const exited = new Promise<number | null>((resolve) => node.child.once("exit", (code) => resolve(code)));
  node.child.kill("SIGTERM");
  await sleep(100);

  // Draining: not ready, and new uploads are sent elsewhere.
  const ready = await request(a).get("/readyz");
  assert.equal(ready.status, 503);
  assert.equal(ready.body.checks.lifecycle.detail, "shutting down");
  const late = await upload(a, { token: await getToken(b, auth), nonce: "", data: randomBytes(10) });
  assert.equal(late.status, 503);
  assert.equal(late.body.error.code, "SHUTTING_DOWN");

  const answers = await Promise.all(uploads);
  for (const r of answers) assert.equal(r.status, 202, r.text);
  assert.equal(await exited, 0, node.stderr);

  const gpgKey = readFileSync(cluster.state.keys.gpg.publicKeyFile, "utf8");
  for (const data of files) {
    const sig = await fetchSignature(b, "gpg", sha256(data));
    assert.equal(sig.status, 200, "the other node serves what the stopped node signed");
    const v = gpgVerify(gpgKey, data, sig.body);
    assert.ok(v.ok, v.output);
  }
});
