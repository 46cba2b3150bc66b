#!/usr/bin/env node
import { Command, InvalidArgumentError } from "commander";
import {
  invalidate,
  parseTime,
  renderEpoch,
  renderInvalidate,
  renderReseed,
  renderSnapshot,
  reseedFrom,
  showEpoch,
  snapshotTo,
} from "../admin/epoch.js";
import {
  ISSUER_PASSWORD_ENV,
  issuerCredentials,
  listKeys,
  renderKeyList,
  renderKeyTest,
  testKeys,
} from "../admin/keys.js";
import { print, printJson } from "../admin/output.js";
import { hashPasswordFromStdin } from "../admin/password.js";
import { gatherStatus, renderStatus } from "../admin/status.js";
import {
  CLUSTER_ENV,
  DEFAULT_PREFIX,
  defaultSnapshotFile,
  type GlobalOptions,
  REDIS_PASSWORD_ENV,
  resolveTarget,
  type Target,
  usageError,
  withRedis,
} from "../admin/target.js";
import {
  listTokens,
  parseTokenRef,
  renderRevoke,
  renderTokenDetail,
  renderTokenList,
  revokeToken,
  showToken,
} from "../admin/tokens.js";
import { hasCode } from "../errors.js";
import { PACKAGE_VERSION } from "../version.js";

const collect = (value: string, previous: string[] | undefined) => [...(previous ?? []), value];
const wholeNumber = (min: number) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`must be a whole number ≥ ${min}`);
  return n;
};

/** Global options may come before or after the subcommand: the program parses them anywhere. */
const target = (cmd: Command): Target => resolveTarget(cmd.optsWithGlobals() as GlobalOptions);

/** Machine output with --json, else the human rendering. */
function emit<T>(t: Target, value: T, human: (v: T) => string): void {
  if (t.json) printJson(value);
  else print(human(value));
}

const program = new Command()
  .name("signing-admin")
  .description(
    "On-call CLI for the signing cluster: status, tokens, keys, epoch, snapshots, re-seed and invalidate.\n" +
      `The cluster comes from --cluster FILE, else $${CLUSTER_ENV}, else .local/cluster.json (npm start);\n` +
      `--redis, --node and --monitor override it. A Redis password, if needed, comes from $${REDIS_PASSWORD_ENV}.`,
  )
  .option("--cluster <file>", "cluster file (JSON: redisUrl, nodes, monitor, as npm start writes it)")
  .option("--redis <url>", "Redis URL (overrides the cluster file's redisUrl)")
  .option("--node <url>", "a signing node's base URL (repeat; overrides the cluster file's nodes)", collect)
  .option("--monitor <url>", "the monitor's base URL")
  .option("--prefix <prefix>", `Redis key prefix (default "${DEFAULT_PREFIX}")`)
  .option("--state-dir <dir>", "the monitor's state dir, where snapshot.json lives")
  .option("--json", "machine-readable output: one JSON document on stdout")
  .version(PACKAGE_VERSION)
  .configureHelp({ showGlobalOptions: true })
  .showHelpAfterError()
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));

program
  .command("status")
  .summary("health of the nodes, Redis, the epoch, the monitor and the snapshot")
  .description(
    "Health of every node (readiness, version, node id, breakers, key fingerprints), Redis (role, run_id, " +
      "uptime, epoch, live tokens), the monitor (/readyz) and the snapshot (age, tokens: from --state-dir, " +
      "else from the monitor's metrics). Exits 0 only when every part is reachable and healthy, else 1.",
  )
  .option("--snapshot-max-age <seconds>", "a snapshot older than this is a problem", wholeNumber(1), 60)
  .action(async (o: { snapshotMaxAge: number }, cmd: Command) => {
    const t = target(cmd);
    const report = await gatherStatus(t, { snapshotMaxAgeSeconds: o.snapshotMaxAge });
    emit(t, report, renderStatus);
    if (!report.ok) process.exitCode = 1;
  });

const tokens = program
  .command("tokens")
  .description("live tokens in Redis: list, show, revoke (named by a hash of their id, never the token)");

tokens
  .command("list")
  .description("list live tokens, newest first: id hash, issuer, bound IP, issued/expires, node, healed, TTL")
  .option("--limit <n>", "show at most this many (0: all)", wholeNumber(0), 100)
  .option("--show-ids", "also show raw token ids (they name Redis keys; treat them as secrets)")
  .action(async (o: { limit: number; showIds?: boolean }, cmd: Command) => {
    const t = target(cmd);
    const showIds = Boolean(o.showIds);
    const list = await withRedis(t, (s) => listTokens(s, { limit: o.limit, showIds }));
    emit(t, list, (l) => renderTokenList(l, showIds));
  });

tokens
  .command("show")
  .description("one token's record, revocation marker and nonce chain counter")
  .argument("<id-or-hash>", "a token, its id, or the 16-hex id hash from logs and `tokens list`")
  .option("--show-ids", "also show the raw token id")
  .action(async (ref: string, o: { showIds?: boolean }, cmd: Command) => {
    const t = target(cmd);
    parseTokenRef(ref, true); // a malformed argument is a usage error, before any connection
    const detail = await withRedis(t, (s) => showToken(s, ref, Boolean(o.showIds)));
    emit(t, detail, renderTokenDetail);
  });

tokens
  .command("revoke")
  .summary("revoke a token: nodes then answer 401 TOKEN_REVOKED")
  .description(
    'Revokes a token: writes <prefix>revoked:{id} ("revoked by signing-admin") until the token expires ' +
      "(from its Redis record, else the token's payload, else 24 h) and deletes its record and nonce chain. " +
      "Nodes then answer 401 TOKEN_REVOKED for it.",
  )
  .argument(
    "<token-or-id>",
    "the token (its id is read from the payload; no secret needed), its id, or its id hash",
  )
  .option("--show-ids", "also show the raw token id")
  .action(async (ref: string, o: { showIds?: boolean }, cmd: Command) => {
    const t = target(cmd);
    parseTokenRef(ref, true);
    const result = await withRedis(t, (s) => revokeToken(s, ref, Boolean(o.showIds)));
    emit(t, result, renderRevoke);
  });

const keys = program
  .command("keys")
  .description("the nodes' signing keys: what holds them (list), and whether they sign (test)");

keys
  .command("list")
  .description(
    "every node's keys from its /formats: format, backend (file, pkcs11), algorithm, fingerprint, expiry. " +
      "Exits 1 when a node does not answer.",
  )
  .action(async (_o: unknown, cmd: Command) => {
    const t = target(cmd);
    const list = await listKeys(t);
    emit(t, list, renderKeyList);
    if (!list.ok) process.exitCode = 1;
  });

keys
  .command("test")
  .summary("sign a probe through every node's keys over the upload path and verify each signature")
  .description(
    "For every node and format: takes a short token from the node's POST /token as an issuer, uploads a fresh " +
      "probe file as a build would (POST /sign/<format>?wait=), and checks the signature here against the public " +
      "key that node serves. Exits 1 naming each node and format that failed. The issuer is --issuer or the " +
      `cluster file's issuer.user; its password comes from $${ISSUER_PASSWORD_ENV} or the cluster file's ` +
      "issuer.passwordFile.",
  )
  .option("--issuer <user>", "the token issuer to sign as (default: the cluster file's issuer.user)")
  .option(
    "--client-ip <ip>",
    "the address the nodes see this host as, when a proxy or NAT is in between (default: this host's address on the route to each node)",
  )
  .action(async (o: { issuer?: string; clientIp?: string }, cmd: Command) => {
    const t = target(cmd);
    const report = await testKeys(t, issuerCredentials(t, o.issuer), o.clientIp);
    emit(t, report, renderKeyTest);
    if (!report.ok) process.exitCode = 1;
  });

const epoch = program.command("epoch").description("the store epoch record");
epoch
  .command("show")
  .description("the epoch record (id, state, createdAt, minIat) and what its state means")
  .action(async (_o: unknown, cmd: Command) => {
    const t = target(cmd);
    const shown = await withRedis(t, (s) => showEpoch(s));
    emit(t, shown, (r) => renderEpoch(r, t.prefix));
  });

program
  .command("reseed")
  .summary("after a data loss: put a snapshot back and mark the epoch restored")
  .description(
    "After Redis lost its data: puts the tokens, revocations and nonce chains of a snapshot back and marks " +
      "the current epoch restored (what the monitor does with onDataLoss: reseed). Refuses when the epoch " +
      "is invalidated or the snapshot is of the current epoch, unless --force.",
  )
  .option("--from <file>", "the snapshot (default: <state-dir>/snapshot.json)")
  .option(
    "--force",
    "re-seed even if the epoch is invalidated (then marks it restored) or the snapshot is current",
  )
  .action(async (o: { from?: string; force?: boolean }, cmd: Command) => {
    const t = target(cmd);
    const file = o.from ?? defaultSnapshotFile(t);
    if (!file) throw usageError("reseed needs --from FILE or --state-dir DIR");
    const report = await withRedis(t, (s) => reseedFrom(s, file, Boolean(o.force)));
    emit(t, report, renderReseed);
  });

program
  .command("invalidate")
  .summary("mark the epoch invalidated: lost tokens issued before TIME get 401 TOKEN_INVALIDATED")
  .description(
    "An operator decision that overrides the monitor's: sets the current epoch's state to invalidated and " +
      "minIat to TIME, so tokens missing from Redis that were issued before TIME (or in an older epoch) " +
      "get 401 TOKEN_INVALIDATED and build masters fetch new ones. Token records still in Redis stay " +
      "valid: revoke those with `tokens revoke`.",
  )
  .requiredOption("--before <time>", 'ISO date/time (e.g. 2024-05-01T12:00:00Z) or "now"')
  .action(async (o: { before: string }, cmd: Command) => {
    const t = target(cmd);
    const before = parseTime(o.before);
    const result = await withRedis(t, (s) => invalidate(s, before));
    emit(t, result, renderInvalidate);
  });

program
  .command("snapshot")
  .description("snapshot live tokens, revocations and nonce chains to a file, as the monitor does")
  .option("--out <file>", "where to write it (default: <state-dir>/snapshot.json)")
  .option("--force", "overwrite even the snapshot of tokens Redis lost and nobody re-seeded yet")
  .action(async (o: { out?: string; force?: boolean }, cmd: Command) => {
    const t = target(cmd);
    const file = o.out ?? defaultSnapshotFile(t);
    if (!file) throw usageError("snapshot needs --out FILE or --state-dir DIR");
    const report = await withRedis(t, (s) => snapshotTo(s, file, Boolean(o.force)));
    emit(t, report, renderSnapshot);
  });

program
  .command("hash-password")
  .description("read a password from stdin, print its scrypt hash for token.credentials[].passwordHash")
  .action(async (_o: unknown, cmd: Command) => {
    const json = Boolean((cmd.optsWithGlobals() as GlobalOptions).json);
    const hash = await hashPasswordFromStdin();
    if (json) printJson({ passwordHash: hash });
    else print(hash);
  });

/**
 * Exits once stdout and stderr are flushed. Redis is disconnected by then; this only spares
 * the wait for ioredis' disconnect timer (2 s) after a connection that never came up.
 */
function exit(code: number): void {
  process.stdout.write("", () => process.stderr.write("", () => process.exit(code)));
}

program.parseAsync().then(
  () => exit(Number(process.exitCode ?? 0)),
  (err: unknown) => {
    process.stderr.write(`signing-admin: ${err instanceof Error ? err.message : String(err)}\n`);
    exit(hasCode(err, "USAGE") ? 2 : 1);
  },
);
