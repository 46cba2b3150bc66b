import assert from "node:assert/strict";
import { randomBytes, scryptSync } from "node:crypto";
import { describe, test } from "node:test";
import { normalizeIp } from "../../src/net/address.js";
import {
  encodeToken,
  newTokenId,
  type TokenClaims,
  verifyMac,
  verifyTokenLocally,
} from "../../src/tokens/codec.js";
import {
  findIssuer,
  hashPassword,
  PasswordHashError,
  parsePasswordHash,
  verifyPassword,
} from "../../src/tokens/credentials.js";
import { decodeNonce, encodeNonce, NONCE_SHAPE, nonceRandom } from "../../src/tokens/nonce.js";
import { decideOrphan, type Epoch } from "../../src/tokens/orphans.js";

const secretA = { kid: "a", secret: randomBytes(32) };
const secretB = { kid: "b", secret: randomBytes(32) };
const secrets = new Map([
  [secretA.kid, secretA.secret],
  [secretB.kid, secretB.secret],
]);
const NOW = 1_800_000_000;

function claims(over: Partial<TokenClaims> = {}): TokenClaims {
  return { id: newTokenId(), ip: "10.0.0.5", iat: NOW - 10, exp: NOW + 600, ep: "e1", sub: "bm", ...over };
}

describe("token codec", () => {
  test("round trip, under any configured secret (rotation)", () => {
    const c = claims({ fmt: ["gpg"] });
    for (const key of [secretA, secretB]) {
      const r = verifyTokenLocally(encodeToken(c, key), secrets, "10.0.0.5", NOW);
      assert.ok(r.ok);
      assert.deepEqual(r.claims, c);
      assert.equal(r.kid, key.kid);
    }
  });

  test("a retired secret's tokens no longer verify", () => {
    const token = encodeToken(claims(), secretB);
    assert.deepEqual(verifyMac(token, new Map([[secretA.kid, secretA.secret]])), {
      ok: false,
      result: "bad_signature",
    });
  });

  test("every local rejection has its own result", () => {
    const token = encodeToken(claims(), secretA);
    const check = (t: string, ip = "10.0.0.5", now = NOW) => {
      const r = verifyTokenLocally(t, secrets, ip, now);
      return r.ok ? "valid" : r.result;
    };
    assert.equal(check(token), "valid");
    assert.equal(
      check(token, normalizeIp("::FFFF:10.0.0.5")),
      "valid",
      "the HTTP edge canonicalises the peer",
    );
    assert.equal(check(token, "10.0.0.6"), "ip_mismatch");
    assert.equal(check(token, "10.0.0.5", NOW + 600), "expired");
    assert.equal(check(""), "malformed");
    assert.equal(check("v1.a.b"), "malformed");
    assert.equal(check(`${token}x`), "malformed");
    assert.equal(check(token.replace(/^v1/, "v2")), "malformed");
    const [v, kid, payload, mac] = token.split(".") as [string, string, string, string];
    const flipped = `${payload.slice(0, -2)}${payload.at(-2) === "A" ? "B" : "A"}${payload.at(-1)}`;
    assert.equal(check(`${v}.${kid}.${flipped}.${mac}`), "bad_signature");
    assert.equal(check(`${v}.zz.${payload}.${mac}`), "bad_signature");
    // One spelling: the MAC's last character carries 2 unused bits; setting them is another
    // spelling of the same token, refused, as is padding. Whitespace around it is not part of it.
    const last = mac.at(-1) as string;
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const respelled = alphabet[alphabet.indexOf(last) | 1] as string;
    assert.equal(
      Buffer.from(mac.slice(0, -1) + respelled, "base64url").equals(Buffer.from(mac, "base64url")),
      true,
    );
    assert.equal(check(`${v}.${kid}.${payload}.${mac.slice(0, -1)}${respelled}`), "malformed");
    assert.equal(check(`${v}.${kid}.${payload}=.${mac}`), "malformed");
    assert.equal(check(`  ${token}\n`), "valid");
    // A MAC-valid payload that is not a claims object is still malformed.
    const junk = encodeToken({ nope: 1 } as unknown as TokenClaims, secretA);
    assert.equal(check(junk), "malformed");
  });
});

describe("nonces", () => {
  const step = (counter: number) => ({ counter, lineage: nonceRandom(), random: nonceRandom() });

  test("the empty nonce starts every chain; steps round trip", () => {
    const id = newTokenId();
    assert.deepEqual(decodeNonce(id, "", secretA.secret), { counter: 0, lineage: "", random: "" });
    for (const n of [1, 2, 99, 123456789]) {
      const s = step(n);
      const text = encodeNonce(id, s, secretA.secret);
      assert.match(text, NONCE_SHAPE);
      assert.deepEqual(decodeNonce(id, text, secretA.secret), s);
    }
  });

  test("every step has fresh randomness: the same counter twice gives two nonces", () => {
    const id = newTokenId();
    const lineage = nonceRandom();
    const a = encodeNonce(id, { counter: 5, lineage, random: nonceRandom() }, secretA.secret);
    const b = encodeNonce(id, { counter: 5, lineage, random: nonceRandom() }, secretA.secret);
    assert.notEqual(a, b);
  });

  test("a nonce of another token, another secret, or with any part changed is refused", () => {
    const id = newTokenId();
    const n = encodeNonce(id, step(3), secretA.secret);
    assert.equal(decodeNonce(newTokenId(), n, secretA.secret), undefined);
    assert.equal(decodeNonce(id, n, secretB.secret), undefined);
    assert.equal(decodeNonce(id, n.replace(/^3/, "4"), secretA.secret), undefined);
    const [c, l, r, m] = n.split(".") as [string, string, string, string];
    assert.equal(decodeNonce(id, [c, nonceRandom(), r, m].join("."), secretA.secret), undefined);
    assert.equal(decodeNonce(id, [c, l, nonceRandom(), m].join("."), secretA.secret), undefined);
    for (const bad of ["0", "01.x", "abc", "1.", `1.${"A".repeat(22)}`, `${c}.${m}`])
      assert.equal(decodeNonce(id, bad, secretA.secret), undefined);
  });
});

describe("the orphan decision table (DESIGN.md §4)", () => {
  const policy = { recoveryGraceMs: 10_000, orphanPolicy: "heal" as const };
  const epoch = (over: Partial<Epoch>): Epoch => ({
    id: "e2",
    createdAt: NOW * 1000,
    state: "fresh",
    minIat: 0,
    ...over,
  });
  const c = claims({ ep: "e1" });

  test("missing in its own epoch, not revoked: a write the store lost, healed (never a 401 for our loss)", () => {
    for (const state of ["fresh", "restored", "invalidated"] as const)
      assert.deepEqual(decideOrphan(claims({ ep: "e2" }), epoch({ state }), NOW * 1000, policy), {
        action: "heal",
        why: "lost_in_epoch",
      });
  });
  test("issued before minIat: invalidated, also in the current epoch (an operator's invalidate)", () => {
    const own = claims({ ep: "e2" });
    const minIat = (own.iat + 1) * 1000;
    assert.deepEqual(decideOrphan(own, epoch({ state: "invalidated", minIat }), NOW * 1000, policy), {
      action: "invalidated",
    });
  });
  test("older epoch, restored: heal", () => {
    assert.deepEqual(decideOrphan(c, epoch({ state: "restored" }), NOW * 1000, policy), {
      action: "heal",
      why: "restored_epoch",
    });
  });
  test("older epoch, invalidated or issued before minIat: invalidated", () => {
    assert.deepEqual(decideOrphan(c, epoch({ state: "invalidated" }), NOW * 1000, policy), {
      action: "invalidated",
    });
    const minIat = (c.iat + 1) * 1000;
    assert.deepEqual(decideOrphan(c, epoch({ state: "restored", minIat }), NOW * 1000, policy), {
      action: "invalidated",
    });
  });
  test("older epoch, fresh: recovering inside the grace period, then the node's policy", () => {
    assert.deepEqual(decideOrphan(c, epoch({}), NOW * 1000 + 4000, policy), {
      action: "recovering",
      retryAfterMs: 6000,
    });
    assert.deepEqual(decideOrphan(c, epoch({}), NOW * 1000 + 10_000, policy), {
      action: "heal",
      why: "orphan_policy",
    });
    assert.deepEqual(decideOrphan(c, epoch({}), NOW * 1000 + 10_000, { ...policy, orphanPolicy: "reject" }), {
      action: "invalidated",
    });
  });
});

describe("issuer credentials", () => {
  test("scrypt hashes verify the right password only", async () => {
    const hash = await hashPassword("correct horse");
    assert.match(hash, /^scrypt\$16384\$8\$1\$/);
    assert.equal(await verifyPassword("correct horse", hash), true);
    assert.equal(await verifyPassword("correct horsE", hash), false);
    assert.notEqual(await hashPassword("correct horse"), hash, "salted");
    const creds = [{ user: "bm", passwordHash: hash }];
    assert.equal((await findIssuer("bm", "correct horse", creds)) !== undefined, true);
    assert.equal((await findIssuer("someone", "correct horse", creds)) !== undefined, false);
    assert.equal(await verifyPassword("x", "scrypt$broken"), false);
    // During a password rotation an issuer has two entries: either password works.
    const rotating = [...creds, { user: "bm", passwordHash: await hashPassword("new horse") }];
    assert.equal((await findIssuer("bm", "new horse", rotating)) !== undefined, true);
    assert.equal((await findIssuer("bm", "correct horse", rotating)) !== undefined, true);
    assert.equal((await findIssuer("bm", "no horse", rotating)) !== undefined, false);
  });
});

describe("stored password hashes", () => {
  const SALT = Buffer.alloc(16, 1).toString("base64");
  const HASH = Buffer.alloc(32, 2).toString("base64");
  const stored = (N: unknown, r: unknown, p: unknown, salt = SALT, hash = HASH) =>
    `scrypt$${N}$${r}$${p}$${salt}$${hash}`;
  const problems = (text: string): string[] => {
    try {
      parsePasswordHash(text);
    } catch (e) {
      assert.ok(e instanceof PasswordHashError, String(e));
      assert.match(e.message, /scrypt\$N\$r\$p\$<salt base64>\$<hash base64>/, "names the format");
      return e.problems;
    }
    assert.fail(`${text} was accepted`);
  };

  test("what hashPassword writes parses back to its parameters, salt and hash", async () => {
    const h = parsePasswordHash(await hashPassword("pw"));
    assert.deepEqual([h.N, h.r, h.p, h.salt.length, h.hash.length], [16384, 8, 1, 16, 32]);
  });

  test("every problem of a hash is named, never its salt or hash", () => {
    assert.deepEqual(problems("plain"), ['not 6 fields separated by "$", the first "scrypt"']);
    assert.deepEqual(problems(`bcrypt$1$1$1$${SALT}$${HASH}`), [
      'not 6 fields separated by "$", the first "scrypt"',
    ]);
    assert.deepEqual(problems(stored(3, 8, 1)), ["N must be a power of two ≥ 2, not 3"]);
    assert.deepEqual(problems(stored(1, 8, 1)), ["N must be a power of two ≥ 2, not 1"]);
    assert.deepEqual(problems(stored(0, "x", "1.5", "", "a-b_")), [
      "N must be a positive integer",
      "r must be a positive integer",
      "p must be a positive integer",
      "salt is empty",
      "hash is not canonical base64",
    ]);
    assert.deepEqual(problems(stored(16384, 8, 1, "AAA", `${HASH}\n`)), [
      "salt is not canonical base64",
      "hash is not canonical base64",
    ]);
    assert.deepEqual(problems(stored("016384", "+8", "1e0")), [
      "N must be a positive integer",
      "r must be a positive integer",
      "p must be a positive integer",
    ]);
    assert.deepEqual(problems(stored(2 ** 20, 8, 1)), [
      "N=1048576, r=8, p=1 need 1025 MiB (128·r·(N+p+2) bytes), above scrypt's 256 MiB here",
    ]);
    assert.deepEqual(problems(stored(65536, 1, 1)), ["N must be below 2^(16·r) = 65536 for r=1"]);
    const secretish = stored(3, 8, 1, "c2FsdHNhbHQ=", "aGFzaGhhc2g=");
    assert.ok(!problems(secretish).join(" ").includes("c2FsdHNhbHQ"));
  });

  test("the parser accepts exactly what node:crypto's scrypt accepts, limits included", () => {
    // At and around each of scrypt's limits (refusals cost nothing; accepted ones are kept cheap).
    const cases: [number, number, number][] = [
      [2, 1, 1],
      [32768, 1, 1],
      [65536, 1, 1],
      [16384, 8, 1],
      [1024, 2, 16],
      [2 ** 19, 4, 1],
      [2 ** 20, 2, 1],
      [2 ** 21, 1, 1],
      [2, 1, 2 ** 21 - 3],
      [2 ** 18, 8, 1],
      [3, 8, 1],
    ];
    for (const [N, r, p] of cases) {
      let scryptAccepts = true;
      try {
        scryptSync("pw", "salt", 8, { N, r, p, maxmem: 256 * 1024 * 1024 });
      } catch (e) {
        assert.equal((e as NodeJS.ErrnoException).code, "ERR_CRYPTO_INVALID_SCRYPT_PARAMS");
        scryptAccepts = false;
      }
      let parserAccepts = true;
      try {
        parsePasswordHash(stored(N, r, p));
      } catch {
        parserAccepts = false;
      }
      assert.equal(parserAccepts, scryptAccepts, `N=${N} r=${r} p=${p}`);
    }
  });

  test("verifyPassword is false, never an exception, for a hash scrypt cannot use", async () => {
    for (const bad of [stored(3, 8, 1), stored(2 ** 21, 8, 1), stored(16384, 8, 1, ""), "scrypt$broken"])
      assert.equal(await verifyPassword("pw", bad), false, bad);
  });
});
