import { z } from "zod";
import { PasswordHashError, parsePasswordHash } from "./password-hash.js";

/** A secret is never written in the config itself: it names the file or env var that holds it. */
export const secretRef = z
  .object({
    file: z.string().min(1).optional().describe("a file holding the secret (mode 0600)"),
    env: z.string().min(1).optional().describe("an environment variable holding the secret"),
  })
  .strict()
  .refine((s) => (s.file === undefined) !== (s.env === undefined), {
    message: "give exactly one of `file` or `env`",
  });

/**
 * A hash scrypt cannot use is refused at start-up, with the reasons: at run time it could only
 * make every POST /token of that issuer fail. The format is read in one place, credentials.ts.
 */
const passwordHash = z.string().superRefine((stored, ctx) => {
  try {
    parsePasswordHash(stored);
  } catch (e) {
    if (!(e instanceof PasswordHashError)) throw e;
    ctx.addIssue({ code: "custom", message: e.message });
  }
});

const cidr = z.union([z.cidrv4(), z.cidrv6()], { error: "must be a CIDR such as 10.0.0.0/8" });
const seconds = z.number().int().positive();

/** The longest a token may live (token.maxDuration's bound, and a revocation's fallback life). */
export const MAX_TOKEN_SECONDS = 30 * 86400;
const ms = z.number().int().positive();

export const redisSchema = z
  .object({
    url: z.string().url().optional().describe("a standalone Redis, `redis://host:port/db` (or `rediss://`)"),
    sentinels: z
      .array(
        z
          .object({
            host: z.string().min(1).describe("a Sentinel's host name or address"),
            port: z.number().int().min(1).max(65535).describe("its port, usually 26379"),
          })
          .strict(),
      )
      .min(1)
      .optional()
      .describe("Redis Sentinel: every Sentinel's `{host, port}`; give `url` or `sentinels`, not both"),
    name: z.string().min(1).optional().describe("with `sentinels`: the master's name"),
    /**
     * Not supported: refused with a pointer to Sentinel. One primary carries far more than a
     * build farm needs, and the monitor's snapshot, INFO/ROLE and epoch see one server only.
     */
    cluster: z.unknown().optional().describe("not supported: refused, with a pointer to Sentinel"),
    password: secretRef.optional().describe("Redis password, `{file}` or `{env}`"),
    connectTimeoutMs: ms.default(2000).describe("a connection attempt gives up after this long, ms"),
  })
  .strict()
  .superRefine((r, ctx) => {
    if (r.cluster !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["cluster"],
        message:
          "Redis Cluster is not supported: one primary carries a build farm's tokens and jobs, and the monitor must see the whole keyspace. For high availability use Redis Sentinel (`sentinels` + `name`; see docs/operations.md)",
      });
      return;
    }
    if ((r.url === undefined) === (r.sentinels === undefined)) {
      ctx.addIssue({ code: "custom", message: "give exactly one of `url` or `sentinels` (+ `name`)" });
    }
    if (r.sentinels && !r.name) {
      ctx.addIssue({ code: "custom", path: ["name"], message: "Sentinel mode needs the master `name`" });
    }
  });

const rateLimit = z
  .object({
    ratePerSecond: z.number().positive().describe("requests per second, sustained"),
    burst: z.number().int().positive().describe("requests allowed at once above the rate"),
  })
  .strict();

/** Letters and digits of any script, spaces and a few marks; no leading space, dot or dash. */
export const DEFAULT_FILENAME_PATTERN = "^[\\p{L}\\p{N}_][\\p{L}\\p{M}\\p{N}\\p{Pd} ._+,()\\[\\]~@]{0,254}$";

/**
 * A key in a PKCS#11 token (DESIGN.md §6): the node logs in with the PIN and asks the token to
 * sign; the private key never leaves it.
 */
const pkcs11KeyFields = z
  .object({
    module: z
      .string()
      .min(1)
      .describe("the PKCS#11 module (shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`"),
    tokenLabel: z.string().min(1).describe("label of the token that holds the key"),
    keyLabel: z
      .string()
      .min(1)
      .optional()
      .describe("CKA_LABEL of the private key (give it, `keyId`, or both)"),
    keyId: z
      .string()
      .regex(/^([0-9a-fA-F]{2})+$/, "must be hex, e.g. 01")
      .optional()
      .describe("CKA_ID of the private key, hex"),
    pin: secretRef.describe(
      "the token's user PIN, `{file}` (mode 0600: a file others can read is refused) or `{env}`",
    ),
    publicKeyFile: z
      .string()
      .min(1)
      .optional()
      .describe(
        "PEM public key of the key; without it, the token's public key object of the same label or id is used",
      ),
    timeoutMs: ms
      .default(10_000)
      .describe("longest one PKCS#11 call may take before it counts as a backend failure, ms"),
  })
  .strict();

/** A PKCS#11 key is found by its label, its id, or both. */
const keyLabelOrId = [
  (k: { keyLabel?: string | undefined; keyId?: string | undefined }) =>
    k.keyLabel !== undefined || k.keyId !== undefined,
  { message: "give keyLabel or keyId" },
] as const;

const pkcs11Key = pkcs11KeyFields.refine(...keyLabelOrId);

/** Exactly one backend per enabled format: a key file, or a PKCS#11 key (a disabled one needs none). */
const oneBackend = (f: { enabled: boolean; keyFile?: string | undefined; pkcs11?: unknown }) =>
  !f.enabled || (f.keyFile === undefined) !== (f.pkcs11 === undefined);
const oneBackendMessage = { message: "give exactly one of keyFile or pkcs11" };

const formatBase = {
  enabled: z.boolean().default(true).describe("sign this format"),
  maxSize: z
    .number()
    .int()
    .positive()
    .default(512 * 1024 * 1024)
    .describe("largest upload accepted for this format, bytes (413 beyond)"),
  filenamePattern: z
    .string()
    .default(DEFAULT_FILENAME_PATTERN)
    .describe(
      "uploaded filenames must match this JavaScript regular expression (`u` flag: `\\p{L}` is any letter); path separators and control characters are refused whatever it says. The default takes `Firefox Setup 29.0.exe` and `Überblick.pdf`: letters and digits of any script, spaces, dashes and `._+,()[]~@`, not starting with a space, dot or dash",
    )
    .refine(
      (p) => {
        try {
          new RegExp(p, "u");
          return true;
        } catch {
          return false;
        }
      },
      { message: "not a valid regular expression (with the u flag)" },
    ),
};

/** The OpenPGP key of gpg and gpg-clearsign: a key file, or a PKCS#11 object with its identity. */
const gpgFormat = z
  .object({
    ...formatBase,
    keyFile: z
      .string()
      .min(1)
      .optional()
      .describe("armored OpenPGP v4 secret key, Ed25519 or RSA (the file backend)"),
    passphrase: secretRef.optional().describe("the key file's passphrase, `{file}` or `{env}`"),
    pkcs11: pkcs11Key
      .safeExtend({
        userId: z
          .string()
          .min(1)
          .describe("user ID of the OpenPGP public key the node builds, e.g. `Release <rel@example.com>`"),
        createdAt: z.iso
          .datetime({ offset: true })
          .describe(
            "the OpenPGP key's creation time, ISO 8601: part of its fingerprint, so never change it for a key",
          ),
      })
      .optional()
      .describe("the key in a PKCS#11 token instead of `keyFile` (the pkcs11 backend)"),
  })
  .strict()
  .refine(oneBackend, oneBackendMessage);

/** Where Debian's libengine-pkcs11-openssl installs the OpenSSL engine osslsigncode loads for PKCS#11. */
export const DEFAULT_PKCS11_ENGINE = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so";

/**
 * An Authenticode key in a PKCS#11 token: osslsigncode reaches it through the OpenSSL PKCS#11
 * engine (libp11), with the PIN on its stdin; the node itself never opens the key.
 */
const authenticodePkcs11 = pkcs11KeyFields
  .omit({ publicKeyFile: true, timeoutMs: true })
  .extend({
    engine: z
      .string()
      .min(1)
      .default(DEFAULT_PKCS11_ENGINE)
      .describe(
        "the OpenSSL PKCS#11 engine osslsigncode loads (Debian: `libengine-pkcs11-openssl`); a missing file stops the node at start-up",
      ),
  })
  .strict()
  .refine(...keyLabelOrId);

interface AuthenticodeCredentialFields {
  enabled: boolean;
  certFile?: string | undefined;
  keyFile?: string | undefined;
  pkcs12File?: string | undefined;
  pkcs11?: unknown;
  passphrase?: unknown;
}

/** Exactly one kind of Authenticode credentials: PEM files, a PKCS#12 file, or a PKCS#11 key with its certificate. */
function oneAuthenticodeCredential(f: AuthenticodeCredentialFields, ctx: z.RefinementCtx): void {
  if (!f.enabled) return;
  if (f.pkcs11 !== undefined && !f.certFile) {
    const message = "with pkcs11, give certFile: the PEM certificate chain of the token's key";
    ctx.addIssue({ code: "custom", path: ["certFile"], message });
    return;
  }
  if (f.pkcs11 !== undefined && f.passphrase !== undefined) {
    const message = "is for keyFile or pkcs12File: the token's PIN goes in pkcs11.pin";
    ctx.addIssue({ code: "custom", path: ["passphrase"], message });
    return;
  }
  const one =
    f.pkcs11 !== undefined
      ? !f.keyFile && !f.pkcs12File
      : f.pkcs12File
        ? !f.certFile && !f.keyFile
        : !!(f.certFile && f.keyFile);
  if (!one)
    ctx.addIssue({
      code: "custom",
      message: "give certFile and keyFile, or pkcs12File, or pkcs11 with certFile (its certificate chain)",
    });
}

/** Authenticode: osslsigncode's credentials (PEM files, a PKCS#12 file or a PKCS#11 key) and how it runs. */
const authenticodeFormat = z
  .object({
    ...formatBase,
    maxSize: z
      .number()
      .int()
      .positive()
      .default(512 * 1024 * 1024)
      .describe(
        "largest file accepted, bytes (413 beyond): it is written to a private temp file while it arrives, and its signed copy kept in the spool",
      ),
    certFile: z
      .string()
      .min(1)
      .optional()
      .describe(
        "PEM code-signing certificate, followed by its intermediates (with `keyFile`, or with `pkcs11`: the certificate of the token's key)",
      ),
    keyFile: z.string().min(1).optional().describe("PEM private key of `certFile`"),
    pkcs12File: z
      .string()
      .min(1)
      .optional()
      .describe("a PKCS#12 file holding the key and its chain, instead of `certFile` and `keyFile`"),
    pkcs11: authenticodePkcs11
      .optional()
      .describe(
        "the key in a PKCS#11 token instead of `keyFile` or `pkcs12File`, used through osslsigncode's PKCS#11 engine; `certFile` holds its certificate chain",
      ),
    passphrase: secretRef
      .optional()
      .describe(
        "passphrase of `keyFile` or `pkcs12File`, `{file}` or `{env}` (given on osslsigncode's stdin)",
      ),
    timestampUrl: z
      .url()
      .optional()
      .describe(
        "an RFC 3161 timestamping server (osslsigncode -ts); none by default, as signing machines are often offline",
      ),
    timeoutMs: z
      .number()
      .int()
      .positive()
      .max(600_000)
      .default(120_000)
      .describe("osslsigncode is killed after this long, ms (the job fails SIGNING_FAILED)"),
  })
  .strict()
  .superRefine(oneAuthenticodeCredential);

export const configSchema = z
  .object({
    node: z
      .object({
        id: z
          .string()
          .min(1)
          .optional()
          .describe("names this node in logs, jobs and the tokens it issues; default `host:port`"),
        host: z.string().default("127.0.0.1").describe("listen address"),
        port: z.number().int().min(0).max(65535).default(9110).describe("listen port"),
        allowPlaintext: z
          .boolean()
          .default(false)
          .describe(
            "serve plain HTTP without `tls`: only behind a TLS-terminating proxy, or for development",
          ),
        trustProxy: z
          .array(cidr)
          .default([])
          .describe("CIDRs of your proxies: `X-Forwarded-For` is believed from them only (never by default)"),
        allowedClients: z
          .array(cidr)
          .min(1)
          .default(["0.0.0.0/0", "::/0"])
          .describe(
            "CIDRs allowed to make any request; others get `403 CLIENT_NOT_ALLOWED` before anything is parsed",
          ),
        advertiseUrl: z
          .url({ protocol: /^https?$/ })
          .optional()
          .describe(
            "the URL other nodes reach this node at, `https://host:port`; the result record of a whole-file output names it. Default: the listen address (set it when `host` is `0.0.0.0` or `::`)",
          ),
        internalSecret: secretRef
          .optional()
          .describe(
            "the credential nodes present to each other to fetch whole-file results (≥ 32 bytes, the same on every node), `{file}` or `{env}`; without it a node serves only the whole-file results it holds itself",
          ),
      })
      .strict()
      .prefault({}),
    tls: z
      .object({
        cert: z.string().min(1).describe("certificate chain, PEM"),
        key: z.string().min(1).describe("its private key, PEM, mode 0600"),
        clientCa: z
          .string()
          .min(1)
          .optional()
          .describe("with it, clients must present a certificate this CA signed (mutual TLS)"),
        peerCa: z
          .string()
          .min(1)
          .optional()
          .describe(
            "CA certificates (PEM) other nodes' certificates chain to, trusted for node-to-node requests (whole-file results); default: the system's CAs. A node presents its own `cert` to its peers, so with `clientCa` that CA must have signed the nodes' certificates too",
          ),
      })
      .strict()
      .optional()
      .describe("HTTPS; required unless `node.allowPlaintext`"),
    audit: z
      .object({
        file: z
          .string()
          .min(1)
          .optional()
          .describe(
            "append-only JSON lines of every token issued or revoked and every signature made (docs/security.md)",
          ),
      })
      .strict()
      .prefault({}),
    redis: redisSchema,
    store: z
      .object({
        prefix: z.string().default("signing:").describe("prefix of every Redis key (DESIGN.md §4)"),
        commandTimeoutMs: ms.default(500).describe("no request waits on Redis longer than this, ms"),
        downPolicy: z
          .enum(["hmac", "reject"])
          .default("hmac")
          .describe(
            "Redis unreachable: `hmac` accepts MAC-valid tokens without revocation and nonce checks; `reject` answers 503",
          ),
        orphanPolicy: z
          .enum(["heal", "reject"])
          .default("heal")
          .describe(
            "a token lost with Redis, after the grace period: `heal` re-inserts it, `reject` refuses it",
          ),
        recoveryGraceMs: ms
          .default(10_000)
          .describe(
            "after a data loss, lost tokens get `503 STORE_RECOVERING` this long: the monitor's time to re-seed, ms",
          ),
        replicaAckTimeoutMs: ms
          .default(1000)
          .describe(
            "a revocation or invalidation is answered once a replica has it (Redis WAIT), or after this with a retryable 503; no wait without replicas, ms",
          ),
        breaker: z
          .object({
            errorThresholdPercentage: z
              .number()
              .min(1)
              .max(100)
              .default(50)
              .describe("failure percentage over the rolling window that opens a breaker"),
            volumeThreshold: z
              .number()
              .int()
              .min(1)
              .default(5)
              .describe("calls in the window before the percentage counts"),
            resetTimeoutMs: ms
              .max(30_000)
              .default(5000)
              .describe(
                "how long an open breaker fails fast before letting one trial call through, ms; at most 30 s, because StoreBreakerOpen counts an outage by the breaker re-opening within each minute",
              ),
            rollingWindowMs: ms.default(10_000).describe("the window failures are counted over, ms"),
          })
          .strict()
          .prefault({})
          .describe("circuit breakers around Redis, one per purpose: token reads, token writes, jobs"),
      })
      .strict()
      .prefault({}),
    token: z
      .object({
        secrets: z
          .array(
            z
              .object({
                kid: z
                  .string()
                  .regex(/^[A-Za-z0-9_-]{1,32}$/, "kid must be [A-Za-z0-9_-]{1,32}")
                  .describe("the secret's name, carried in each token"),
              })
              .extend(secretRef.shape)
              .strict()
              .refine((s) => (s.file === undefined) !== (s.env === undefined), {
                message: "give exactly one of `file` or `env`",
              }),
          )
          .min(1)
          .describe(
            "HMAC secrets, ≥ 32 bytes each: the first signs new tokens, all of them verify (rotation)",
          ),
        issuers: z.array(cidr).min(1).describe("CIDRs allowed to call `POST /token` (build masters)"),
        credentials: z
          .array(
            z
              .object({
                user: z.string().min(1).describe("the issuer's name"),
                passwordHash: passwordHash.describe(
                  "`scrypt$N$r$p$<salt base64>$<hash base64>` from `signing-node hash-password`; refused at start-up unless scrypt accepts its parameters (N a power of two, within 256 MiB)",
                ),
                from: z
                  .array(cidr)
                  .min(1)
                  .optional()
                  .describe(
                    "where this issuer may call from (within `token.issuers`); default: anywhere in it",
                  ),
                slaveIps: z
                  .array(cidr)
                  .min(1)
                  .optional()
                  .describe("build machines this issuer may request tokens for; default: any"),
                maxDuration: seconds
                  .optional()
                  .describe("a lower maximum token lifetime for this issuer, seconds"),
              })
              .strict(),
          )
          .min(1)
          .describe("build-master credentials; two entries with one user and two hashes rotate a password"),
        maxDuration: seconds
          .max(MAX_TOKEN_SECONDS)
          .default(8 * 3600)
          .describe(
            "longest token lifetime, seconds; at most 30 days (a revocation whose token's expiry is unknown is kept that long)",
          ),
        defaultDuration: seconds
          .default(2 * 3600)
          .describe("lifetime of a token whose request names none, seconds"),
      })
      .strict()
      .refine((t) => t.defaultDuration <= t.maxDuration, {
        path: ["defaultDuration"],
        message: "must not exceed token.maxDuration",
      }),
    signing: z
      .object({
        resultTtl: seconds
          .default(3600)
          .describe("how long signed results stay in Redis (the cache), seconds"),
        jobLeaseMs: ms
          .default(30_000)
          .describe(
            "a job whose node died before finishing it may be signed again after this, ms (the signing node renews it every third of this while it signs)",
          ),
        maxWait: seconds.default(60).describe("longest `?wait=` a client may ask for, seconds"),
        workers: z
          .number()
          .int()
          .min(0)
          .max(256)
          .optional()
          .describe(
            "signing worker threads: RSA file keys and every PKCS#11 call sign there, off the event loop (Ed25519 file keys sign inline); default the CPU count. 0: RSA on the event loop, for comparison only (PKCS#11 keys need at least 1)",
          ),
        maxPending: z
          .number()
          .int()
          .positive()
          .default(64)
          .describe(
            "uploads being received plus jobs queued or signing on this node; beyond it an upload waits in line (`admissionWaitMs`), then `503 OVERLOADED` (bounds memory, sockets and queueing delay)",
          ),
        maxPendingPerIp: z
          .number()
          .int()
          .positive()
          .default(16)
          .describe(
            "of those, and of the uploads waiting for one, at most this many from one client address (beyond it `503 OVERLOADED` at once)",
          ),
        admissionWaitMs: z
          .number()
          .int()
          .min(0)
          .max(60_000)
          .default(1000)
          .describe(
            "at `maxPending`, how long an upload waits in a FIFO queue for a place before its body is read, then `503 OVERLOADED`, ms; 0 refuses at once. A burst is served in order instead of bounced into retries; a stuck node still sends its clients on within this time",
          ),
        admissionQueueMax: z
          .number()
          .int()
          .min(0)
          .default(256)
          .describe(
            "uploads that may wait for a place at once; beyond it `503 OVERLOADED` at once (each waiter holds a socket and its first buffered bytes, so this bounds their memory)",
          ),
        uploadMinBytesPerSecond: z
          .number()
          .int()
          .min(1)
          .default(8192)
          .describe(
            "an upload slower than this over `uploadRateWindowMs` gets `408 REQUEST_TIMEOUT`: a trickling upload holds a slot and a socket",
          ),
        uploadRateWindowMs: ms
          .default(10_000)
          .describe(
            "the window the upload rate is measured over, and the grace an upload has at its start, ms",
          ),
        uploadIdleTimeoutMs: ms
          .optional()
          .describe("no longer used (`uploadMinBytesPerSecond` replaces it): accepted so old configs start"),
        localResultBytes: z
          .number()
          .int()
          .positive()
          .default(64 * 1024 * 1024)
          .describe("results kept in this node's memory while Redis is unreachable, bytes"),
        keyBreaker: z
          .object({
            errorThresholdPercentage: z
              .number()
              .min(1)
              .max(100)
              .default(50)
              .describe("failed signatures, percent of the calls in the window, that open a key's breaker"),
            volumeThreshold: z
              .number()
              .int()
              .positive()
              .default(3)
              .describe("calls in the window before a key's breaker may open"),
            resetTimeoutMs: ms
              .default(5_000)
              .describe(
                "how long an open key breaker refuses (503 KEY_BACKEND_UNAVAILABLE) before one trial, ms",
              ),
            rollingWindowMs: ms.default(10_000).describe("the window failures are counted over, ms"),
          })
          .strict()
          .prefault({})
          .describe(
            "the breaker of each PKCS#11 key: a failing token answers 503 at once instead of every request waiting on it",
          ),
        spool: z
          .object({
            directory: z
              .string()
              .min(1)
              .optional()
              .describe(
                "where this node keeps the whole-file outputs it signed (embedded formats): a directory of its own, mode 0700, created if missing and emptied of earlier outputs at start. Default: a private temporary directory, removed at stop",
              ),
            maxBytes: z
              .number()
              .int()
              .positive()
              .default(8 * 1024 * 1024 * 1024)
              .describe(
                "the spool's quota, bytes: the least recently used outputs are deleted to stay under it (a client then uploads again)",
              ),
            maxEntries: z
              .number()
              .int()
              .positive()
              .default(10_000)
              .describe("at most this many outputs in the spool; beyond it the least recently used go"),
          })
          .strict()
          .prefault({})
          .describe(
            "the bounded on-disk store of whole-file outputs (docs/operations.md has its sizing); other nodes fetch them from here",
          ),
        formats: z
          .object({
            gpg: gpgFormat.optional(),
            "gpg-clearsign": gpgFormat
              .safeExtend({
                maxSize: z
                  .number()
                  .int()
                  .positive()
                  .default(16 * 1024 * 1024)
                  .describe(
                    "largest text accepted, bytes (413 beyond): the whole text is held in memory while it is signed",
                  ),
              })
              .optional()
              .describe(
                "OpenPGP cleartext signatures (an apt `Release` → `InRelease`): text only, with the same key shapes as gpg (it may be the same key)",
              ),
            sshsig: z
              .object({
                ...formatBase,
                keyFile: z
                  .string()
                  .min(1)
                  .optional()
                  .describe("unencrypted OpenSSH Ed25519 private key (the file backend)"),
                pkcs11: pkcs11Key
                  .safeExtend({
                    comment: z
                      .string()
                      .default("")
                      .describe("comment of the OpenSSH public key line `GET /keys/sshsig` serves"),
                  })
                  .optional()
                  .describe("the key in a PKCS#11 token instead of `keyFile` (the pkcs11 backend)"),
                namespace: z
                  .string()
                  .min(1)
                  .default("file")
                  .describe("the SSHSIG namespace verifiers pass to `ssh-keygen -Y verify -n`"),
              })
              .strict()
              .refine(oneBackend, oneBackendMessage)
              .optional(),
            minisign: z
              .object({
                ...formatBase,
                keyFile: z
                  .string()
                  .min(1)
                  .optional()
                  .describe(
                    "unencrypted PKCS#8 PEM Ed25519 private key (the file backend), e.g. from `openssl genpkey -algorithm ed25519`",
                  ),
                pkcs11: pkcs11Key
                  .optional()
                  .describe("an Ed25519 key in a PKCS#11 token instead of `keyFile` (the pkcs11 backend)"),
              })
              .strict()
              .refine(oneBackend, oneBackendMessage)
              .optional()
              .describe(
                "minisign signatures (pre-hashed Ed25519, `.minisig`); `GET /keys/minisign` serves the public key `minisign -V -p` reads",
              ),
            authenticode: authenticodeFormat
              .optional()
              .describe(
                "Authenticode signatures embedded in Windows files (PE, MSI, CAB, CAT, PowerShell) by `osslsigncode sign`: the output is the whole signed file, served by `GET /sign/authenticode/<digest>` from the node that signed it",
              ),
          })
          .strict()
          .refine((f) => Object.values(f).some((v) => v?.enabled), {
            message: "enable at least one format",
          }),
      })
      .strict(),
    limits: z
      .object({
        tokenPerIp: rateLimit
          .default({ ratePerSecond: 10, burst: 50 })
          .describe("`POST /token` per client address, checked before the password"),
        signPerIp: rateLimit
          .default({ ratePerSecond: 100, burst: 400 })
          .describe("uploads (`POST /sign`) per client address"),
        signPerToken: rateLimit.default({ ratePerSecond: 50, burst: 200 }).describe("uploads per token"),
      })
      .strict()
      .prefault({})
      .describe(
        "per-node request rate limits (token buckets): `429 RATE_LIMITED` with `Retry-After` beyond them",
      ),
    shutdown: z
      .object({
        timeoutMs: ms
          .default(30_000)
          .describe("on SIGTERM, how long jobs in flight may take before the process exits anyway, ms"),
      })
      .strict()
      .prefault({}),
    log: z
      .object({
        level: z
          .enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"])
          .default("info")
          .describe("JSON logs on stdout; tokens, passwords and keys are never logged"),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .refine((c) => c.tls !== undefined || c.node.allowPlaintext, {
    path: ["tls"],
    message: "give tls.cert and tls.key, or set node.allowPlaintext: true (behind a TLS-terminating proxy)",
  });

/**
 * A node's configuration as validated at start-up (defaults filled in); each key is described
 * in the schema above and in docs/configuration.md, generated from it.
 */
export type Config = z.infer<typeof configSchema>;
/** Where a secret is read from: exactly one of a file (mode 0600) or an environment variable. */
export type SecretRef = z.infer<typeof secretRef>;
