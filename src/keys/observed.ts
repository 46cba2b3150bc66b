import { KeyBackendUnavailableError, type SigningKey } from "./key.js";

/**
 * How one raw signature ended (the `result` of signing_key_operations_total): `ok`, a signature;
 * `unavailable`, the backend failed or its breaker refused the call (the request was answered
 * 503 KEY_BACKEND_UNAVAILABLE); `error`, anything else, which is a bug.
 */
export type KeyOperationResult = "ok" | "unavailable" | "error";

export const KEY_OPERATION_RESULTS: readonly KeyOperationResult[] = ["ok", "unavailable", "error"];

/** Told of every raw signature a key makes or fails to make, and how long it took. */
export type KeyOperationObserver = (result: KeyOperationResult, seconds: number) => void;

/** Wraps a key as it is loaded (e.g. to observe it); the identity by default. */
export type KeyWrapper = (key: SigningKey) => SigningKey;

export const asIs: KeyWrapper = (key) => key;

function resultOf(err: unknown): KeyOperationResult {
  return err instanceof KeyBackendUnavailableError ? "unavailable" : "error";
}

/**
 * A key whose every signature is reported to `observe`. Around the breaker, not inside it: a
 * call the open breaker refuses in microseconds is a failed signature for the request that made
 * it, so it counts. Readiness probes (`check`) are not signatures anyone asked for: not counted.
 */
export function observed(key: SigningKey, observe: KeyOperationObserver): SigningKey {
  return {
    backend: key.backend,
    algorithm: key.algorithm,
    publicKey: key.publicKey,
    location: key.location,
    async sign(input: Buffer): Promise<Buffer> {
      const started = process.hrtime.bigint();
      const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
      try {
        const signature = await key.sign(input);
        observe("ok", seconds());
        return signature;
      } catch (err) {
        observe(resultOf(err), seconds());
        throw err;
      }
    },
    available: () => key.available(),
    check: () => key.check(),
    close: () => key.close(),
  };
}
