import CircuitBreaker from "opossum";
import type { Logger } from "pino";
import { KeyBackendUnavailableError, type SigningKey } from "./key.js";

/** How a key backend's breaker opens and tries again (signing.keyBreaker). */
export interface KeyBreakerSettings {
  /** Failures, as a percentage of the calls in the window, that open it. */
  errorThresholdPercentage: number;
  /** Calls in the window before it may open. */
  volumeThreshold: number;
  /** How long it stays open before one trial call. */
  resetTimeoutMs: number;
  rollingWindowMs: number;
}

type Sign = (input: Buffer) => Promise<Buffer>;

function probeInput(key: SigningKey): Buffer {
  // A 32-byte input is a SHA-256 digest for ECDSA and RSA, and a short message for Ed25519.
  return Buffer.alloc(key.algorithm === "ed25519" ? 16 : 32, 0x5a);
}

/**
 * A key whose every signature goes through its own opossum breaker: once its backend fails
 * (a token removed, an HSM unreachable), calls fail at once with KeyBackendUnavailableError
 * instead of each waiting out the failure, and one trial call after `resetTimeoutMs` (a real
 * signature, or readiness's probe) closes it again when the backend is back. File keys do not
 * need one: they are in memory and cannot fail at run time.
 */
export function withBreaker(key: SigningKey, format: string, s: KeyBreakerSettings, log: Logger): SigningKey {
  const breaker = new CircuitBreaker<[Sign, Buffer], Buffer>((sign: Sign, input: Buffer) => sign(input), {
    name: `key_${format}`,
    // The backend's own call timeout (pkcs11 timeoutMs) bounds each call; opossum adds none.
    timeout: false,
    errorThresholdPercentage: s.errorThresholdPercentage,
    volumeThreshold: s.volumeThreshold,
    resetTimeout: s.resetTimeoutMs,
    rollingCountTimeout: s.rollingWindowMs,
    rollingPercentilesEnabled: false,
    enableSnapshots: false,
  });
  let lastFailure = "";
  breaker.on("failure", (err: Error) => {
    lastFailure = err?.message ?? String(err);
    log.error({ event: "key_backend_failure", format, key: key.location, err: lastFailure });
  });
  breaker.on("open", () =>
    log.warn({ event: "key_breaker_open", format, key: key.location, err: lastFailure }),
  );
  breaker.on("close", () => log.info({ event: "key_breaker_closed", format, key: key.location }));
  const sign = (input: Buffer) => key.sign(input);
  const guardedSign = async (input: Buffer): Promise<Buffer> => {
    try {
      return await breaker.fire(sign, input);
    } catch (err) {
      const reason = breaker.opened ? `breaker open after: ${lastFailure}` : (err as Error).message;
      throw new KeyBackendUnavailableError(key.location, reason);
    }
  };
  return {
    ...key,
    publicKey: key.publicKey,
    sign: guardedSign,
    available: () => !breaker.opened,
    async check() {
      try {
        await guardedSign(probeInput(key));
        return { ok: true, detail: `${key.backend} key signs` };
      } catch (err) {
        return { ok: false, detail: (err as Error).message };
      }
    },
    close: () => {
      breaker.shutdown();
      return key.close();
    },
  };
}
