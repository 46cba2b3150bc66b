import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { TestCluster } from "../../scripts/in-process-cluster.js";
import { reseed } from "../../src/recovery/restore.js";
import { takeSnapshot } from "../../src/recovery/snapshot.js";
import { ensureEpoch } from "../../src/store/epoch.js";
import { StoreKeys } from "../../src/store/keys.js";
import { NONCE_SHAPE } from "../../src/tokens/nonce.js";
import { getToken, upload } from "../helpers/api.js";

/**
 * Issue 27 item 3: the nonce rules of DESIGN.md §4. (1) A nonce is accepted at most once, the
 * previous one once more for the same file; (2) every next nonce carries fresh randomness;
 * (3) after a chain was lost, the first MAC-valid nonce at or beyond the restored counter
 * re-seeds it and every other holder gets NONCE_MISMATCH.
 */
const GRACE_MS = 200;
const keys = new StoreKeys("signing:");
let cluster: TestCluster;
let redis: Redis;
let url: string;

before(async () => {
  cluster = await TestCluster.start({
    nodes: 1,
    overrides: { store: { recoveryGraceMs: GRACE_MS, orphanPolicy: "heal" } },
  });
  url = cluster.node(0).url;
  redis = new Redis(cluster.redis.url);
});
after(async () => {
  redis?.disconnect();
  await cluster?.stop();
});

const idOf = (token: string) =>
  (JSON.parse(Buffer.from(token.split(".")[2] as string, "base64url").toString()) as { id: string }).id;

/** Uploads a fresh file; the status and the next nonce the node handed out. */
async function sign(token: string, nonce: string, data = randomBytes(24)) {
  const res = await upload(url, { token, nonce, data });
  return {
    status: res.status,
    code: res.body?.error?.code as string | undefined,
    next: res.headers["x-nonce"] as string,
  };
}

/** A token that signed twice: `used` is spent, `current` is what its owner holds now. */
async function chainOfTwo() {
  const token = await getToken(url, cluster.basicAuth);
  const first = await sign(token, "");
  assert.equal(first.status, 202);
  const second = await sign(token, first.next);
  assert.equal(second.status, 202);
  return { token, used: first.next, current: second.next };
}

/** Redis loses everything, as a restart without persistence would; the grace period passes. */
async function loseTheStore(): Promise<void> {
  await redis.flushall();
  await ensureEpoch(redis, keys);
  await sleep(GRACE_MS + 50);
}

describe("rule 1: at most once", () => {
  test("a used nonce is refused; its retry with the same file is accepted once, answering the same next nonce", async () => {
    const token = await getToken(url, cluster.basicAuth);
    const first = await sign(token, "");
    const data = randomBytes(24);
    const a = await sign(token, first.next, data);
    assert.equal(a.status, 202);
    const retry = await sign(token, first.next, data);
    assert.deepEqual(retry, a, "the answer was lost: the same upload again gets the same answer");
    assert.equal((await sign(token, first.next, data)).code, "NONCE_MISMATCH", "but only once");
    assert.equal((await sign(token, first.next)).code, "NONCE_MISMATCH", "and never for another file");
    assert.equal((await sign(token, a.next)).status, 202, "the chain goes on");
  });
});

describe("rule 2: fresh randomness", () => {
  test("two tokens' chains, and one chain's steps, never repeat", async () => {
    const seen = new Set<string>();
    for (let t = 0; t < 3; t++) {
      const token = await getToken(url, cluster.basicAuth);
      let nonce = "";
      for (let i = 0; i < 3; i++) {
        const r = await sign(token, nonce);
        assert.equal(r.status, 202);
        assert.match(r.next, NONCE_SHAPE);
        const [counter, , random] = r.next.split(".");
        assert.equal(counter, String(i + 1));
        assert.ok(!seen.has(random as string), "a step's randomness is new");
        seen.add(random as string);
        nonce = r.next;
      }
    }
  });
});

describe("rule 3: after a loss, the first presenter re-seeds and every other holder is refused", () => {
  test("chain lost: a replayed used nonce first, then the owner's current nonce is refused", async () => {
    const { token, used, current } = await chainOfTwo();
    await loseTheStore();
    const replay = await sign(token, used);
    assert.equal(replay.status, 202, "the first MAC-valid nonce re-seeds the lost chain");
    assert.equal((await sign(token, current)).code, "NONCE_MISMATCH", "the owner sees the replay");
  });

  test("chain lost: the owner first, then a replayed used nonce is refused", async () => {
    const { token, used, current } = await chainOfTwo();
    await loseTheStore();
    const owner = await sign(token, current);
    assert.equal(owner.status, 202);
    assert.equal((await sign(token, used)).code, "NONCE_MISMATCH");
    assert.equal((await sign(token, owner.next)).status, 202, "the re-seeded chain goes on");
  });

  test("chain restored from an older snapshot: the same, whoever comes first", async () => {
    for (const ownerFirst of [true, false]) {
      const token = await getToken(url, cluster.basicAuth);
      const first = await sign(token, "");
      const epoch = await ensureEpoch(redis, keys);
      const snap = await takeSnapshot(redis, keys, epoch.id);
      const second = await sign(token, first.next);
      await redis.flushall();
      await ensureEpoch(redis, keys);
      await reseed(redis, keys, snap);
      // The snapshot's chain stands at first.next: a nonce its owner already spent.
      const [a, b] = ownerFirst ? [second.next, first.next] : [first.next, second.next];
      assert.equal((await sign(token, a)).status, 202, `ownerFirst=${ownerFirst}`);
      assert.equal((await sign(token, b)).code, "NONCE_MISMATCH", `ownerFirst=${ownerFirst}`);
    }
  });

  test("steps lost in a failover (an older chain, same lineage): the owner's nonce ahead re-seeds it", async () => {
    const token = await getToken(url, cluster.basicAuth);
    const first = await sign(token, "");
    const older = await redis.hgetall(keys.nonce(idOf(token)));
    const second = await sign(token, first.next);
    const third = await sign(token, second.next);
    // The promoted replica had only the first step.
    await redis.del(keys.nonce(idOf(token)));
    await redis.hset(keys.nonce(idOf(token)), older);
    assert.equal((await sign(token, third.next)).status, 202, "no build fails for our lost writes");
    assert.equal((await sign(token, second.next)).code, "NONCE_MISMATCH", "an older nonce is dead");
  });
});
