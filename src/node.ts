import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { availableParallelism } from "node:os";
import type { Express } from "express";
import type { Logger } from "pino";
import type { LoadedConfig } from "./config/load.js";
import type { Config } from "./config/schema.js";
import { type AppDeps, createApp } from "./http/app.js";
import { CidrList } from "./http/cidr.js";
import { errorBody } from "./http/errors.js";
import type { Lifecycle } from "./http/lifecycle.js";
import { Peers } from "./http/peers.js";
import { RateLimiter } from "./http/rate-limit.js";
import type { FormatLimits } from "./http/routes/sign.js";
import { expressServerObjects } from "./http/server-objects.js";
import { KEY_OPERATION_RESULTS } from "./keys/observed.js";
import type { Pkcs11KeyOptions } from "./keys/pkcs11/key.js";
import { SigningPool } from "./keys/pool.js";
import { AuditLog } from "./log/audit.js";
import { createLogger } from "./log/logger.js";
import { NodeMetrics } from "./metrics/node-metrics.js";
import type { AuthenticodeCredentials, AuthenticodeOptions } from "./signing/formats/authenticode.js";
import { LocalResults } from "./signing/local-results.js";
import { closeSigners, type EnabledKeys, loadSigners } from "./signing/registry.js";
import { ResultStore } from "./signing/results.js";
import { SigningService, type SigningServiceOptions } from "./signing/service.js";
import type { FormatName, Signer } from "./signing/signer.js";
import { Spool } from "./signing/spool.js";
import { BREAKER_NAMES, StoreBreakers } from "./store/breakers.js";
import { ConnectionHealth } from "./store/connection-health.js";
import { JobStore } from "./store/jobs.js";
import { StoreKeys } from "./store/keys.js";
import { createRedisClient, type RedisClient, waitForReady } from "./store/redis.js";
import { ReplicatedWrites } from "./store/replicas.js";
import { TOKEN_CHECK_RESULTS, TokenService } from "./tokens/service.js";
import { buildInfo, PACKAGE_VERSION } from "./version.js";

export interface RunningNode {
  url: string;
  port: number;
  server: Server;
  log: Logger;
  metrics: NodeMetrics;
  /** Whole-file results: where a format whose output is a file stores it (putFile). */
  results: ResultStore;
  /** The signing worker threads (undefined with signing.workers 0). */
  pool: SigningPool | undefined;
  /**
   * Graceful stop: readiness fails and new uploads get 503 SHUTTING_DOWN at once, jobs in
   * flight finish (bounded by shutdown.timeoutMs) and their waiting clients are answered,
   * then the server closes. Resolves true when every job finished.
   */
  close(): Promise<boolean>;
}

type Pkcs11Config = Omit<
  NonNullable<NonNullable<LoadedConfig["config"]["signing"]["formats"]["gpg"]>["pkcs11"]>,
  "userId" | "createdAt"
>;

function pkcs11Options(k: Pkcs11Config, pin: string | undefined): Pkcs11KeyOptions {
  return {
    module: k.module,
    tokenLabel: k.tokenLabel,
    ...(k.keyLabel !== undefined ? { keyLabel: k.keyLabel } : {}),
    ...(k.keyId !== undefined ? { keyId: k.keyId } : {}),
    pin: pin ?? "",
    ...(k.publicKeyFile !== undefined ? { publicKeyFile: k.publicKeyFile } : {}),
    timeoutMs: k.timeoutMs,
  };
}

type GpgFormatConfig = NonNullable<LoadedConfig["config"]["signing"]["formats"]["gpg"]>;

/** An OpenPGP format's key (gpg, gpg-clearsign): a PKCS#11 object with its identity, or a file. */
function openPgpKey(f: GpgFormatConfig, pin: string | undefined, passphrase: string | undefined) {
  if (f.pkcs11) {
    const { userId, createdAt } = f.pkcs11;
    return { pkcs11: pkcs11Options(f.pkcs11, pin), userId, createdAt: new Date(createdAt) };
  }
  return { keyFile: f.keyFile as string, ...(passphrase !== undefined ? { passphrase } : {}) };
}

type AuthenticodeConfig = NonNullable<Config["signing"]["formats"]["authenticode"]>;

/** osslsigncode's credentials: PEM files, a PKCS#12 file, or a PKCS#11 key and its certificate. */
function authenticodeCredentials(
  f: AuthenticodeConfig,
  passphrase: string | undefined,
  pin: string | undefined,
): AuthenticodeCredentials {
  const withPassphrase = passphrase !== undefined ? { passphrase } : {};
  if (f.pkcs11) {
    const { engine, module, tokenLabel, keyLabel, keyId } = f.pkcs11;
    return {
      kind: "pkcs11",
      certFile: f.certFile as string,
      engine,
      module,
      tokenLabel,
      ...(keyLabel !== undefined ? { keyLabel } : {}),
      ...(keyId !== undefined ? { keyId } : {}),
      pin: pin ?? "",
    };
  }
  if (f.pkcs12File) return { kind: "pkcs12", pkcs12File: f.pkcs12File, ...withPassphrase };
  return { kind: "pem", certFile: f.certFile as string, keyFile: f.keyFile as string, ...withPassphrase };
}

/** osslsigncode's credentials and settings, when the authenticode format is enabled. */
function authenticodeOptions({
  config,
  authenticodePassphrase,
  pkcs11Pins,
}: LoadedConfig): AuthenticodeOptions | undefined {
  const f = config.signing.formats.authenticode;
  if (!f?.enabled) return undefined;
  const credentials = authenticodeCredentials(f, authenticodePassphrase, pkcs11Pins.authenticode);
  return {
    credentials,
    timeoutMs: f.timeoutMs,
    ...(f.timestampUrl ? { timestampUrl: f.timestampUrl } : {}),
  };
}

/** Each enabled format's key: a file, or a PKCS#11 key with the PIN the loader read. */
function enabledKeys(loaded: LoadedConfig): EnabledKeys {
  const { config, gpgPassphrase, clearsignPassphrase, pkcs11Pins } = loaded;
  const { gpg, sshsig, minisign } = config.signing.formats;
  const clearsign = config.signing.formats["gpg-clearsign"];
  const keys: EnabledKeys = {};
  if (gpg?.enabled) keys.gpg = openPgpKey(gpg, pkcs11Pins.gpg, gpgPassphrase);
  if (clearsign?.enabled)
    keys["gpg-clearsign"] = openPgpKey(clearsign, pkcs11Pins["gpg-clearsign"], clearsignPassphrase);
  if (sshsig?.enabled && sshsig.pkcs11) {
    const pkcs11 = pkcs11Options(sshsig.pkcs11, pkcs11Pins.sshsig);
    keys.sshsig = { pkcs11, namespace: sshsig.namespace, comment: sshsig.pkcs11.comment };
  } else if (sshsig?.enabled && sshsig.keyFile)
    keys.sshsig = { keyFile: sshsig.keyFile, namespace: sshsig.namespace };
  if (minisign?.enabled && minisign.pkcs11)
    keys.minisign = { pkcs11: pkcs11Options(minisign.pkcs11, pkcs11Pins.minisign) };
  else if (minisign?.enabled && minisign.keyFile) keys.minisign = { keyFile: minisign.keyFile };
  const authenticode = authenticodeOptions(loaded);
  if (authenticode) keys.authenticode = authenticode;
  return keys;
}

/**
 * HTTPS when `tls` is configured (with `clientCa`, a client certificate it signed is required:
 * the handshake fails without one); plain HTTP only when the config says allowPlaintext.
 */
function listenerFor({ config }: LoadedConfig, app: Express): Server {
  const limits = { maxHeaderSize: 16 * 1024, headersTimeout: 20_000, ...expressServerObjects(app) };
  if (!config.tls) return createServer(limits, app);
  return createHttpsServer(
    {
      ...limits,
      cert: readFileSync(config.tls.cert),
      key: readFileSync(config.tls.key),
      ...(config.tls.clientCa
        ? { ca: readFileSync(config.tls.clientCa), requestCert: true, rejectUnauthorized: true }
        : {}),
    },
    app,
  );
}

/** A header block over node's limit never reaches express: answer it in the API's JSON shape. */
function answerClientErrors(server: Server): void {
  server.on("clientError", (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) return socket.destroy();
    const tooLarge = err.code === "HPE_HEADER_OVERFLOW";
    const body = JSON.stringify(
      tooLarge
        ? errorBody("HEADERS_TOO_LARGE", "request headers are too large")
        : errorBody("BAD_REQUEST", "malformed HTTP request"),
    );
    socket.end(
      `HTTP/1.1 ${tooLarge ? "431 Request Header Fields Too Large" : "400 Bad Request"}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
}

/** Each enabled format's upload limits. */
function formatLimits({ config }: LoadedConfig): Map<FormatName, FormatLimits> {
  const limits = new Map<FormatName, FormatLimits>();
  const formats = Object.entries(config.signing.formats) as [
    FormatName,
    { enabled: boolean; maxSize: number; filenamePattern: string },
  ][];
  for (const [name, f] of formats)
    if (f?.enabled)
      limits.set(name, { maxSize: f.maxSize, filenamePattern: new RegExp(f.filenamePattern, "u") });
  return limits;
}

function warnDeprecated({ config }: LoadedConfig, log: Logger): void {
  if (config.node.advertiseUrl === undefined && ["0.0.0.0", "::"].includes(config.node.host)) {
    // Peers would fetch this node's whole-file results from their own address.
    log.warn({
      event: "advertise_url_unset",
      impact: "set node.advertiseUrl: peers cannot reach this node's whole-file results",
    });
  }
  if (config.signing.uploadIdleTimeoutMs === undefined) return;
  const use = "signing.uploadMinBytesPerSecond and signing.uploadRateWindowMs";
  log.warn({ event: "config_deprecated", key: "signing.uploadIdleTimeoutMs", use });
}

/** The shared Redis connection, and what says why it fails when it does. */
async function connectStore(loaded: LoadedConfig, log: Logger) {
  const { config } = loaded;
  const { commandTimeoutMs } = config.store;
  const redis = createRedisClient({ redis: config.redis, commandTimeoutMs, password: loaded.redisPassword });
  redis.on("error", (err: Error) => log.warn({ event: "redis_error", err: err.message }));
  const redisHealth = new ConnectionHealth(redis);
  // Serve even if Redis is not up yet: readiness says so, and token checks follow downPolicy.
  await waitForReady(redis, config.redis.connectTimeoutMs).catch((err: Error) =>
    log.warn({ event: "redis_not_ready", err: err.message }),
  );
  return { redis, redisHealth };
}

/** Revocations' own connection, made on first use (they wait for a replica on it). */
function replicatedWrites(loaded: LoadedConfig, log: Logger): ReplicatedWrites {
  const { config } = loaded;
  return new ReplicatedWrites(async () => {
    const client = createRedisClient({
      redis: config.redis,
      // WAIT itself takes up to replicaAckTimeoutMs: the command must not time out first.
      commandTimeoutMs: config.store.commandTimeoutMs + config.store.replicaAckTimeoutMs,
      password: loaded.redisPassword,
    });
    client.on("error", (err: Error) =>
      log.debug({ event: "redis_error", connection: "replicated", err: err.message }),
    );
    try {
      await waitForReady(client, config.redis.connectTimeoutMs);
    } catch (err) {
      client.disconnect(); // the next revocation makes a new one
      throw err;
    }
    return client;
  }, config.store.replicaAckTimeoutMs);
}

/** Whole-file results: this node's spool (its use and evictions in the metrics), and their records beside the jobs. */
function resultStore(
  options: Config["signing"]["spool"],
  deps: { jobs: JobStore; breakers: StoreBreakers; log: Logger },
  signers: ReadonlyMap<FormatName, Signer>,
  metrics: NodeMetrics,
): ResultStore {
  const fingerprintOf = (format: FormatName) => {
    const signer = signers.get(format);
    if (!signer) throw new Error(`format ${format} is not enabled`);
    return signer.fingerprint;
  };
  const spool = new Spool(options, { evicted: (_file, limit) => metrics.spoolEvictions.inc({ limit }) });
  metrics.observeSpool(spool, options.maxBytes);
  return new ResultStore({ ...deps, spool, fingerprintOf });
}

/** Every series the node will report, initialised at zero, and the keys' expiry times. */
function initialiseMetrics(
  metrics: NodeMetrics,
  formats: FormatName[],
  signers: ReadonlyMap<FormatName, Signer>,
): void {
  metrics.initialise(formats, TOKEN_CHECK_RESULTS, BREAKER_NAMES);
  const backends = [...signers].map(([format, s]): [string, string] => [format, s.key.backend]);
  metrics.initialiseKeys(backends, KEY_OPERATION_RESULTS);
  const embedded = [...signers].filter(([, s]) => s.kind === "embedded").map(([format]) => format);
  metrics.initialiseFileResults(embedded);
  // An expiry is known at start-up: alert on it weeks ahead (SigningKeyExpiresSoon).
  for (const [format, signer] of signers)
    if (signer.expiresAt) metrics.keyExpiry.set({ format }, signer.expiresAt.getTime() / 1000);
}

/** The signing service: its admission line, its results in memory while Redis is away, its lease. */
function signingService(
  s: Config["signing"],
  deps: Omit<SigningServiceOptions, "local" | "admission" | "leaseMs">,
): SigningService {
  return new SigningService({
    ...deps,
    local: new LocalResults(s.localResultBytes, s.resultTtl * 1000),
    admission: {
      ...{ maxPending: s.maxPending, maxPendingPerIp: s.maxPendingPerIp },
      ...{ waitMs: s.admissionWaitMs, maxQueued: s.admissionQueueMax },
    },
    leaseMs: s.jobLeaseMs,
  });
}

/** What a node runs on: metrics, breakers, tokens, signing and the audit log. */
function services(
  loaded: LoadedConfig,
  nodeId: string,
  log: Logger,
  redis: RedisClient,
  signers: ReadonlyMap<FormatName, Signer>,
  metrics: NodeMetrics,
  pool: SigningPool | undefined,
) {
  const { config } = loaded;
  const limits = formatLimits(loaded);
  initialiseMetrics(metrics, [...limits.keys()], signers);
  pool?.onQueueChange((waiting) => metrics.workerPoolQueue.set(waiting));
  const settings = { commandTimeoutMs: config.store.commandTimeoutMs, ...config.store.breaker };
  const breakers = new StoreBreakers(settings, metrics, log);
  const storeKeys = new StoreKeys(config.store.prefix);
  const replicated = replicatedWrites(loaded, log);
  const { downPolicy, orphanPolicy, recoveryGraceMs } = config.store;
  const tokens = new TokenService({
    ...{
      replicated,
      breakers,
      metrics,
      client: redis,
      keys: storeKeys,
      secrets: loaded.tokenSecrets,
      nodeId,
    },
    ...{ downPolicy, orphanPolicy, recoveryGraceMs, log },
  });
  const audit = new AuditLog(config.audit.file, nodeId, (err) =>
    log.error({ event: "audit_write_failed", err: err.message }),
  );
  const s = config.signing;
  const jobs = new JobStore(redis, storeKeys, s.resultTtl);
  const results = resultStore(s.spool, { jobs, breakers, log }, signers, metrics);
  const signing = signingService(s, { audit, breakers, metrics, signers, nodeId, log, jobs, files: results });
  return {
    limits,
    metrics,
    breakers,
    replicated,
    tokens,
    audit,
    signing,
    signers,
    pool,
    results,
    peers: peersOf(loaded, log),
  };
}

type Services = ReturnType<typeof services>;

/** Node-to-node requests (whole-file results), with this node's TLS identity when it has one. */
function peersOf({ config, internalSecret }: LoadedConfig, log: Logger): Peers | undefined {
  if (!internalSecret) {
    log.warn({
      event: "internal_secret_unset",
      impact: "whole-file results are served by their own node only",
    });
    return undefined;
  }
  const tls = config.tls && {
    cert: readFileSync(config.tls.cert),
    key: readFileSync(config.tls.key),
    ...(config.tls.peerCa ? { ca: readFileSync(config.tls.peerCa) } : {}),
  };
  return new Peers({ secret: internalSecret, ...(tls ? { tls } : {}), log });
}

/** Everything the HTTP routes are given. */
function appDeps(
  loaded: LoadedConfig,
  nodeId: string,
  log: Logger,
  store: Awaited<ReturnType<typeof connectStore>>,
  x: Services,
  lifecycle: Lifecycle,
): AppDeps {
  const { config } = loaded;
  const rate = (r: { ratePerSecond: number; burst: number }) => new RateLimiter(r.ratePerSecond, r.burst);
  const { tokenPerIp, signPerIp, signPerToken } = config.limits;
  return {
    ...{ audit: x.audit, metrics: x.metrics, breakers: x.breakers, tokens: x.tokens, signing: x.signing },
    ...{ results: x.results, peers: x.peers },
    ...{
      lifecycle,
      downPolicy: config.store.downPolicy,
      log,
      redis: store.redis,
      redisHealth: store.redisHealth,
    },
    trustProxy: new CidrList(config.node.trustProxy),
    allowedClients: new CidrList(config.node.allowedClients),
    ...{ tokenPerIp: rate(tokenPerIp), signPerIp: rate(signPerIp), signPerToken: rate(signPerToken) },
    issuers: new CidrList(config.token.issuers),
    tokenConfig: config.token,
    formats: new Set(x.limits.keys()),
    limits: x.limits,
    maxWaitSeconds: config.signing.maxWait,
    uploadPace: {
      minBytesPerSecond: config.signing.uploadMinBytesPerSecond,
      windowMs: config.signing.uploadRateWindowMs,
    },
    version: { version: PACKAGE_VERSION, ...buildInfo(), node: nodeId },
  };
}

/** Listens on the configured address; resolves to the URL clients reach it at. */
async function listen(server: Server, { config }: LoadedConfig): Promise<{ url: string; port: number }> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.node.port, config.node.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const scheme = config.tls ? "https" : "http";
  const host = config.node.host.includes(":") ? `[${config.node.host}]` : config.node.host;
  return { url: `${scheme}://${host}:${port}`, port };
}

/**
 * Graceful stop: readiness fails and new uploads get 503 SHUTTING_DOWN at once, jobs in flight
 * finish (bounded by shutdown.timeoutMs) and their waiting clients are answered, then the
 * server closes and the connections go.
 */
async function shutdown(
  { config }: LoadedConfig,
  log: Logger,
  server: Server,
  redis: RedisClient,
  x: Services,
  lifecycle: Lifecycle,
): Promise<boolean> {
  lifecycle.shuttingDown = true;
  x.signing.stopAdmitting();
  log.info({ event: "draining", inflightJobs: x.signing.inflightJobs });
  const drained = await x.signing.drain(config.shutdown.timeoutMs);
  if (!drained) log.warn({ event: "drain_timeout", inflightJobs: x.signing.inflightJobs });
  // Clients holding ?wait requests for those jobs get their answers before we close.
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  const forced = setTimeout(() => server.closeAllConnections(), Math.min(5000, config.shutdown.timeoutMs));
  await closed;
  clearTimeout(forced);
  x.breakers.shutdown();
  redis.disconnect();
  await closeSigners(x.signers);
  await x.pool?.close();
  await x.replicated.close();
  await x.audit.close();
  x.peers?.close();
  x.results.close();
  log.info({ event: "stopped", drained });
  return drained;
}

/** Starts one signing node: loads keys (refusing to start without them), connects Redis, serves. */
export async function startNode(loaded: LoadedConfig, opts: { log?: Logger } = {}): Promise<RunningNode> {
  const { config } = loaded;
  const nodeId = config.node.id ?? `${config.node.host}:${config.node.port}`;
  const log = opts.log ?? createLogger(config.log.level, nodeId);
  warnDeprecated(loaded, log);
  const workers = config.signing.workers ?? availableParallelism();
  const pool = workers > 0 ? new SigningPool(workers) : undefined;
  // Keys first: a node that cannot sign refuses to start before it connects anywhere. Their
  // metrics exist before them: the start-up self-check signatures count too.
  const metrics = new NodeMetrics();
  const signers = await loadSigners(enabledKeys(loaded), {
    breaker: config.signing.keyBreaker,
    log,
    observe: (format, backend, result, seconds) => metrics.keyOperation(format, backend, result, seconds),
    pool,
  }).catch(async (err) => {
    await pool?.close();
    throw err;
  });
  const s = await connectStore(loaded, log);
  const x = services(loaded, nodeId, log, s.redis, signers, metrics, pool);
  const lifecycle: Lifecycle = { shuttingDown: false };
  const server = listenerFor(loaded, createApp(appDeps(loaded, nodeId, log, s, x, lifecycle)));
  answerClientErrors(server);
  const { url, port } = await listen(server, loaded).catch(async (err) => {
    // A PKCS#11 session must not outlive a node that never served.
    await closeSigners(signers);
    await pool?.close();
    s.redis.disconnect();
    throw err;
  });
  x.results.advertise(config.node.advertiseUrl ?? url);
  const backends = Object.fromEntries([...signers].map(([format, signer]) => [format, signer.key.backend]));
  log.info({ event: "node_started", url, formats: [...x.limits.keys()], keyBackends: backends, workers });
  let closing: Promise<boolean> | undefined;
  const close = () => {
    closing ??= shutdown(loaded, log, server, s.redis, x, lifecycle);
    return closing;
  };
  return { url, port, server, log, metrics: x.metrics, results: x.results, pool, close };
}
