import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import { after, before, test } from "node:test";
import request from "supertest";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { getToken, upload } from "../helpers/api.js";

const lines: Record<string, unknown>[] = [];
let raw = "";
const sink = new Writable({
  write(chunk: Buffer, _enc, done) {
    raw += chunk.toString();
    for (const l of chunk.toString().split("\n").filter(Boolean)) lines.push(JSON.parse(l));
    done();
  },
});
let cluster: TestCluster;
before(async () => {
  cluster = await TestCluster.start({ nodes: 1, logTo: sink });
});
after(() => cluster?.stop());

test("structured JSON logs: a line per request and per job, never a token, password or key", async () => {
  const url = cluster.node(0).url;
  const token = await getToken(url, cluster.basicAuth);
  const up = await upload(url, { token, nonce: "", data: randomBytes(300), wait: 30 });
  assert.equal(up.status, 202);
  await request(url)
    .post("/token")
    .set("Authorization", cluster.basicAuth)
    .type("form")
    .send({ expire: token });
  await new Promise((r) => setTimeout(r, 100));

  const requests = lines.filter((l) => l.event === "request");
  assert.ok(
    requests.some(
      (l) => l.route === "POST /sign/:format" && l.status === 202 && typeof l.durationMs === "number",
    ),
  );
  const signed = lines.find((l) => l.event === "signed");
  assert.ok(signed, raw);
  for (const field of ["format", "sha256", "bytes", "durationMs", "tokenHash", "node"])
    assert.ok(field in signed, field);
  assert.equal(signed.sha256, up.body.sha256);
  assert.ok(lines.some((l) => l.event === "token_issued" && typeof l.tokenHash === "string"));
  assert.ok(lines.some((l) => l.event === "token_revoked"));

  // Nothing secret, anywhere: not the token, its id, the nonce, the password, the key.
  const id = JSON.parse(Buffer.from(token.split(".")[2] as string, "base64url").toString()).id as string;
  for (const secret of [
    token,
    id,
    up.headers["x-nonce"] as string,
    cluster.state.issuer.password,
    "PRIVATE KEY",
  ]) {
    assert.ok(!raw.includes(secret), `log leaks ${secret.slice(0, 12)}…`);
  }
});
