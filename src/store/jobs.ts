import { StoreCorruptError } from "./errors.js";
import type { StoreKeys } from "./keys.js";
import type { RedisClient } from "./redis.js";
import { LuaScript } from "./script.js";

/** A signed output and what it was made with. */
export interface SignedResult {
  output: Buffer;
  /** Fingerprint of the key that made it: a result from another key is not a cache hit. */
  fingerprint: string;
}

/**
 * A whole-file output (embedded formats): too large for Redis, it stays on the disk of the
 * node that signed it, and its record names that node and the output's digests.
 */
export interface FileResult {
  /** Fingerprint of the key that made it. */
  fingerprint: string;
  /** The advertised URL of the node holding the output. */
  owner: string;
  /** Of the output, for X-SHA1-Digest and X-SHA256-Digest and to check what is served. */
  sha1: string;
  sha256: string;
  size: number;
}

export type JobState = { state: "pending"; node: string } | { state: "failed"; node: string; error: string };

export type Lookup =
  | { kind: "signed"; result: SignedResult }
  | { kind: "file"; file: FileResult }
  | { kind: "job"; job: JobState }
  | { kind: "none" };

const FAILED_JOB_TTL_MS = 60_000;

/** A job record as we write it; anything else is StoreCorruptError. */
function parseJob(key: string, text: string): JobState {
  let job: unknown;
  try {
    job = JSON.parse(text);
  } catch {
    throw new StoreCorruptError(key, "a job record that is not JSON");
  }
  const j = job as Partial<Record<string, unknown>> | null;
  const ok =
    typeof j?.node === "string" &&
    (j.state === "pending" || (j.state === "failed" && typeof j.error === "string"));
  if (!ok) throw new StoreCorruptError(key, "a job record without a valid state and node");
  return job as JobState;
}

/** Each field of a file result, and the shape its value must have. */
const FILE_FIELDS: Readonly<Record<keyof FileResult, RegExp>> = {
  fingerprint: /^\S{1,200}$/,
  owner: /^https?:\/\/[^\s/]+$/,
  sha1: /^[0-9a-f]{40}$/,
  sha256: /^[0-9a-f]{64}$/,
  size: /^(0|[1-9][0-9]{0,15})$/,
};

/** A file result's record as we write it: exactly these fields, each well formed; anything else is StoreCorruptError. */
function parseFileResult(key: string, hash: Record<string, Buffer>): FileResult {
  const fields = Object.keys(hash);
  const expected = Object.keys(FILE_FIELDS) as (keyof FileResult)[];
  if (fields.length !== expected.length || !fields.every((f) => f in FILE_FIELDS))
    throw new StoreCorruptError(key, `a file result with fields ${fields.sort().join(",")}`);
  const text = (name: keyof FileResult) => hash[name]?.toString("utf8") ?? "";
  for (const name of expected)
    if (!FILE_FIELDS[name].test(text(name)))
      throw new StoreCorruptError(key, `a file result with a malformed ${name}`);
  return {
    fingerprint: text("fingerprint"),
    owner: text("owner"),
    sha1: text("sha1"),
    sha256: text("sha256"),
    size: Number(text("size")),
  };
}

/** A result hash: `{output, fingerprint}` inline, or a file result naming its owner. */
function parseResult(key: string, hash: Record<string, Buffer>): Lookup | undefined {
  if (hash.owner !== undefined) return { kind: "file", file: parseFileResult(key, hash) };
  const { output, fingerprint } = hash;
  return output && fingerprint
    ? { kind: "signed", result: { output, fingerprint: fingerprint.toString() } }
    : undefined;
}

/**
 * A file result replaces whatever result the key held, with a TTL, and ends the job: one
 * script, like STORE_RESULT. ARGV: fingerprint, owner, sha1, sha256, size, ttl.
 */
const STORE_FILE_RESULT = new LuaScript(
  "signingStoreFileResult",
  2,
  `
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'owner', ARGV[2], 'sha1', ARGV[3], 'sha256', ARGV[4], 'size', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('DEL', KEYS[2])
return 1
`,
);

/**
 * Deletes a file result only while it still names the owner and output that could not be
 * served: a newer result (another node signed the input again) is left alone.
 */
const DROP_FILE_RESULT = new LuaScript(
  "signingDropFileResult",
  1,
  `
local owner, sha256 = unpack(redis.call('HMGET', KEYS[1], 'owner', 'sha256'))
if owner == ARGV[1] and sha256 == ARGV[2] then return redis.call('DEL', KEYS[1]) end
return 0
`,
);

/**
 * A result is a hash {output, fingerprint} with a TTL, as every node version reads it: one
 * script sets both atomically (MULTI, HSET, EXPIRE, EXEC took four commands) and, given the
 * job key as KEYS[2], ends the job in the same step.
 */
const STORE_RESULT = new LuaScript(
  "signingStoreResult",
  2,
  `
redis.call('HSET', KEYS[1], 'output', ARGV[1], 'fingerprint', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[2])
return 1
`,
);

/**
 * Extends a lease while it is still this node's (the job value is the node's own pending
 * record): a run of a tool on a large file may outlast one lease, and another node must not
 * take the job meanwhile. ARGV: the pending record, the lease in ms.
 */
const RENEW_LEASE = new LuaScript(
  "signingRenewLease",
  1,
  `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`,
);

/** The job record of a lease `node` holds: the value claim writes and renew compares. */
const pendingJob = (node: string) => JSON.stringify({ state: "pending", node } satisfies JobState);

/**
 * Jobs and results live in Redis, not in the node, so a client may upload to one node and
 * poll another. A job key is a lease: a node signs within milliseconds of taking it (and renews
 * it while a longer signing runs), and when the node dies it expires and the next upload of the
 * same file starts over.
 */
export class JobStore {
  constructor(
    private readonly client: RedisClient,
    private readonly keys: StoreKeys,
    private readonly resultTtlSeconds: number,
  ) {}

  /** Finds the sha256 behind a sha1 (classic clients poll by sha1). */
  async resolveSha1(format: string, sha1: string): Promise<string | undefined> {
    const key = this.keys.sha1Alias(format, sha1);
    const sha256 = await this.client.get(key);
    if (sha256 !== null && !/^[0-9a-f]{64}$/.test(sha256)) throw new StoreCorruptError(key, "not a sha256");
    return sha256 ?? undefined;
  }

  async lookup(format: string, sha256: string, fingerprint: string): Promise<Lookup> {
    const [result, job] = await Promise.all([
      this.signedResult(format, sha256, fingerprint),
      this.client.get(this.keys.job(format, sha256)),
    ]);
    if (result) return result;
    if (job) return { kind: "job", job: parseJob(this.keys.job(format, sha256), job) };
    return { kind: "none" };
  }

  /** The stored result, if there is one made with the key of `fingerprint`. */
  private async signedResult(format: string, sha256: string, fingerprint: string) {
    const key = this.keys.result(format, sha256);
    const found = parseResult(key, await this.client.hgetallBuffer(key));
    if (found?.kind === "file") return found.file.fingerprint === fingerprint ? found : undefined;
    return found?.kind === "signed" && found.result.fingerprint === fingerprint ? found : undefined;
  }

  /** Takes the lease on signing this input; false when another node holds it. */
  async claim(
    format: string,
    sha256: string,
    node: string,
    leaseMs: number,
    sha1?: string,
  ): Promise<boolean> {
    const [claimed] = await Promise.all([
      this.client.set(this.keys.job(format, sha256), pendingJob(node), "PX", leaseMs, "NX"),
      sha1 ? this.aliasSha1(format, sha1, sha256) : undefined,
    ]);
    return claimed === "OK";
  }

  /** Renews `node`'s lease on a job it still holds; false when the job is no longer its own. */
  async renew(format: string, sha256: string, node: string, leaseMs: number): Promise<boolean> {
    const key = this.keys.job(format, sha256);
    return (await RENEW_LEASE.run(this.client, [key], [pendingJob(node), leaseMs])) === 1;
  }

  /**
   * An upload's first step, in one round trip: reads the result and tries to take the job at
   * the same time. A lease taken for an input that turns out to be signed is given back.
   */
  async lookupOrClaim(
    format: string,
    sha256: string,
    fingerprint: string,
    node: string,
    leaseMs: number,
    sha1?: string,
  ): Promise<Lookup | { kind: "claimed" }> {
    const [result, claimed] = await Promise.all([
      this.signedResult(format, sha256, fingerprint),
      this.claim(format, sha256, node, leaseMs, sha1),
    ]);
    if (result) {
      if (claimed) await this.release(format, sha256);
      return result;
    }
    if (claimed) return { kind: "claimed" };
    const job = await this.client.get(this.keys.job(format, sha256));
    return job ? { kind: "job", job: parseJob(this.keys.job(format, sha256), job) } : { kind: "none" };
  }

  /** Lets a classic client find this input's job and result by its sha1. */
  async aliasSha1(format: string, sha1: string, sha256: string): Promise<void> {
    await this.client.set(this.keys.sha1Alias(format, sha1), sha256, "EX", this.resultTtlSeconds);
  }

  async complete(format: string, sha256: string, result: SignedResult): Promise<void> {
    const resultKey = this.keys.result(format, sha256);
    const args = [result.output, result.fingerprint, this.resultTtlSeconds];
    // Result and job end in one atomic step, one round trip.
    await STORE_RESULT.run(this.client, [resultKey, this.keys.job(format, sha256)], args);
  }

  /** Records a whole-file output held by `file.owner`, ending the job in the same step. */
  async completeFile(format: string, sha256: string, file: FileResult): Promise<void> {
    const { fingerprint, owner, sha1, sha256: outputSha256, size } = file;
    const args = [fingerprint, owner, sha1, outputSha256, size, this.resultTtlSeconds];
    await STORE_FILE_RESULT.run(
      this.client,
      [this.keys.result(format, sha256), this.keys.job(format, sha256)],
      args,
    );
  }

  /** Forgets a file result its owner no longer has, so the next upload signs the input again. */
  async dropFile(format: string, sha256: string, file: FileResult): Promise<void> {
    await DROP_FILE_RESULT.run(this.client, [this.keys.result(format, sha256)], [file.owner, file.sha256]);
  }

  async release(format: string, sha256: string): Promise<void> {
    await this.client.del(this.keys.job(format, sha256));
  }

  async fail(format: string, sha256: string, node: string, error: string): Promise<void> {
    const job: JobState = { state: "failed", node, error };
    await this.client.set(this.keys.job(format, sha256), JSON.stringify(job), "PX", FAILED_JOB_TTL_MS);
  }
}
