/**
 * What the machine gives right now, so the other benchmarks' figures can be read: its CPU, the
 * cost of touching fresh memory (a page fault per 4 KiB page), copying warm memory, native
 * SHA-256, a system call, a loopback TCP round trip between two node sockets, and the CPU of a small file
 * written atomically (what signtool does twice per signature) on the disk and in the benchmark
 * clients' directory. On a shared VM the figures that allocate (HTTP, GC, socket buffers) move
 * between runs with the cost of a fresh page while SHA-256 and gpg do not: run it before
 * comparing two runs of anything else.
 *
 *   node dist/bench/machine.js        BENCH_ROUNDS=5
 */
import { createHash } from "node:crypto";
import { once } from "node:events";
import { closeSync, fstatSync, openSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { createConnection, createServer } from "node:net";
import { cpus, tmpdir } from "node:os";
import {
  atomicWriteCpuMicros,
  CLIENT_PARENT_DIR,
  fmt,
  freshPageMicros,
  main,
  printTable,
  writeResult,
} from "./lib.js";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const MiB = 1024 * 1024;

function warmCopyGBps(bytes: number): number {
  const from = Buffer.alloc(bytes, 1);
  const to = Buffer.alloc(bytes, 2);
  from.copy(to); // both mapped before the clock starts
  const n = 8;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) from.copy(to);
  return (n * bytes) / 1e9 / ((performance.now() - t0) / 1000);
}

function sha256MBps(bytes: number): number {
  const data = Buffer.alloc(bytes, 3);
  createHash("sha256").update(data).digest(); // warm
  const n = 4;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) createHash("sha256").update(data).digest();
  return (n * bytes) / 1e6 / ((performance.now() - t0) / 1000);
}

/**
 * µs per `fstat` of an open file from node: one system call and node's binding around it, which
 * a VM can make many times dearer than bare metal.
 */
function syscallMicros(n: number): number {
  const fd = openSync(process.execPath, "r");
  try {
    fstatSync(fd); // warm
    const t0 = performance.now();
    for (let i = 0; i < n; i++) fstatSync(fd);
    return ((performance.now() - t0) * 1000) / n;
  } finally {
    closeSync(fd);
  }
}

/** µs per 1-byte ping-pong over loopback TCP, both ends in this process: syscalls and wake-ups. */
async function loopbackRoundTripMicros(n: number): Promise<number> {
  const server = createServer((s) => s.on("data", (d) => s.write(d)));
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const socket = createConnection((server.address() as AddressInfo).port, "127.0.0.1");
  socket.setNoDelay(true);
  await once(socket, "connect");
  try {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const reply = once(socket, "data");
      socket.write("x");
      await reply;
    }
    return ((performance.now() - t0) * 1000) / n;
  } finally {
    socket.destroy();
    server.close();
  }
}

interface Round {
  freshPageUs: number;
  warmCopyGBps: number;
  sha256MBps: number;
  syscallUs: number;
  loopbackRoundTripUs: number;
  diskAtomicWriteCpuUs: number;
  clientDirAtomicWriteCpuUs: number;
}

main(async () => {
  const rounds: Round[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    rounds.push({
      freshPageUs: freshPageMicros(64 * MiB),
      warmCopyGBps: warmCopyGBps(64 * MiB),
      sha256MBps: sha256MBps(64 * MiB),
      syscallUs: syscallMicros(100_000),
      loopbackRoundTripUs: await loopbackRoundTripMicros(5000),
      diskAtomicWriteCpuUs: await atomicWriteCpuMicros(tmpdir()),
      clientDirAtomicWriteCpuUs: await atomicWriteCpuMicros(CLIENT_PARENT_DIR),
    });
  }
  const median = (k: keyof Round) =>
    rounds.map((r) => r[k]).sort((a, b) => a - b)[Math.floor(rounds.length / 2)] as number;
  const result = {
    freshPageUs: median("freshPageUs"),
    warmCopyGBps: median("warmCopyGBps"),
    sha256MBps: median("sha256MBps"),
    syscallUs: median("syscallUs"),
    loopbackRoundTripUs: median("loopbackRoundTripUs"),
    diskAtomicWriteCpuUs: median("diskAtomicWriteCpuUs"),
    clientDirAtomicWriteCpuUs: median("clientDirAtomicWriteCpuUs"),
  };
  printTable(
    `Machine: medians of ${ROUNDS} rounds`,
    ["probe", "value", "what it drives"],
    [
      ["CPU", `${cpus().length} × ${cpus()[0]?.model ?? "unknown"}`, "which machine this is"],
      [
        "fresh page (64 MiB, 4 KiB pages)",
        `${fmt(result.freshPageUs, 2)} µs/page`,
        "GC, socket buffers, HTTP per request",
      ],
      ["warm memcpy", `${fmt(result.warmCopyGBps, 1)} GB/s`, "loopback copies"],
      ["native SHA-256", `${fmt(result.sha256MBps, 0)} MB/s`, "every upload, twice (client, node)"],
      [
        "system call (fstat from node)",
        `${fmt(result.syscallUs, 2)} µs`,
        "every socket write, file operation, thread-pool hand-off",
      ],
      [
        "loopback TCP round trip (node)",
        `${fmt(result.loopbackRoundTripUs, 1)} µs`,
        "every HTTP exchange and Redis command",
      ],
      [
        `small atomic write, ${tmpdir()}`,
        `${fmt(result.diskAtomicWriteCpuUs, 0)} µs CPU`,
        "signtool writing to a disk",
      ],
      [
        `small atomic write, ${CLIENT_PARENT_DIR}`,
        `${fmt(result.clientDirAtomicWriteCpuUs, 0)} µs CPU`,
        "the benchmark clients' files, twice per signature",
      ],
    ],
  );
  writeResult("machine", { rounds, clientDir: CLIENT_PARENT_DIR, ...result });
});
