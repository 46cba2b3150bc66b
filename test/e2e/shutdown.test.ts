import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import request from "supertest";
import { ProcessCluster } from "../../scripts/process-cluster.js";
import { multipartUpload } from "../../src/client/multipart.js";
import { fetchSignature, getToken, sha1, sha256, upload } from "../helpers/api.js";
import { sample } from "../helpers/metrics.js";
import { gpgVerify } from "../helpers/verify.js";

let cluster: ProcessCluster;
before(async () => {
  cluster = await ProcessCluster.start({ nodes: 2 });
});
after(() => cluster?.stop());

/**
 * A POST /sign?wait upload sent in two halves: the node holds it as in flight until `finish()`
 * sends the rest, however fast the machine (a 96 MiB body alone once finished within the test's
 * 100 ms on a fast VM, and the node, rightly, exited before the test looked).
 */
function heldUpload(url: string, token: string, data: Buffer) {
  const form = multipartUpload(
    { sha1: sha1(data), sha256: sha256(data), filename: "held.bin", token, nonce: "" },
    { path: "", size: data.length, mtimeMs: 0, name: "held.bin", bytes: data },
  );
  const body = form.body as Buffer; // a file given as bytes is encoded whole
  const req = httpRequest(`${url}/sign/gpg?wait=60`, {
    method: "POST",
    headers: { "Content-Type": form.contentType, "Content-Length": form.contentLength },
  });
  const response = new Promise<{ status: number; text: string }>((resolve, reject) => {
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
    });
    req.on("error", reject);
  });
  const half = Math.floor(body.length / 2);
  req.write(body.subarray(0, half));
  return { response, finish: () => req.end(body.subarray(half)) };
}

test("SIGTERM with uploads in flight: they complete, clients get their signatures, exit 0", async () => {
  const [a, b] = cluster.urls as [string, string];
  const auth = `Basic ${Buffer.from(`${cluster.state.issuer.user}:${cluster.state.issuer.password}`).toString("base64")}`;
  const files = [randomBytes(8 * 1024 * 1024), randomBytes(1000), randomBytes(2000)];
  const tokens = await Promise.all(files.map(() => getToken(a, auth)));
  // Each client holds its upload open with ?wait until its signature is ready; the first is
  // still sending its body when the node is told to stop.
  const held = heldUpload(a, tokens[0] as string, files[0] as Buffer);
  const uploads = [
    held.response,
    ...files.slice(1).map((data, i) =>
      upload(a, { token: tokens[i + 1] as string, nonce: "", data, wait: 60 }).then((r) => ({
        status: r.status,
        text: r.text,
      })),
    ),
  ];

  const node = cluster.nodes[0];
  assert.ok(node);
  const exited = new Promise<number | null>((resolve) => node.child.once("exit", (code) => resolve(code)));
  try {
    const inflight = async () =>
      sample((await request(a).get("/metrics")).text, "signing_inflight_jobs") ?? 0;
    for (let i = 0; i < 200 && (await inflight()) < 1; i++) await sleep(20);
    assert.ok((await inflight()) >= 1, "an upload is in flight");

    node.child.kill("SIGTERM");
    await sleep(100);

    // Draining: not ready, and new uploads are sent elsewhere.
    const ready = await request(a).get("/readyz");
    assert.equal(ready.status, 503);
    assert.equal(ready.body.checks.lifecycle.detail, "shutting down");
    const late = await upload(a, { token: await getToken(b, auth), nonce: "", data: randomBytes(10) });
    assert.equal(late.status, 503);
    assert.equal(late.body.error.code, "SHUTTING_DOWN");
  } finally {
    held.finish(); // also when an assertion above failed: no request left half-sent
  }
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
