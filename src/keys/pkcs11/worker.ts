/**
 * The thread a PKCS#11 module runs in (host.ts starts it). Messages are handled one at a time,
 * synchronously: a PKCS#11 session does one operation at a time, and every blocking call stays
 * off the node's event loop.
 */
import { parentPort, workerData } from "node:worker_threads";
import { ModuleSessions, Pkcs11Failure, type Pkcs11KeySpec } from "./token.js";

/** What the main thread asks the PKCS#11 worker: each carries an id its answer repeats. */
export type Request =
  | { id: number; op: "open"; spec: Pkcs11KeySpec }
  | { id: number; op: "sign"; key: number; input: Uint8Array }
  | { id: number; op: "close"; key: number };

export type Reply = { id: number; result: unknown } | { id: number; error: string };

const port = parentPort;
if (port) {
  const sessions = new ModuleSessions((workerData as { modulePath: string }).modulePath);
  port.on("message", (m: Request) => {
    try {
      const result =
        m.op === "open"
          ? sessions.open(m.spec)
          : m.op === "sign"
            ? sessions.sign(m.key, Buffer.from(m.input))
            : sessions.close(m.key);
      port.postMessage({ id: m.id, result } satisfies Reply);
    } catch (err) {
      const reason = err instanceof Pkcs11Failure ? err.message : `unexpected: ${(err as Error).message}`;
      port.postMessage({ id: m.id, error: reason } satisfies Reply);
    }
  });
}
