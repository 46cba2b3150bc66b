import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import * as openpgp from "openpgp";
import { ClientError } from "../../src/client/errors.js";
import { SigningClient } from "../../src/client/signing-client.js";
import { startFakeNode } from "../helpers/fake-node.js";

const dir = mkdtempSync(join(tmpdir(), "signtool-robust-"));
// Scripted nodes serve no key: the client checks signatures with this one.
const { publicKey } = await openpgp.generateKey({
  type: "ecc",
  curve: "ed25519Legacy",
  userIDs: [{ email: "robust@test.invalid" }],
  format: "armored",
});
const trustedKeys = new Map([["gpg", { text: publicKey, from: "the test" }]]);
after(() => rmSync(dir, { recursive: true, force: true }));
const file = join(dir, "a.bin");
writeFileSync(file, "data to sign");
writeFileSync(join(dir, "token"), "v1.k.e30.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");

/** A node that follows a script: what it answers to each method. */
async function scriptedNode(answer: (req: IncomingMessage, res: ServerResponse) => void) {
  const hits = { GET: 0, POST: 0, token: 0 };
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      if (req.url === "/token") hits.token++;
      else hits[req.method as "GET" | "POST"]++;
      answer(req, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, hits, close: () => new Promise<void>((r) => server.close(() => r())) };
}

const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
  res.writeHead(status, { "Content-Type": "application/json", ...headers }).end(JSON.stringify(body));
};

test("a signature that keeps getting lost after upload: paced re-uploads, then GAVE_UP within the budget", async () => {
  const node = await scriptedNode((req, res) => {
    if (req.method === "POST") json(res, 202, { status: "queued" }, { "X-Nonce": `1.${"A".repeat(22)}` });
    else json(res, 404, { error: { code: "NOT_FOUND", message: "no", retryable: false } });
  });
  try {
    const client = new SigningClient({
      nodes: [node.url],
      tokenFile: join(dir, "token"),
      nonceFile: join(dir, "n1"),
      maxTimeMs: 3000,
      trustedKeys,
    });
    const started = Date.now();
    await assert.rejects(
      client.sign(file, "gpg"),
      (e: Error) => e instanceof ClientError && e.code === "GAVE_UP",
    );
    assert.ok(Date.now() - started < 6000);
    assert.ok(node.hits.POST <= 11, `re-uploads are bounded: ${node.hits.POST}`);
  } finally {
    await node.close();
  }
});

test("tokens that stay rejected after refetching: TOKEN_REJECTED after two refreshes, not a loop", async () => {
  const node = await scriptedNode((req, res) => {
    if (req.url === "/token") {
      res
        .writeHead(200, { "Content-Type": "text/plain" })
        .end("v1.k.e30.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB");
    } else if (req.method === "GET")
      json(res, 404, { error: { code: "NOT_FOUND", message: "no", retryable: false } });
    else json(res, 401, { error: { code: "TOKEN_EXPIRED", message: "expired", retryable: false } });
  });
  try {
    const client = new SigningClient({
      nodes: [node.url],
      tokenFile: join(dir, "token2"),
      nonceFile: join(dir, "n2"),
      maxTimeMs: 20_000,
      issuer: { user: "u", password: "p", slaveIp: "127.0.0.1", durationSeconds: 60 },
      trustedKeys,
    });
    await assert.rejects(
      client.sign(file, "gpg"),
      (e: Error) => e instanceof ClientError && e.code === "TOKEN_REJECTED",
    );
    assert.ok(node.hits.token <= 3, `token fetches: ${node.hits.token}`);
  } finally {
    await node.close();
  }
});

test("failed upload attempts do not leak file descriptors", async () => {
  const hangup = await startFakeNode("hangup");
  try {
    const fds = () => readdirSync("/proc/self/fd").length;
    const client = new SigningClient({
      nodes: [hangup.url],
      tokenFile: join(dir, "token"),
      nonceFile: join(dir, "n3"),
      maxTimeMs: 1500,
      trustedKeys,
    });
    await assert.rejects(client.sign(file, "gpg"));
    const before = fds();
    for (let i = 0; i < 3; i++) await assert.rejects(client.sign(file, "gpg"));
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(fds() <= before + 2, `descriptors ${before} → ${fds()}`);
  } finally {
    await hangup.close();
  }
});
