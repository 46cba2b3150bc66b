import { join } from "node:path";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { type LoadResult, SigningLoad, startAtNode } from "../scripts/signing-load.js";

/**
 * SigningLoad on a worker thread: the build machines' clients get a V8 isolate of their own.
 * On the main thread they shared their JIT state with the harness, which kills and restarts
 * Redis (child-process pipes), pipes the nodes' logs to files and polls the monitor: at a fault
 * that code deoptimised node's stream and HTTP functions the clients run too ("wrong map" in
 * `--trace-deopt`), and the clients' CPU per signature rose for seconds: a cost of the
 * benchmark, not of the cluster; real build machines run on machines of their own.
 */
export interface WorkerLoadOptions {
  dir: string;
  nodes: string[];
  /** One per client; client i starts its rotation at node i mod nodes (startAtNode). */
  clients: { tokenFile: string; nonceFile: string }[];
  /** The format every client signs (default gpg). */
  format?: string;
}

export class WorkerLoad {
  private readonly signedCount: Int32Array;
  private readonly done: Promise<LoadResult>;

  constructor(
    private readonly worker: Worker,
    shared: SharedArrayBuffer,
  ) {
    this.signedCount = new Int32Array(shared);
    this.done = new Promise((resolve, reject) => {
      worker.once("message", (r: LoadResult) => resolve(r));
      worker.once("error", reject);
      worker.once("exit", (code) => reject(new Error(`load worker exited (${code}) before its result`)));
    });
    // An error before stop() must not go unhandled while nobody awaits `done` yet.
    this.done.catch(() => {});
  }

  static start(opts: WorkerLoadOptions): WorkerLoad {
    const shared = new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT);
    const worker = new Worker(new URL(import.meta.url), { workerData: { opts, shared } });
    return new WorkerLoad(worker, shared);
  }

  /** Signed so far, read without disturbing the worker. */
  get signed(): number {
    return Atomics.load(this.signedCount, 0);
  }

  async stop(): Promise<LoadResult> {
    this.worker.postMessage("stop");
    const r = await this.done;
    await this.worker.terminate();
    return r;
  }
}

if (!isMainThread && workerData?.shared instanceof SharedArrayBuffer) {
  const { opts, shared } = workerData as { opts: WorkerLoadOptions; shared: SharedArrayBuffer };
  const signedCount = new Int32Array(shared);
  const load = new SigningLoad(
    join(opts.dir, "load"),
    opts.clients.map((c, i) => ({ ...c, random: startAtNode(i, opts.nodes.length) })),
    { nodes: opts.nodes, maxTimeMs: 30_000, requestTimeoutMs: 10_000 },
    opts.format ? { format: opts.format } : {},
  );
  const publish = setInterval(() => Atomics.store(signedCount, 0, load.result.signed), 20);
  parentPort?.once("message", async () => {
    clearInterval(publish);
    parentPort?.postMessage(await load.stop());
  });
}
