import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import * as openpgp from "openpgp";
import request from "supertest";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { getToken, upload } from "../helpers/api.js";

// Long enough for the cluster to start and sign once first, even on a loaded CI machine.
const EXPIRES_IN_S = 8;
let cluster: TestCluster;
let dir: string;
let expiresAt: number;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "key-expiry-"));
  const { privateKey } = await openpgp.generateKey({
    type: "ecc",
    curve: "curve25519Legacy",
    userIDs: [{ email: "expiring@signing.invalid" }],
    keyExpirationTime: EXPIRES_IN_S,
    format: "armored",
  });
  const keyFile = join(dir, "expiring.asc");
  writeFileSync(keyFile, privateKey, { mode: 0o600 });
  expiresAt =
    (await openpgp.readPrivateKey({ armoredKey: privateKey })).getCreationTime().getTime() +
    EXPIRES_IN_S * 1000;
  cluster = await TestCluster.start({ nodes: 1, overrides: { signing: { formats: { gpg: { keyFile } } } } });
});
after(async () => {
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test("a gpg key that expires while the node runs: KEY_EXPIRED for gpg, sshsig still signs, readiness degraded", async () => {
  const { url } = cluster.node(0);
  const before = await upload(url, {
    token: await getToken(url, cluster.basicAuth),
    nonce: "",
    data: randomBytes(64),
    wait: 5,
  });
  assert.equal(before.status, 202, before.text);
  assert.equal((await request(url).get("/readyz")).body.status, "ok");
  // Known from start-up, so SigningKeyExpiresSoon can warn weeks ahead; sshsig keys never expire.
  const metrics = (await request(url).get("/metrics")).text;
  const gauge = /^signing_key_expiry_timestamp_seconds\{format="gpg"\} (\d+)$/m.exec(metrics);
  assert.equal(Number(gauge?.[1]), Math.floor(expiresAt / 1000), metrics);
  assert.doesNotMatch(metrics, /signing_key_expiry_timestamp_seconds\{format="sshsig"\}/);

  await sleep(Math.max(0, expiresAt - Date.now()) + 200);
  const token = await getToken(url, cluster.basicAuth);
  const refused = await upload(url, { token, nonce: "", data: randomBytes(64), wait: 5 });
  assert.equal(refused.status, 500, refused.text);
  assert.equal(refused.body.error.code, "KEY_EXPIRED");
  assert.equal(refused.body.error.retryable, false);
  assert.match(refused.body.error.message, /expired at/);

  // Refused before the body was read, so the token's nonce chain did not move.
  const ssh = await upload(url, { format: "sshsig", token, nonce: "", data: randomBytes(64), wait: 5 });
  assert.equal(ssh.status, 202, ssh.text);

  const ready = await request(url).get("/readyz");
  assert.equal(ready.status, 200);
  assert.equal(ready.body.status, "degraded");
  assert.match(ready.body.checks.keys.detail, /gpg key expired at/);
});
