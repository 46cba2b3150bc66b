import { Worker } from "node:worker_threads";
import type { PoolMessage, PoolReply, PoolRequest, PoolResults } from "./pool-protocol.js";

type Op = PoolRequest["op"];
type RequestOf<K extends Op> = Extract<PoolRequest, { op: K }>;

interface Task {
  request: PoolRequest;
  timeoutMs: number | undefined;
  resolve(v: unknown): void;
  reject(e: Error): void;
}

/** One thread and what it was asked and has not answered yet. */
interface Thread {
  worker: Worker;
  pending: Map<number, Task & { timer: NodeJS.Timeout | undefined }>;
  /** A task from the queue is in it: the next one waits for another thread. */
  busy: boolean;
}

/**
 * The node's signing worker threads (DESIGN.md §6, "Off the event loop"): RSA with file keys
 * and every PKCS#11 call run here, one at a time per thread, taken from one FIFO queue, so a
 * burst of slow signatures never stalls health checks, metrics or other requests. Keys are
 * opened in every thread (each PKCS#11 key gets a session per thread); a thread that dies is
 * replaced, the keys opened again in it, and the task it held fails (the caller answers 503
 * KEY_BACKEND_UNAVAILABLE, retryable), never a bad signature.
 */
export class SigningPool {
  private readonly threads: Thread[] = [];
  private readonly queue: Task[] = [];
  /** What each open key asked of every thread, replayed into a thread that replaces a dead one. */
  private readonly opens = new Map<number, PoolRequest>();
  private nextId = 0;
  private nextKey = 0;
  private closed = false;
  private queueListener: (waiting: number) => void = () => {};

  constructor(readonly size: number) {
    for (let i = 0; i < size; i++) this.threads.push(this.start(i));
  }

  /** A key number, unique in this pool, for a key about to be opened in it. */
  newKeyId(): number {
    return this.nextKey++;
  }

  /** Tasks waiting for a free thread. */
  get waiting(): number {
    return this.queue.length;
  }

  /** Told the number of waiting tasks whenever it changes (the signing_worker_pool_queue gauge). */
  onQueueChange(listener: (waiting: number) => void): void {
    this.queueListener = listener;
  }

  /** The threads now serving, for tests that kill one. */
  get workers(): readonly Worker[] {
    return this.threads.map((t) => t.worker);
  }

  /**
   * One task on the first free thread, in arrival order. Rejects with a plain Error (the
   * reason) when the thread fails it, dies, or takes longer than timeoutMs once started (the
   * thread is then replaced: it may be stuck in a module call).
   */
  run<K extends Op>(request: RequestOf<K>, timeoutMs?: number): Promise<PoolResults[K]> {
    if (this.closed) return Promise.reject(new Error("the signing pool is closed"));
    return new Promise((resolve, reject) => {
      this.queue.push({ request, timeoutMs, resolve: resolve as (v: unknown) => void, reject });
      this.dispatch();
    });
  }

  /**
   * The same request to every thread now, ahead of the queue (a thread answers it after the
   * task it is busy with); `remember` replays it into threads that replace dead ones.
   */
  async everyThread<K extends Op>(
    request: RequestOf<K>,
    opts: { timeoutMs?: number; remember?: number } = {},
  ): Promise<PoolResults[K][]> {
    if (this.closed) throw new Error("the signing pool is closed");
    if (opts.remember !== undefined) this.opens.set(opts.remember, request);
    const answers = this.threads.map(
      (thread) =>
        new Promise<unknown>((resolve, reject) =>
          this.post(thread, { request, timeoutMs: opts.timeoutMs, resolve, reject }),
        ),
    );
    return (await Promise.all(answers)) as PoolResults[K][];
  }

  /** Stops replaying a key's open into new threads (the key is being closed). */
  forget(key: number): void {
    this.opens.delete(key);
  }

  /** Ends every thread; tasks still waiting fail. Close the keys first. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const task of this.queue.splice(0)) task.reject(new Error("the signing pool is closed"));
    this.queueListener(0);
    await Promise.all(this.threads.map((t) => t.worker.terminate()));
  }

  private start(index: number): Thread {
    const worker = new Worker(new URL("./pool-worker.js", import.meta.url));
    const thread: Thread = { worker, pending: new Map(), busy: false };
    // The node closes the pool on shutdown; a pool someone forgot must not keep a process alive.
    worker.unref();
    worker.on("message", (reply: PoolReply) => this.settle(thread, reply));
    let failure = "";
    worker.on("error", (err) => {
      failure = `: ${err.message}`;
    });
    worker.on("exit", (code) =>
      this.replace(index, thread, `the signing worker exited (code ${code})${failure}`),
    );
    for (const request of this.opens.values())
      this.post(thread, { request, timeoutMs: undefined, resolve: () => {}, reject: () => {} });
    return thread;
  }

  /** A dead thread's tasks fail; a new thread takes its place with the keys opened again. */
  private replace(index: number, dead: Thread, reason: string): void {
    // The new thread first: failing the dead one's tasks dispatches the next ones.
    if (!this.closed && this.threads[index] === dead) this.threads[index] = this.start(index);
    const tasks = [...dead.pending.values()];
    dead.pending.clear();
    for (const task of tasks) task.reject(new Error(reason));
    this.dispatch();
  }

  private dispatch(): void {
    for (const thread of this.threads) {
      if (this.queue.length === 0) break;
      if (thread.busy) continue;
      const task = this.queue.shift() as Task;
      thread.busy = true;
      this.post(thread, task, true);
    }
    this.queueListener(this.queue.length);
  }

  private post(thread: Thread, task: Task, fromQueue = false): void {
    const id = this.nextId++;
    const timer =
      task.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            thread.pending.delete(id);
            task.reject(new Error(`no answer from the signing worker in ${task.timeoutMs} ms`));
            // Stuck, probably in a module call: its replacement takes the next task.
            void thread.worker.terminate();
          }, task.timeoutMs);
    const done = (settle: () => void) => {
      clearTimeout(timer);
      if (fromQueue) thread.busy = false;
      settle();
      if (fromQueue) this.dispatch();
    };
    thread.pending.set(id, {
      ...task,
      timer,
      resolve: (v) => done(() => task.resolve(v)),
      reject: (e) => done(() => task.reject(e)),
    });
    thread.worker.postMessage({ ...task.request, id } as PoolMessage);
  }

  private settle(thread: Thread, reply: PoolReply): void {
    const task = thread.pending.get(reply.id);
    if (!task) return;
    thread.pending.delete(reply.id);
    if ("error" in reply) task.reject(new Error(reply.error));
    else task.resolve(reply.result);
  }
}
