import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ProcessCluster } from "../../scripts/process-cluster.js";
import { SigningClient } from "../../src/client/signing-client.js";
import { getToken } from "../helpers/api.js";
import { sample } from "../helpers/metrics.js";
import { gpgVerify } from "../helpers/verify.js";

const MiB = 1024 * 1024;
const SIZE = 256 * MiB;

let cluster: ProcessCluster;
let dir: string;
before(async () => {
  cluster = await ProcessCluster.start({
    nodes: 1,
    env: { SIGNING__signing__formats__gpg__maxSize: String(2 * SIZE) },
  });
  dir = mkdtempSync(join(tmpdir(), "signing-upload-heap-"));
});
after(async () => {
  await cluster?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function majorGcs(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return sample(text, "nodejs_gc_duration_seconds_count", { kind: "major" }) ?? 0;
}

test("a node that sat idle takes a 256 MiB upload without collecting its whole heap every few dozen MiB", async () => {
  const url = cluster.urls[0] as string;
  const auth = `Basic ${Buffer.from(`${cluster.state.issuer.user}:${cluster.state.issuer.password}`).toString("base64")}`;
  writeFileSync(join(dir, "token"), await getToken(url, auth));
  const file = join(dir, "artifact.bin");
  const block = randomBytes(MiB);
  const data = Buffer.concat(Array.from({ length: SIZE / MiB }, () => block));
  writeFileSync(file, data);
  const client = new SigningClient({
    nodes: [url],
    tokenFile: join(dir, "token"),
    nonceFile: join(dir, "nonce"),
  });

  // Idle, V8 shrinks the heap and the old generation's limit; the upload's 64 KiB copies of
  // every chunk count against that limit until a scavenge frees them.
  await sleep(5000);
  const before = await majorGcs(url);
  const r = await client.sign(file, "gpg");
  const during = (await majorGcs(url)) - before;

  const v = gpgVerify(
    readFileSync(cluster.state.keys.gpg.publicKeyFile, "utf8"),
    data,
    readFileSync(r.output),
  );
  assert.ok(v.ok, v.output);
  // Without the node's heap setting this was 7–8 full collections (one per ~35 MiB).
  assert.ok(during <= 2, `${during} full garbage collections during one 256 MiB upload`);
});
