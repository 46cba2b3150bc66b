import { availableParallelism } from "node:os";
import { Piscina } from "piscina";
import type { EnabledKeys } from "./registry.js";
import type { SignTask } from "./worker.js";

/** Signing runs on worker threads so the event loop keeps serving health checks and metrics. */
export class SignerPool {
  private readonly piscina: Piscina<SignTask, Uint8Array>;

  constructor(keys: EnabledKeys, threads = availableParallelism()) {
    this.piscina = new Piscina({
      filename: new URL("./worker.js", import.meta.url).href,
      workerData: keys,
      minThreads: threads,
      maxThreads: threads,
    });
  }

  async sign(task: SignTask): Promise<Buffer> {
    const out = await this.piscina.run(task);
    return Buffer.from(out.buffer, out.byteOffset, out.byteLength);
  }

  /** Worker threads alive now. */
  get threads(): number {
    return this.piscina.threads.length;
  }

  get queued(): number {
    return this.piscina.queueSize;
  }

  close(): Promise<void> {
    return this.piscina.close();
  }
}
