import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import * as openpgp from "openpgp";
import { authenticodeCertificate, checkAuthenticodeFile } from "../signing/verify-authenticode.js";
import { checkMinisignSignature, minisignVerifyingKey } from "../signing/verify-minisign.js";
import { checkSshSignature, sshVerifyingKey } from "../signing/verify-sshsig.js";
import { table } from "./output.js";
import { AdminError, type Target, usageError } from "./target.js";

const HTTP_TIMEOUT_MS = 3000;
/** How long a node may take to sign a probe (?wait=), and the request with it. */
const SIGN_WAIT_SECONDS = 10;
/** The probe token's lifetime: long enough for one node's probes, and no more. */
const PROBE_TOKEN_SECONDS = 120;

/** What a node says of one format's key (GET /formats). */
export interface NodeKey {
  node: string;
  format: string;
  backend?: string;
  algorithm?: string;
  fingerprint?: string;
  /** ISO time, or null for a key that never expires. */
  expiresAt?: string | null;
  /** Why the node could not be asked. */
  error?: string;
}

export interface KeyList {
  ok: boolean;
  keys: NodeKey[];
}

const reason = (err: unknown): string => {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  if (e?.name === "TimeoutError") return "no answer in time";
  return e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err);
};

function requireNodes(t: Target): string[] {
  if (t.nodes.length) return t.nodes;
  throw usageError("no nodes given: use --node URL or --cluster FILE");
}

interface FormatEntry {
  name: string;
  /** `embedded`: the output is the whole signed file, fetched by its input's digest. */
  kind?: string;
  backend?: string;
  algorithm?: string;
  fingerprint?: string;
  expiresAt?: string | null;
}

async function nodeFormats(node: string): Promise<FormatEntry[]> {
  const res = await fetch(`${node}/formats`, { signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
  if (res.status !== 200) throw new Error(`GET /formats answered ${res.status}`);
  const body = (await res.json()) as { formats?: FormatEntry[] };
  if (!Array.isArray(body.formats)) throw new Error("GET /formats did not answer a list of formats");
  return body.formats;
}

/** Every node's keys, one row per node and format; a node that does not answer is a row with its error. */
export async function listKeys(t: Target): Promise<KeyList> {
  const rows = await Promise.all(
    requireNodes(t).map(async (node): Promise<NodeKey[]> => {
      try {
        return (await nodeFormats(node)).map((f) => ({
          node,
          format: f.name,
          ...(f.backend ? { backend: f.backend } : {}),
          ...(f.algorithm ? { algorithm: f.algorithm } : {}),
          ...(f.fingerprint ? { fingerprint: f.fingerprint } : {}),
          expiresAt: f.expiresAt ?? null,
        }));
      } catch (err) {
        return [{ node, format: "-", error: reason(err) }];
      }
    }),
  );
  const keys = rows.flat();
  return { ok: keys.every((k) => !k.error), keys };
}

export function renderKeyList(l: KeyList): string {
  const rows = l.keys.map((k) =>
    k.error
      ? [k.node, k.format, "-", "-", "-", `unreachable: ${k.error}`]
      : [
          k.node,
          k.format,
          k.backend ?? "?",
          k.algorithm ?? "?",
          k.fingerprint ?? "?",
          k.expiresAt ?? "never",
        ],
  );
  return table(["NODE", "FORMAT", "BACKEND", "ALGORITHM", "FINGERPRINT", "EXPIRES"], rows);
}

/** Who signing-admin is to the nodes' POST /token: an issuer of token.credentials. */
export interface IssuerCredentials {
  user: string;
  password: string;
}

export const ISSUER_PASSWORD_ENV = "SIGNING_ADMIN_ISSUER_PASSWORD";

/**
 * The issuer `keys test` gets its token as: `--issuer` or the cluster file's issuer.user, with
 * the password from $SIGNING_ADMIN_ISSUER_PASSWORD or the cluster file's issuer.passwordFile
 * (npm start writes both); never from the command line.
 */
export function issuerCredentials(t: Target, user: string | undefined, env = process.env): IssuerCredentials {
  const name = user ?? t.issuer?.user;
  if (!name) throw usageError("keys test needs an issuer: --issuer USER, or issuer.user in the cluster file");
  const fromEnv = env[ISSUER_PASSWORD_ENV];
  if (fromEnv) return { user: name, password: fromEnv };
  const file = t.issuer?.passwordFile;
  if (!file)
    throw usageError(`keys test needs the issuer's password: $${ISSUER_PASSWORD_ENV} or issuer.passwordFile`);
  try {
    return { user: name, password: readFileSync(file, "utf8").trim() };
  } catch (err) {
    throw new AdminError(`cannot read issuer.passwordFile ${file}: ${(err as NodeJS.ErrnoException).code}`);
  }
}

/** One probe: signed by one node's key for one format over the real upload path, and checked. */
export interface ProbeResult {
  node: string;
  format: string;
  backend?: string;
  ok: boolean;
  /** `verified`, `signed, not checked (…)`, or why it failed. */
  detail: string;
  ms?: number;
}

export interface KeyTest {
  ok: boolean;
  probes: ProbeResult[];
}

/** The address this host connects to `node` from: what the node binds the probe token to. */
function sourceAddress(node: string): Promise<string> {
  const u = new URL(node);
  const port = Number(u.port || (u.protocol === "https:" ? 443 : 80));
  const host = u.hostname.replace(/^\[|\]$/g, "");
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, timeout: HTTP_TIMEOUT_MS });
    socket.once("connect", () => {
      resolve(socket.localAddress ?? "");
      socket.destroy();
    });
    socket.once("timeout", () => socket.destroy(new Error("no answer in time")));
    socket.once("error", reject);
  });
}

/** An error body's `CODE: message`, or the status alone. */
async function refusal(res: Response): Promise<string> {
  const text = await res.text();
  try {
    const e = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
    if (e?.code) return `${res.status} ${e.code}: ${e.message ?? ""}`.trim();
  } catch {
    // not JSON: the status says enough
  }
  return `${res.status}`;
}

async function probeToken(node: string, issuer: IssuerCredentials, clientIp: string): Promise<string> {
  const auth = Buffer.from(`${issuer.user}:${issuer.password}`).toString("base64");
  const res = await fetch(`${node}/token`, {
    method: "POST",
    headers: { authorization: `Basic ${auth}`, "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ slave_ip: clientIp, duration: String(PROBE_TOKEN_SECONDS) }).toString(),
    signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
  });
  if (res.status !== 200) throw new Error(`POST /token: ${await refusal(res)}`);
  return (await res.text()).trim();
}

/** A clearsigned probe: its text is the probe's, and its signature verifies with the served key. */
async function checkClearsignedProbe(keyText: string, probe: Buffer, signed: string) {
  const message = await openpgp.readCleartextMessage({ cleartextMessage: signed });
  if (message.getText().replace(/\r?\n$/, "") !== probe.toString("utf8").replace(/\r?\n$/, ""))
    return "the text it carries is not the probe";
  const { signatures } = await openpgp.verify({
    message,
    verificationKeys: await openpgp.readKey({ armoredKey: keyText }),
  });
  return firstVerified(signatures);
}

/** Why openpgp.js's first signature does not verify, or undefined when it does. */
async function firstVerified(signatures: { verified: Promise<unknown> }[]): Promise<string | undefined> {
  try {
    await signatures[0]?.verified;
  } catch (err) {
    return `it does not verify with the served key (${(err as Error).message})`;
  }
  return signatures.length ? undefined : "no signature in it";
}

/** Checks a signature over `probe` with the public key the node serves for `format`. */
async function checkSignature(format: string, keyText: string, probe: Buffer, output: string | Buffer) {
  if (format === "authenticode")
    return checkAuthenticodeFile(Buffer.from(output), authenticodeCertificate(keyText));
  const signature = output.toString();
  switch (format) {
    case "gpg": {
      const { signatures } = await openpgp.verify({
        message: await openpgp.createMessage({ binary: probe }),
        signature: await openpgp.readSignature({ armoredSignature: signature }),
        verificationKeys: await openpgp.readKey({ armoredKey: keyText }),
      });
      return firstVerified(signatures);
    }
    case "gpg-clearsign":
      return checkClearsignedProbe(keyText, probe, signature);
    case "minisign":
      return checkMinisignSignature(
        signature,
        minisignVerifyingKey(keyText),
        async (alg) => createHash(alg).update(probe),
        async () => probe,
      );
    case "sshsig":
      return checkSshSignature(
        signature,
        sshVerifyingKey(keyText),
        createHash("sha256").update(probe),
        async (alg) => createHash(alg).update(probe),
      );
    default:
      return null;
  }
}

/** A probe's state across one node's formats: the token and where its nonce chain is. */
interface Session {
  node: string;
  token?: string;
  nonce: string;
  issuer: IssuerCredentials;
  clientIp: string;
}

async function upload(s: Session, token: string, format: string, probe: Buffer, filename: string) {
  const form = new FormData();
  // The token first: the node checks it before reading the file.
  form.append("token", token);
  form.append("nonce", s.nonce);
  form.append("sha1", createHash("sha1").update(probe).digest("hex"));
  form.append("filename", filename);
  form.append("filedata", new Blob([new Uint8Array(probe)]), filename);
  const res = await fetch(`${s.node}/sign/${encodeURIComponent(format)}?wait=${SIGN_WAIT_SECONDS}`, {
    method: "POST",
    body: form,
    headers: { Accept: "application/octet-stream, application/json" }, // an embedded format's file in the answer
    signal: AbortSignal.timeout((SIGN_WAIT_SECONDS + 5) * 1000),
  });
  const next = res.headers.get("x-nonce");
  if (next) s.nonce = next;
  else s.token = undefined; // the chain is lost: the next probe takes a new token
  return res;
}

/** An upload answered without its signature: what polling it says (SIGNING_FAILED, say), or the wait ran out. */
async function whyUnsigned(node: string, format: string, sha256: string | undefined): Promise<string> {
  const late = `no signature within ${SIGN_WAIT_SECONDS} s`;
  if (!sha256) return late;
  try {
    const res = await fetch(`${node}/sign/${encodeURIComponent(format)}/${sha256}`, {
      signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
    });
    return res.status === 200 || res.status === 404 ? late : `${late}: ${await refusal(res)}`;
  } catch {
    return late;
  }
}

/** A 200 carrying a signed file (a probe: small), checked against its X-SHA256-Digest; a string says why not. */
async function signedFile(res: Response): Promise<Buffer | string> {
  const file = Buffer.from(await res.arrayBuffer());
  if (res.headers.get("x-sha256-digest") !== createHash("sha256").update(file).digest("hex"))
    return "the signed file does not match its X-SHA256-Digest";
  return file;
}

/**
 * An embedded format's output: the whole signed file, GET by the probe's sha256 (when the
 * upload's ?wait ran out before it was signed); a string says why not.
 */
async function embeddedOutput(node: string, format: string, sha256: string | undefined) {
  if (!sha256) return "the upload answered no sha256";
  const res = await fetch(`${node}/sign/${encodeURIComponent(format)}/${sha256}`, {
    signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
  });
  if (res.status !== 200) return `GET /sign/${format}/${sha256}: ${await refusal(res)}`;
  return signedFile(res);
}

/** An upload's 202 JSON. */
interface UploadBody {
  status?: string;
  sha256?: string;
  signature?: string;
}

/**
 * What an upload answered: its 202 JSON, or (an embedded format's ?wait) the signed file itself
 * with the status from X-Upload-Status; a string says why neither.
 */
async function uploadAnswer(
  res: Response,
  format: string,
  embedded: boolean,
): Promise<{ body: UploadBody; file?: Buffer | string } | string> {
  if (embedded && res.status === 200) {
    const status = res.headers.get("x-upload-status") ?? undefined;
    return { body: { ...(status ? { status } : {}) }, file: await signedFile(res) };
  }
  if (res.status !== 202) return `POST /sign/${format}: ${await refusal(res)}`;
  return { body: (await res.json()) as UploadBody };
}

/** Signs a fresh probe through `format` on the session's node and checks the signature. */
async function probeFormat(s: Session, f: FormatEntry): Promise<ProbeResult> {
  const base = { node: s.node, format: f.name, ...(f.backend ? { backend: f.backend } : {}) };
  const fail = (detail: string): ProbeResult => ({ ...base, ok: false, detail });
  const embedded = f.kind === "embedded";
  // An embedded format signs a PowerShell script (comment lines), the one type made of text.
  const c = embedded ? "# " : "";
  const probe = Buffer.from(
    `${c}signing-admin keys test\n${c}node: ${s.node}\n${c}format: ${f.name}\n${c}at: ${new Date().toISOString()}\n` +
      `${c}nonce: ${randomBytes(16).toString("hex")}\n`,
  );
  let answer: Awaited<ReturnType<typeof uploadAnswer>>;
  let started = Date.now();
  try {
    s.token ??= await probeToken(s.node, s.issuer, s.clientIp);
    // Timed from the upload: the token's password check is not the key's.
    started = Date.now();
    const res = await upload(s, s.token, f.name, probe, `signing-admin-probe.${embedded ? "ps1" : "txt"}`);
    answer = await uploadAnswer(res, f.name, embedded);
  } catch (err) {
    return fail(reason(err));
  }
  if (typeof answer === "string") return fail(answer);
  const { body, file } = answer;
  const ms = Date.now() - started;
  // A fresh probe is signed by the node it was uploaded to: anything else did not test its key.
  if (body.status !== "queued") return fail(`the node answered ${body.status ?? "?"}, not a job of its own`);
  const output = embedded
    ? (file ?? (await embeddedOutput(s.node, f.name, body.sha256).catch(reason)))
    : body.signature;
  if (typeof output === "string" && embedded) return fail(output);
  if (!output) return fail(await whyUnsigned(s.node, f.name, body.sha256));
  try {
    const key = await fetch(`${s.node}/keys/${encodeURIComponent(f.name)}`, {
      signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
    });
    if (key.status !== 200) return fail(`GET /keys/${f.name}: ${await refusal(key)}`);
    const why = await checkSignature(f.name, await key.text(), probe, output);
    if (why === null)
      return { ...base, ok: true, detail: "signed, not checked (no check for this format here)", ms };
    return why === undefined ? { ...base, ok: true, detail: "verified", ms } : fail(why);
  } catch (err) {
    return fail(`cannot check it: ${reason(err)}`);
  }
}

async function testNode(node: string, issuer: IssuerCredentials, clientIp?: string): Promise<ProbeResult[]> {
  let formats: FormatEntry[];
  let session: Session;
  try {
    formats = await nodeFormats(node);
    session = { node, nonce: "", issuer, clientIp: clientIp ?? (await sourceAddress(node)) };
  } catch (err) {
    return [{ node, format: "-", ok: false, detail: `unreachable: ${reason(err)}` }];
  }
  const results: ProbeResult[] = [];
  // One after another: the probes share the token's nonce chain.
  for (const f of formats) results.push(await probeFormat(session, f));
  return results;
}

/**
 * Signs a fresh probe through every format of every node, over the upload path a build uses
 * (a token of its own, bound to this host's address as the node sees it, or `clientIp`), and
 * checks each signature here against the public key that node serves.
 */
export async function testKeys(t: Target, issuer: IssuerCredentials, clientIp?: string): Promise<KeyTest> {
  const probes = (await Promise.all(requireNodes(t).map((n) => testNode(n, issuer, clientIp)))).flat();
  return { ok: probes.every((p) => p.ok), probes };
}

export function renderKeyTest(r: KeyTest): string {
  const rows = r.probes.map((p) => [
    p.node,
    p.format,
    p.backend ?? "-",
    p.ok ? "ok" : "FAILED",
    p.ms === undefined ? "-" : `${p.ms} ms`,
    p.detail,
  ]);
  const failed = r.probes.filter((p) => !p.ok);
  const verified = r.probes.filter((p) => p.detail === "verified").length;
  const unchecked = r.probes.length - failed.length - verified;
  return [
    table(["NODE", "FORMAT", "BACKEND", "RESULT", "TOOK", "DETAIL"], rows),
    "",
    failed.length
      ? `FAILED: ${failed.map((p) => `${p.node} ${p.format}`).join(", ")}`
      : `ok: ${verified} probes signed and verified${unchecked ? `, ${unchecked} signed but not checked` : ""}`,
  ].join("\n");
}
