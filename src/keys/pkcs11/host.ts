import { Worker } from "node:worker_threads";
import type { Reply, Request } from "./worker.js";

type Call = Request extends infer R ? (R extends Request ? Omit<R, "id"> : never) : never;

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

/**
 * The main-thread side of one PKCS#11 module's worker thread. One per module path in the
 * process (nodes started in one process share it), because C_Initialize and C_Finalize are
 * per process; it ends when its last key is closed.
 */
export class Pkcs11Host {
  private static readonly hosts = new Map<string, Pkcs11Host>();
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private users = 0;
  private dead: string | undefined;

  private constructor(private readonly modulePath: string) {
    this.worker = new Worker(new URL("./worker.js", import.meta.url), { workerData: { modulePath } });
    // Keys are closed on shutdown; a forgotten one must not keep the process alive.
    this.worker.unref();
    this.worker.on("message", (reply: Reply) => this.settle(reply));
    this.worker.on("error", (err) => this.fail(`the PKCS#11 worker failed: ${err.message}`));
    this.worker.on("exit", (code) => this.fail(`the PKCS#11 worker exited (code ${code})`));
  }

  /** The host of `modulePath`, started on first use; call release() once per acquire. */
  static acquire(modulePath: string): Pkcs11Host {
    let host = Pkcs11Host.hosts.get(modulePath);
    if (!host || host.dead) {
      host = new Pkcs11Host(modulePath);
      Pkcs11Host.hosts.set(modulePath, host);
    }
    host.users++;
    return host;
  }

  async release(): Promise<void> {
    if (--this.users > 0) return;
    if (Pkcs11Host.hosts.get(this.modulePath) === this) Pkcs11Host.hosts.delete(this.modulePath);
    this.dead ??= "closed";
    await this.worker.terminate();
  }

  /** One request to the worker; rejects with the worker's reason, or when it takes longer than timeoutMs. */
  call<T>(request: Call, timeoutMs: number): Promise<T> {
    if (this.dead) return Promise.reject(new Error(this.dead));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`no answer from the PKCS#11 module in ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.worker.postMessage({ ...request, id });
    });
  }

  private settle(reply: Reply): void {
    const p = this.pending.get(reply.id);
    if (!p) return;
    this.pending.delete(reply.id);
    clearTimeout(p.timer);
    if ("error" in reply) p.reject(new Error(reply.error));
    else p.resolve(reply.result);
  }

  private fail(reason: string): void {
    this.dead ??= reason;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new Error(reason));
    }
    this.pending.clear();
  }
}
