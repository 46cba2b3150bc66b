import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Writable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { sha1, sha256 } from "../helpers/api.js";
import { jsonLogSink } from "../helpers/log-sink.js";
import { makePki, type TestPki } from "../helpers/tls.js";

/**
 * Issue 32: node-to-node fetches of whole-file results go over the cluster's own TLS: the
 * owner's certificate checked against `tls.peerCa`, and this node's certificate presented
 * where the owner requires client certificates (mutual TLS).
 */
let pki: TestPki;
let work: string;
const clusters: TestCluster[] = [];
before(() => {
  pki = makePki();
  work = mkdtempSync(join(tmpdir(), "signing-file-tls-"));
});
after(async () => {
  await Promise.all(clusters.map((c) => c.stop()));
  rmSync(pki.dir, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
});

async function start(tls: Record<string, string>, logTo?: Writable): Promise<TestCluster> {
  const overrides = {
    node: { allowPlaintext: false },
    tls: { cert: pki.serverCert, key: pki.serverKey, ...tls },
  };
  const cluster = await TestCluster.start({ nodes: 2, overrides, ...(logTo ? { logTo } : {}) });
  clusters.push(cluster);
  return cluster;
}

async function putOutput(cluster: TestCluster) {
  const input = randomBytes(32);
  const output = randomBytes(300_000);
  const path = join(work, sha256(input));
  writeFileSync(path, output);
  await cluster.node(0).results.putFile("gpg", { sha256: sha256(input) }, path);
  return { input, output };
}

/** GET over HTTPS as a build machine with a client certificate. */
function get(url: string): Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, {
      ca: readFileSync(pki.serverCert),
      cert: readFileSync(pki.clientCert),
      key: readFileSync(pki.clientKey),
    });
    req.on("error", reject);
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      );
    });
    req.end();
  });
}

describe("whole-file results over TLS", () => {
  test("under mutual TLS a non-owner fetches from the owner with its own certificate", async () => {
    // The nodes' certificate is accepted as a client's too: clientCa holds both CAs.
    const bundle = join(work, "client-cas.pem");
    writeFileSync(bundle, Buffer.concat([readFileSync(pki.clientCa), readFileSync(pki.serverCert)]));
    const cluster = await start({ clientCa: bundle, peerCa: pki.serverCert });
    assert.match(cluster.node(0).url, /^https:/);
    const { input, output } = await putOutput(cluster);
    const res = await get(`${cluster.node(1).url}/sign/gpg/${sha256(input)}`);
    assert.equal(res.status, 200, res.body.toString());
    assert.ok(res.body.equals(output));
    assert.equal(res.headers["x-sha1-digest"], sha1(output));
    assert.equal(res.headers["x-sha256-digest"], createHash("sha256").update(output).digest("hex"));
  });

  test("an owner whose certificate peerCa does not trust is not fetched from: a plain 404", async () => {
    const lines: Record<string, unknown>[] = [];
    const logTo = jsonLogSink(lines);
    const cluster = await start({ peerCa: pki.otherCert }, logTo);
    const { input } = await putOutput(cluster);
    const res = await get(`${cluster.node(1).url}/sign/gpg/${sha256(input)}`);
    assert.equal(res.status, 404, res.body.toString());
    assert.equal(res.headers["x-pending"], undefined);
    const unreachable = lines.find((l) => l.event === "owner_unreachable");
    assert.match(String(unreachable?.err), /self[- ]signed|certificate/i);
  });
});
