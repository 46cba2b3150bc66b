import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/** What the spool gauges read: a structural view, so this leaf needs nothing of the signing layer. */
export interface SpoolLevels {
  readonly usedBytes: number;
  readonly size: number;
}

/** The limit that made the spool evict: `signing_spool_evictions_total{limit}`. */
export type SpoolLimit = "bytes" | "entries";
const SPOOL_LIMITS: readonly SpoolLimit[] = ["bytes", "entries"];

/** Where a whole-file output a client asked for came from: `signing_file_result_fetches_total{result}`. */
export type FileResultSource = "local" | "peer" | "missing" | "unreachable";
const FILE_RESULT_SOURCES: readonly FileResultSource[] = ["local", "peer", "missing", "unreachable"];

/**
 * The sampling interval of `nodejs_eventloop_lag_*` (prom-client's `monitorEventLoopDelay`).
 * Node's histogram records the time between two timer callbacks, so every percentile includes
 * this interval: an idle node reports about 10 ms, and the delay is what lies above it.
 */
export const EVENT_LOOP_SAMPLING_MS = 10;

/**
 * Every metric a signing node exports (DESIGN.md §8). Names and labels are the contract with
 * dashboards and alert rules; label values come from small fixed sets, never ids or IPs.
 */
export class NodeMetrics {
  readonly registry = new Registry();

  readonly tokensIssued = new Counter({
    name: "signing_tokens_issued_total",
    help: "Tokens issued by POST /token.",
    registers: [this.registry],
  });
  readonly tokenChecks = new Counter({
    name: "signing_token_checks_total",
    help: "Token checks by result (valid, healed, degraded, malformed, bad_signature, expired, ip_mismatch, revoked, invalidated, recovering, nonce_mismatch, unavailable).",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });
  readonly requests = new Counter({
    name: "signing_requests_total",
    help: "POST /sign requests by format and outcome (queued, in_progress, cached, rejected, overloaded, unavailable, error).",
    labelNames: ["format", "outcome"] as const,
    registers: [this.registry],
  });
  readonly jobs = new Counter({
    name: "signing_jobs_total",
    help: "Signing jobs run on this node by format and result: signed, failed (ours: a tool, a key or a bug), refused (the format found the content unsignable while signing it: 400 UNSUPPORTED_INPUT).",
    labelNames: ["format", "result"] as const,
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: "signing_duration_seconds",
    help: "From the start of a signing job (upload received, token checked) to its stored signature.",
    labelNames: ["format"] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly bytes = new Counter({
    name: "signing_bytes_total",
    help: "Bytes of input signed.",
    labelNames: ["format"] as const,
    registers: [this.registry],
  });
  readonly cacheHits = new Counter({
    name: "signing_cache_hits_total",
    help: "Uploads answered from an existing result without signing again.",
    labelNames: ["format"] as const,
    registers: [this.registry],
  });
  readonly inflight = new Gauge({
    name: "signing_inflight_jobs",
    help: "Uploads this node is receiving or signing (its share of signing.maxPending).",
    registers: [this.registry],
  });
  readonly admissionWait = new Histogram({
    name: "signing_admission_wait_seconds",
    help: "How long uploads waited for a place in signing.maxPending before being admitted, refused (OVERLOADED) or abandoned by their client; 0 when decided at once.",
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly admissionQueue = new Gauge({
    name: "signing_admission_queue",
    help: "Uploads waiting for a place in signing.maxPending (at most signing.admissionQueueMax).",
    registers: [this.registry],
  });
  readonly workerPoolQueue = new Gauge({
    name: "signing_worker_pool_queue",
    help: "Signatures waiting for a free signing worker thread (RSA file keys, PKCS#11 keys).",
    registers: [this.registry],
  });
  readonly keyExpiry = new Gauge({
    name: "signing_key_expiry_timestamp_seconds",
    help: "When a format's signing key expires (Unix seconds); absent for keys that never do.",
    labelNames: ["format"] as const,
    registers: [this.registry],
  });
  readonly breakerState = new Gauge({
    name: "signing_store_breaker_state",
    help: "Redis circuit breaker state: 0 closed, 1 half-open, 2 open.",
    labelNames: ["breaker"] as const,
    registers: [this.registry],
  });
  readonly breakerEvents = new Counter({
    name: "signing_store_breaker_events_total",
    help: "Redis circuit breaker events (success, failure, timeout, reject, open, half_open, close).",
    labelNames: ["breaker", "event"] as const,
    registers: [this.registry],
  });
  readonly storeCommand = new Histogram({
    name: "signing_store_command_duration_seconds",
    help: "Latency of store operations (one or a few Redis commands each), failures included.",
    labelNames: ["op"] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry],
  });
  readonly storeCorrupt = new Counter({
    name: "signing_store_corrupt_total",
    help: "Store operations that found data we did not write (wrong type, unparsable record, unexpected script reply); each is a 503 STORE_CORRUPT.",
    labelNames: ["op"] as const,
    registers: [this.registry],
  });
  readonly http = new Histogram({
    name: "signing_http_request_duration_seconds",
    help: "HTTP requests by route pattern and status.",
    labelNames: ["route", "status"] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });

  readonly keyOperations = new Counter({
    name: "signing_key_operations_total",
    help: "Raw signatures asked of a format's key (file or pkcs11 backend) by result: ok, unavailable (the backend failed or its breaker refused: 503 KEY_BACKEND_UNAVAILABLE), error (anything else: a bug). Readiness probes are not counted.",
    labelNames: ["format", "backend", "result"] as const,
    registers: [this.registry],
  });
  readonly keyOperationDuration = new Histogram({
    name: "signing_key_operation_duration_seconds",
    help: "Time of one raw signature by a format's key, failures included: tens of microseconds for an Ed25519 file key, up to about 100 ms for RSA in an HSM.",
    labelNames: ["format", "backend"] as const,
    buckets: [
      0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
    ],
    registers: [this.registry],
  });

  /** Read at each scrape: the spool's levels (set by observeSpool). */
  private spool: SpoolLevels | undefined;
  readonly spoolBytes = new Gauge({
    name: "signing_spool_bytes",
    help: "Bytes of whole-file outputs (embedded formats) in this node's spool.",
    registers: [this.registry],
    collect: () => {
      if (this.spool) this.spoolBytes.set(this.spool.usedBytes);
    },
  });
  readonly spoolEntries = new Gauge({
    name: "signing_spool_entries",
    help: "Whole-file outputs in this node's spool (at most signing.spool.maxEntries).",
    registers: [this.registry],
    collect: () => {
      if (this.spool) this.spoolEntries.set(this.spool.size);
    },
  });
  readonly spoolQuota = new Gauge({
    name: "signing_spool_quota_bytes",
    help: "The spool's quota, signing.spool.maxBytes: outputs beyond it evict the least recently used.",
    registers: [this.registry],
  });
  readonly spoolEvictions = new Counter({
    name: "signing_spool_evictions_total",
    help: "Outputs deleted from the spool to make room, by the limit that was reached (bytes: signing.spool.maxBytes, entries: signing.spool.maxEntries); a client asking for one later gets 404 and uploads again.",
    labelNames: ["limit"] as const,
    registers: [this.registry],
  });
  readonly fileResultFetches = new Counter({
    name: "signing_file_result_fetches_total",
    help: "GET /sign of a whole-file output by where it came from: local (this node's spool), peer (streamed from the node that signed it), missing (that node no longer has it: evicted, restarted, damaged; 404), unreachable (that node did not answer, refused the internal credential, or no node.internalSecret; 404).",
    labelNames: ["format", "result"] as const,
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLING_MS });
  }

  /** Reports a spool's use at every scrape, against its quota; its eviction series at zero. */
  observeSpool(spool: SpoolLevels, quotaBytes: number): void {
    this.spool = spool;
    this.spoolQuota.set(quotaBytes);
    for (const limit of SPOOL_LIMITS) this.spoolEvictions.inc({ limit }, 0);
  }

  /** The whole-file result series of the embedded formats at zero, for the same reason as initialise. */
  initialiseFileResults(formats: Iterable<string>): void {
    for (const format of formats)
      for (const result of FILE_RESULT_SOURCES) this.fileResultFetches.inc({ format, result }, 0);
  }

  /** One raw signature by a format's key, and how it ended. */
  keyOperation(format: string, backend: string, result: string, seconds: number): void {
    this.keyOperations.inc({ format, backend, result });
    this.keyOperationDuration.observe({ format, backend }, seconds);
  }

  /** The key operation series of each format's key at zero, for the same reason as initialise. */
  initialiseKeys(backends: Iterable<[format: string, backend: string]>, results: readonly string[]): void {
    for (const [format, backend] of backends) {
      for (const result of results) this.keyOperations.inc({ format, backend, result }, 0);
      this.keyOperationDuration.zero({ format, backend });
    }
  }

  /**
   * Exports every known label combination at zero from the start, so rates and ratios have
   * series to work on before the first event (an absent series is not a zero in PromQL).
   */
  initialise(formats: readonly string[], tokenResults: readonly string[], breakers: readonly string[]): void {
    for (const result of tokenResults) this.tokenChecks.inc({ result }, 0);
    for (const format of formats) {
      for (const outcome of [
        "queued",
        "in_progress",
        "cached",
        "rejected",
        "rate_limited",
        "overloaded",
        "unavailable",
        "error",
      ]) {
        this.requests.inc({ format, outcome }, 0);
      }
      for (const result of ["signed", "failed", "refused"]) this.jobs.inc({ format, result }, 0);
      this.bytes.inc({ format }, 0);
      this.cacheHits.inc({ format }, 0);
    }
    for (const breaker of breakers) {
      for (const event of ["success", "failure", "timeout", "reject", "open", "half_open", "close"]) {
        this.breakerEvents.inc({ breaker, event }, 0);
      }
    }
  }
}
