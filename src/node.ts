import { mkdirSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Logger } from "pino";
import type { LoadedConfig } from "./config/load.js";
import { createApp } from "./http/app.js";
import { CidrList } from "./http/cidr.js";
import { errorBody } from "./http/errors.js";
import type { FormatLimits } from "./http/routes/sign.js";
import { createLogger } from "./log/logger.js";
import { SignerPool } from "./signing/pool.js";
import { type EnabledKeys, loadSigners } from "./signing/registry.js";
import { SigningService } from "./signing/service.js";
import type { FormatName } from "./signing/signer.js";
import { JobStore } from "./store/jobs.js";
import { StoreKeys } from "./store/keys.js";
import { createRedisClient, waitForReady } from "./store/redis.js";
import { TokenService } from "./tokens/service.js";

export interface RunningNode {
  url: string;
  port: number;
  server: Server;
  log: Logger;
  close(): Promise<void>;
}

const PACKAGE_VERSION = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }
).version;

function enabledKeys({ config, gpgPassphrase }: LoadedConfig): EnabledKeys {
  const { gpg, sshsig } = config.signing.formats;
  const keys: EnabledKeys = {};
  if (gpg?.enabled)
    keys.gpg = {
      keyFile: gpg.keyFile,
      ...(gpgPassphrase !== undefined ? { passphrase: gpgPassphrase } : {}),
    };
  if (sshsig?.enabled) keys.sshsig = { keyFile: sshsig.keyFile, namespace: sshsig.namespace };
  return keys;
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

/** Starts one signing node: loads keys (refusing to start without them), connects Redis, serves. */
export async function startNode(loaded: LoadedConfig, opts: { log?: Logger } = {}): Promise<RunningNode> {
  const { config } = loaded;
  const nodeId = config.node.id ?? `${config.node.host}:${config.node.port}`;
  const log = opts.log ?? createLogger(config.log.level, nodeId);

  const keys = enabledKeys(loaded);
  const signers = await loadSigners(keys);
  const limits = new Map<FormatName, FormatLimits>();
  for (const [name, f] of Object.entries(config.signing.formats) as [
    FormatName,
    { enabled: boolean; maxSize: number; filenamePattern: string },
  ][]) {
    if (f?.enabled) limits.set(name, { maxSize: f.maxSize, filenamePattern: new RegExp(f.filenamePattern) });
  }
  const spoolDir = config.signing.spoolDir ?? join(tmpdir(), `signing-spool-${process.pid}`);
  mkdirSync(spoolDir, { recursive: true, mode: 0o700 });

  const redis = createRedisClient({
    redis: config.redis,
    commandTimeoutMs: config.store.commandTimeoutMs,
    password: loaded.redisPassword,
  });
  redis.on("error", (err: Error) => log.warn({ event: "redis_error", err: err.message }));
  // Serve even if Redis is not up yet: readiness says so, and token checks follow downPolicy.
  await waitForReady(redis, config.redis.connectTimeoutMs).catch((err: Error) =>
    log.warn({ event: "redis_not_ready", err: err.message }),
  );

  const storeKeys = new StoreKeys(config.store.prefix);
  const pool = new SignerPool(keys, config.signing.workers);
  const tokens = new TokenService({
    client: redis,
    keys: storeKeys,
    secrets: loaded.tokenSecrets,
    nodeId,
    downPolicy: config.store.downPolicy,
    orphanPolicy: config.store.orphanPolicy,
    recoveryGraceMs: config.store.recoveryGraceMs,
    log,
  });
  const signing = new SigningService({
    jobs: new JobStore(redis, storeKeys, config.signing.resultTtl),
    pool,
    signers,
    nodeId,
    leaseMs: config.signing.jobLeaseMs,
    log,
  });

  const app = createApp({
    tokens,
    signing,
    issuers: new CidrList(config.token.issuers),
    tokenConfig: config.token,
    formats: new Set(limits.keys()),
    limits,
    spoolDir,
    maxWaitSeconds: config.signing.maxWait,
    redis,
    version: { version: PACKAGE_VERSION, commit: process.env.SIGNING_COMMIT ?? "unknown", node: nodeId },
    log,
  });
  const server = createServer({ maxHeaderSize: 16 * 1024 }, app);
  answerClientErrors(server);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.node.port, config.node.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${config.node.host.includes(":") ? `[${config.node.host}]` : config.node.host}:${port}`;
  log.info({ event: "node_started", url, formats: [...limits.keys()] });

  return {
    url,
    port,
    server,
    log,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
      await signing.drain();
      await pool.close();
      redis.disconnect();
    },
  };
}
