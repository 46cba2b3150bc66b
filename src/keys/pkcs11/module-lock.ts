/**
 * One PKCS#11 module is initialized once per process, but every signing worker thread holds
 * its own sessions in it. Calls share the module (a read lock); C_Initialize and C_Finalize
 * take it alone (the write lock), so no thread is inside C_Sign while another finalizes. The
 * lock lives in a SharedArrayBuffer the main thread hands every worker; its generation counts
 * re-initializations, so a thread knows its session handles died with the last C_Finalize.
 */
const READERS = 0;
const WRITER = 1;
const GENERATION = 2;
const INITIALIZED = 3;
const SLOTS = 4;
// Waits re-check at this period as well as on notify: a lost wake-up costs a few ms, never a hang.
const RECHECK_MS = 20;

/** The shared memory of one module's lock: made once per module path in the main thread. */
export function newModuleLockBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(SLOTS * Int32Array.BYTES_PER_ELEMENT);
}

export class ModuleLock {
  private readonly cells: Int32Array;
  constructor(buffer: SharedArrayBuffer) {
    this.cells = new Int32Array(buffer);
  }

  get generation(): number {
    return Atomics.load(this.cells, GENERATION);
  }

  get initialized(): boolean {
    return Atomics.load(this.cells, INITIALIZED) === 1;
  }

  /** Runs fn while no thread re-initializes the module; fn may run beside other threads' calls. */
  shared<T>(fn: () => T): T {
    const c = this.cells;
    for (;;) {
      while (Atomics.load(c, WRITER) !== 0) Atomics.wait(c, WRITER, 1, RECHECK_MS);
      Atomics.add(c, READERS, 1);
      if (Atomics.load(c, WRITER) === 0) break;
      this.leaveShared();
    }
    try {
      return fn();
    } finally {
      this.leaveShared();
    }
  }

  /** Runs fn alone: after every call in flight has returned, before any other starts. */
  exclusive<T>(fn: (lock: { setInitialized(on: boolean): void }) => T): T {
    const c = this.cells;
    while (Atomics.compareExchange(c, WRITER, 0, 1) !== 0) Atomics.wait(c, WRITER, 1, RECHECK_MS);
    try {
      for (let r = Atomics.load(c, READERS); r !== 0; r = Atomics.load(c, READERS))
        Atomics.wait(c, READERS, r, RECHECK_MS);
      return fn({
        setInitialized: (on) => {
          Atomics.store(c, INITIALIZED, on ? 1 : 0);
          if (!on) Atomics.add(c, GENERATION, 1);
        },
      });
    } finally {
      Atomics.store(c, WRITER, 0);
      Atomics.notify(c, WRITER);
    }
  }

  private leaveShared(): void {
    Atomics.sub(this.cells, READERS, 1);
    Atomics.notify(this.cells, READERS);
  }
}
