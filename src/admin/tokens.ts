import { MAX_TOKEN_SECONDS } from "../config/schema.js";
import { globLiteral, idOfKey, scanKeys } from "../store/scan.js";
import { TokenRecords } from "../store/token-records.js";
import type { TokenClaims } from "../tokens/codec.js";
import { tokenHash } from "../tokens/service.js";
import { duration, iso, section, table } from "./output.js";
import { AdminError, durably, type Store, usageError } from "./target.js";

/** What `tokens revoke` writes, like TokenRecords.revoke (src/store/token-records.ts). */
export const REVOKE_REASON = "revoked by signing-admin";
// Longer than any token lives: a marker that expired first would let the token heal.
const DEFAULT_REVOKE_MS = (MAX_TOKEN_SECONDS + 86400) * 1000;

const ID_RE = /^[A-Za-z0-9_-]{22}$/;
const HASH_RE = /^[0-9a-f]{16}$/;

/** What the operator typed: a whole token, a raw id or the 16-hex hash from logs and `tokens list`. */
export type TokenRef =
  | { kind: "token"; id: string; claims: Partial<TokenClaims> }
  | { kind: "id"; id: string }
  | { kind: "hash"; hash: string };

/**
 * Reads the payload of a token without its secret: the id is in the base64url JSON third part.
 * The MAC is not checked: revoking a forged token's id only hurts the forger.
 */
export function parseTokenRef(input: string, allowHash: boolean): TokenRef {
  const s = input.trim();
  if (s.startsWith("v1.")) {
    const parts = s.split(".");
    if (parts.length !== 4) throw usageError("not a token: expected v1.<kid>.<payload>.<mac>");
    let claims: Partial<TokenClaims>;
    try {
      claims = JSON.parse(Buffer.from(parts[2] ?? "", "base64url").toString("utf8")) as Partial<TokenClaims>;
    } catch {
      throw usageError("not a token: its payload is not base64url JSON");
    }
    if (typeof claims?.id !== "string" || !ID_RE.test(claims.id))
      throw usageError("not a token: its payload has no valid id");
    return { kind: "token", id: claims.id, claims };
  }
  if (ID_RE.test(s)) return { kind: "id", id: s };
  if (allowHash && HASH_RE.test(s)) return { kind: "hash", hash: s };
  throw usageError(
    `expected a token (v1.…), a token id (22 base64url characters)${allowHash ? " or an id hash (16 hex digits)" : ""}`,
  );
}

/** Finds the id whose hash is `hash` among token records, revocation markers and nonce chains. */
async function idForHash({ client, keys }: Store, hash: string): Promise<string | undefined> {
  const p = globLiteral(keys.prefix);
  for (const kind of ["token", "revoked", "nonce"]) {
    for (const key of await scanKeys(client, `${p}${kind}:*`)) {
      const id = idOfKey(key);
      if (tokenHash(id) === hash) return id;
    }
  }
  return undefined;
}

async function resolveId(store: Store, ref: TokenRef): Promise<string> {
  if (ref.kind !== "hash") return ref.id;
  const id = await idForHash(store, ref.hash);
  if (!id) throw new AdminError(`no token with hash ${ref.hash} in Redis (expired, never issued, or lost)`);
  return id;
}

interface StoredRecord {
  claims?: Partial<TokenClaims>;
  node?: string;
  healed?: boolean;
}

function parseRecord(value: string | null): StoredRecord | undefined {
  if (value === null) return undefined;
  try {
    const r = JSON.parse(value) as StoredRecord;
    return typeof r === "object" && r !== null ? r : {};
  } catch {
    return {};
  }
}

export interface TokenRow {
  hash: string;
  id?: string;
  issuer: string | null;
  ip: string | null;
  issuedAt: string | null;
  expiresAt: string | null;
  epoch: string | null;
  node: string | null;
  healed: boolean;
  formats: string[] | null;
  ttlSeconds: number | null;
}

function row(id: string, rec: StoredRecord | undefined, pttl: number, showIds: boolean): TokenRow {
  const c = rec?.claims ?? {};
  return {
    hash: tokenHash(id),
    ...(showIds ? { id } : {}),
    issuer: c.sub ?? null,
    ip: c.ip ?? null,
    issuedAt: typeof c.iat === "number" ? iso(c.iat * 1000) : null,
    expiresAt: typeof c.exp === "number" ? iso(c.exp * 1000) : null,
    epoch: c.ep ?? null,
    node: rec?.node ?? null,
    healed: rec?.healed === true,
    formats: c.fmt ?? null,
    ttlSeconds: pttl >= 0 ? Math.round(pttl / 1000) : null,
  };
}

export interface TokenList {
  total: number;
  shown: number;
  tokens: TokenRow[];
}

/** Every live token record (SCAN, pipelined reads), newest first, at most `limit` (0: all). */
export async function listTokens(
  { client, keys }: Store,
  opts: { limit: number; showIds: boolean },
): Promise<TokenList> {
  const found = await scanKeys(client, `${globLiteral(keys.prefix)}token:*`);
  const rows: (TokenRow & { iat: number })[] = [];
  for (let i = 0; i < found.length; i += 500) {
    const chunk = found.slice(i, i + 500);
    const pipe = client.pipeline();
    for (const key of chunk) pipe.get(key).pttl(key);
    const replies = (await pipe.exec()) ?? [];
    chunk.forEach((key, j) => {
      const [e1, value] = replies[2 * j] ?? [];
      const [e2, pttl] = replies[2 * j + 1] ?? [];
      if (e1 || e2 || value === null || value === undefined) return; // expired since the SCAN
      const rec = parseRecord(value as string);
      rows.push({ ...row(idOfKey(key), rec, Number(pttl), opts.showIds), iat: rec?.claims?.iat ?? 0 });
    });
  }
  rows.sort((a, b) => b.iat - a.iat);
  const shown = (opts.limit > 0 ? rows.slice(0, opts.limit) : rows).map(({ iat: _, ...r }) => r);
  return { total: rows.length, shown: shown.length, tokens: shown };
}

export function renderTokenList(list: TokenList, showIds: boolean): string {
  if (!list.total) return "no live tokens in Redis\n";
  const headers = [
    "HASH",
    ...(showIds ? ["ID"] : []),
    "ISSUER",
    "IP",
    "ISSUED",
    "EXPIRES",
    "NODE",
    "HEALED",
    "TTL",
  ];
  const rows = list.tokens.map((t) => [
    t.hash,
    ...(showIds ? [t.id ?? "-"] : []),
    t.issuer ?? "-",
    t.ip ?? "-",
    t.issuedAt ?? "-",
    t.expiresAt ?? "-",
    t.node ?? "-",
    t.healed ? "yes" : "no",
    t.ttlSeconds === null ? "-" : duration(t.ttlSeconds),
  ]);
  const more =
    list.total > list.shown
      ? `\n${list.shown} of ${list.total} shown (newest first; --limit 0 shows all)`
      : "";
  return `${table(headers, rows)}\n${list.total} live token${list.total === 1 ? "" : "s"}${more}\n`;
}

export interface TokenDetail {
  hash: string;
  id?: string;
  record: TokenRow | null;
  revoked: { reason: string; expiresAt: string | null } | null;
  nonce: { counter: number; expiresAt: string | null } | null;
}

const expiryOf = (pttl: number) => (pttl > 0 ? iso(Date.now() + pttl) : null);

/** One token's record, revocation marker and nonce chain (the counter only, never the MAC). */
export async function showToken(store: Store, input: string, showIds: boolean): Promise<TokenDetail> {
  const id = await resolveId(store, parseTokenRef(input, true));
  const { client, keys } = store;
  const pipe = client.pipeline();
  pipe.get(keys.token(id)).pttl(keys.token(id));
  pipe.get(keys.revoked(id)).pttl(keys.revoked(id));
  pipe.hget(keys.nonce(id), "n").pttl(keys.nonce(id));
  const r = ((await pipe.exec()) ?? []).map(([err, v]) => {
    if (err) throw err;
    return v;
  });
  const [tokenValue, tokenTtl, reason, revokedTtl, counter, nonceTtl] = r as [
    string | null,
    number,
    string | null,
    number,
    string | null,
    number,
  ];
  const detail: TokenDetail = {
    hash: tokenHash(id),
    ...(showIds ? { id } : {}),
    record: tokenValue === null ? null : row(id, parseRecord(tokenValue), tokenTtl, showIds),
    revoked: reason === null ? null : { reason, expiresAt: expiryOf(revokedTtl) },
    nonce: counter === null ? null : { counter: Number(counter), expiresAt: expiryOf(nonceTtl) },
  };
  if (!detail.record && !detail.revoked && !detail.nonce)
    throw new AdminError(`token ${detail.hash} is not in Redis (expired, never issued, or lost with Redis)`);
  return detail;
}

export function renderTokenDetail(d: TokenDetail): string {
  const fields: [string, string][] = [["hash", d.hash]];
  if (d.id) fields.push(["id", d.id]);
  const t = d.record;
  if (t) {
    fields.push(
      ["issuer", t.issuer ?? "-"],
      ["bound ip", t.ip ?? "-"],
      ["issued", t.issuedAt ?? "-"],
      ["expires", `${t.expiresAt ?? "-"}${t.ttlSeconds === null ? "" : ` (in ${duration(t.ttlSeconds)})`}`],
      ["epoch", t.epoch ?? "-"],
      ["issuing node", t.node ?? "-"],
      ["healed", t.healed ? "yes (re-inserted by a node after a data loss)" : "no"],
      ["formats", t.formats?.join(", ") ?? "all"],
    );
  } else fields.push(["record", "none (revoked, or lost with Redis and not yet healed)"]);
  fields.push([
    "revoked",
    d.revoked ? `yes: ${d.revoked.reason} (marker until ${d.revoked.expiresAt ?? "-"})` : "no",
  ]);
  fields.push([
    "nonce chain",
    d.nonce ? `counter ${d.nonce.counter} (until ${d.nonce.expiresAt ?? "-"})` : "none (no upload yet)",
  ]);
  return `${section(`TOKEN ${d.hash}`, fields)}\n`;
}

export interface RevokeResult {
  hash: string;
  id?: string;
  markerKey: string;
  reason: string;
  expiresAt: string;
  expirySource: "record" | "token" | "default";
  alreadyExpired: boolean;
  /** Whether a replica confirmed the marker (answered only once one did), or there are none. */
  durability: "replicated" | "no_replicas" | "not_needed";
}

/**
 * Revokes as the nodes do (TokenRecords.revoke): a marker `<prefix>revoked:{id}` until the
 * token's expiry (from the stored record, else the token's payload, else 31 days), confirmed by a
 * replica before it is reported done. The record stays: a missing record heals.
 */
export async function revokeToken(store: Store, input: string, showIds: boolean): Promise<RevokeResult> {
  const ref = parseTokenRef(input, true);
  const id = await resolveId(store, ref);
  const { client, keys } = store;
  const rec = parseRecord(await client.get(keys.token(id)));
  const now = Date.now();
  let at: number;
  let source: RevokeResult["expirySource"];
  if (typeof rec?.claims?.exp === "number") {
    at = rec.claims.exp * 1000;
    source = "record";
  } else if (ref.kind === "token" && typeof ref.claims.exp === "number") {
    at = ref.claims.exp * 1000;
    source = "token";
  } else {
    at = now + DEFAULT_REVOKE_MS;
    source = "default";
  }
  const alreadyExpired = at <= now;
  let durability: RevokeResult["durability"] = "not_needed";
  if (!alreadyExpired) {
    await new TokenRecords(client, keys).revoke(id, at, REVOKE_REASON);
    durability = await durably(client, "revoke");
  }
  const hash = tokenHash(id);
  return {
    hash,
    ...(showIds ? { id } : {}),
    markerKey: keys.revoked(showIds ? id : "<id>"),
    reason: REVOKE_REASON,
    expiresAt: iso(at),
    expirySource: source,
    alreadyExpired,
    durability,
  };
}

export function renderRevoke(r: RevokeResult): string {
  const src = {
    record: "from its Redis record",
    token: "from the token's payload",
    default: "expiry unknown: 31 days, longer than any token lives",
  }[r.expirySource];
  const lines = r.alreadyExpired
    ? [`token ${r.hash} already expired at ${r.expiresAt}: no revocation marker needed`]
    : [
        `revoked token ${r.hash}`,
        `  wrote ${r.markerKey} = "${r.reason}" until ${r.expiresAt} (in ${duration((Date.parse(r.expiresAt) - Date.now()) / 1000)}; ${src})`,
      ];
  if (r.durability !== "not_needed")
    lines.push(
      `  ${r.durability === "replicated" ? "a replica confirmed it" : "the primary has no replicas: written to the primary only"}`,
    );
  return `${lines.join("\n")}\n`;
}
