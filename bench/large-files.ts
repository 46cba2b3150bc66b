/**
 * Large files: end-to-end throughput (MB/s) of one file through one signing node with the
 * SigningClient, and the node's peak RSS (VmHWM), next to `gpg --detach-sign`, `sha256sum`,
 * node's own sha256 and openpgp.js signing in-process, all on the same file.
 *
 *   node dist/bench/large-files.js          64 MiB and 256 MiB
 *   BENCH_HUGE=1 node dist/bench/large-files.js   adds 1 GiB (slow on a 2-core machine)
 *   BENCH_SIZES_MIB=64,512                  any sizes
 */
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream, rmSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { SigningClient } from "../src/client/signing-client.js";
import { ProcessCluster } from "../test/helpers/process-cluster.js";
import {
  basicAuth,
  benchNodeEnv,
  cpuMs,
  fmt,
  gpgHome,
  issueTokens,
  main,
  minorFaults,
  peakRss,
  printTable,
  ratio,
  resetPeakRss,
  rss,
  tempDir,
  timed,
  writeResult,
} from "./lib.js";
import { openpgpJsSigner } from "./openpgp-baseline.js";

const MiB = 1024 * 1024;
const SIZES_MIB = process.env.BENCH_SIZES_MIB
  ? process.env.BENCH_SIZES_MIB.split(",").map(Number)
  : [64, 256, ...(process.env.BENCH_HUGE ? [1024] : [])];

/** Writes `bytes` of pseudo-random data (a repeated 1 MiB random block, xored per block). */
async function makeFile(path: string, bytes: number): Promise<void> {
  const { randomBytes } = await import("node:crypto");
  const block = randomBytes(MiB);
  const out = createWriteStream(path);
  async function* chunks() {
    for (let i = 0; i < bytes / MiB; i++) {
      const b = Buffer.from(block);
      b.writeUInt32LE(i, 0);
      yield b;
    }
  }
  await pipeline(chunks(), out);
}

async function nodeSha256(path: string): Promise<number> {
  const t0 = performance.now();
  const h = createHash("sha256");
  await pipeline(createReadStream(path, { highWaterMark: MiB }), h);
  h.digest("hex");
  return performance.now() - t0;
}

interface SizeResult {
  sizeMiB: number;
  endToEndMs: number;
  endToEndMBps: number;
  nodePeakRssMiB: number;
  nodeRssBeforeMiB: number;
  peakResetWorked: boolean;
  gpgMs: number;
  gpgMBps: number;
  sha256sumMs: number;
  sha256sumMBps: number;
  nodeSha256Ms: number;
  nodeSha256MBps: number;
  openpgpInProcessMs: number;
  openpgpInProcessMBps: number;
  /** CPU and fresh pages (minor faults) per GiB end to end, on each side of the upload. */
  nodeCpuMsPerGiB: number;
  clientCpuMsPerGiB: number;
  nodeFaultsPerGiB: number;
  clientFaultsPerGiB: number;
  verified: boolean;
}

main(async () => {
  const dir = tempDir("large");
  const maxBytes = Math.max(...SIZES_MIB) * MiB + MiB;
  const cluster = await ProcessCluster.start({
    nodes: 1,
    env: benchNodeEnv({
      SIGNING__signing__formats__gpg__maxSize: String(2 * maxBytes),
    }),
  });
  const gpg = gpgHome(cluster.state.keys.gpg);
  try {
    const node = cluster.nodes[0];
    if (!node?.child.pid) throw new Error("no node");
    const pid = node.child.pid;
    const [token] = await issueTokens(
      node.url,
      basicAuth(cluster.state.issuer.user, cluster.state.issuer.password),
      1,
    );
    writeFileSync(join(dir, "token"), token ?? "");
    const client = new SigningClient({
      nodes: [node.url],
      tokenFile: join(dir, "token"),
      nonceFile: join(dir, "nonce"),
      maxTimeMs: 30 * 60_000,
      requestTimeoutMs: 10 * 60_000,
      pollWaitSeconds: 60,
    });
    const passphrase = (await readFile(cluster.state.keys.gpg.passphraseFile, "utf8")).trim();
    const openpgpSign = await openpgpJsSigner(cluster.state.keys.gpg.keyFile, passphrase);
    // gpg-agent start-up is not part of any measurement.
    writeFileSync(join(dir, "warm.txt"), "warm");
    await gpg.sign(join(dir, "warm.txt"), join(dir, "warm.txt.asc"));

    const results: SizeResult[] = [];
    for (const mib of SIZES_MIB) {
      const file = join(dir, `artifact-${mib}.bin`);
      await makeFile(file, mib * MiB);
      const MB = (mib * MiB) / 1e6;
      // Warm the page cache once so every contender reads from memory.
      const sha256sumMs = await timed("sha256sum", [file]);
      const nodeSha256Ms = await nodeSha256(file);
      const gpgMs = await gpg.sign(file, join(dir, `gpg-${mib}.asc`));
      const t0 = performance.now();
      await openpgpSign(createReadStream(file, { highWaterMark: MiB }));
      const openpgpInProcessMs = performance.now() - t0;

      const nodeRssBefore = rss(pid);
      const resetWorked = resetPeakRss(pid);
      const node0 = { cpu: cpuMs(pid), faults: minorFaults(pid) };
      const client0 = { cpu: process.cpuUsage(), faults: process.resourceUsage().minorPageFault };
      const e0 = performance.now();
      const r = await client.sign(file, "gpg", join(dir, `node-${mib}.asc`));
      const endToEndMs = performance.now() - e0;
      const clientCpu = process.cpuUsage(client0.cpu);
      const perGiB = (v: number) => (v * 1024) / mib;
      const peak = peakRss(pid);
      const verified = gpg.verify(r.output, file);
      results.push({
        sizeMiB: mib,
        endToEndMs,
        endToEndMBps: MB / (endToEndMs / 1000),
        nodePeakRssMiB: peak / MiB,
        nodeRssBeforeMiB: nodeRssBefore / MiB,
        peakResetWorked: resetWorked,
        gpgMs,
        gpgMBps: MB / (gpgMs / 1000),
        sha256sumMs,
        sha256sumMBps: MB / (sha256sumMs / 1000),
        nodeSha256Ms,
        nodeSha256MBps: MB / (nodeSha256Ms / 1000),
        openpgpInProcessMs,
        openpgpInProcessMBps: MB / (openpgpInProcessMs / 1000),
        nodeCpuMsPerGiB: perGiB(cpuMs(pid) - node0.cpu),
        clientCpuMsPerGiB: perGiB((clientCpu.user + clientCpu.system) / 1000),
        nodeFaultsPerGiB: perGiB(minorFaults(pid) - node0.faults),
        clientFaultsPerGiB: perGiB(process.resourceUsage().minorPageFault - client0.faults),
        verified,
      });
      console.log(
        `  ${mib} MiB: node ${fmt(MB / (endToEndMs / 1000))} MB/s, gpg ${fmt(MB / (gpgMs / 1000))} MB/s`,
      );
      rmSync(file, { force: true });
    }

    printTable(
      "Large files: MB/s (1 MB = 10^6 bytes) through one node vs local tools, same file",
      [
        "size MiB",
        "node e2e MB/s",
        "gpg MB/s",
        "× gpg",
        "sha256sum MB/s",
        "node sha256 MB/s",
        "openpgp.js in-proc MB/s",
        "node peak RSS MiB",
        "RSS before MiB",
        "verifies",
      ],
      results.map((r) => [
        r.sizeMiB,
        r.endToEndMBps,
        r.gpgMBps,
        ratio(r.endToEndMBps, r.gpgMBps),
        r.sha256sumMBps,
        r.nodeSha256MBps,
        r.openpgpInProcessMBps,
        r.nodePeakRssMiB,
        r.nodeRssBeforeMiB,
        r.verified ? "yes" : "NO",
      ]),
    );
    printTable(
      "Large files: CPU and fresh pages (minor faults) per GiB through the node, each side",
      ["size MiB", "node CPU ms", "client CPU ms", "node faults", "client faults"],
      results.map((r) => [
        r.sizeMiB,
        r.nodeCpuMsPerGiB,
        r.clientCpuMsPerGiB,
        r.nodeFaultsPerGiB,
        r.clientFaultsPerGiB,
      ]),
    );
    const biggest = results[results.length - 1];
    const worstRatio = Math.min(...results.map((r) => ratio(r.endToEndMBps, r.gpgMBps)));
    const gib = results.find((r) => r.sizeMiB >= 1024);
    const met = {
      throughputVsGpg: worstRatio >= 0.9,
      peakRss1GiB: gib ? gib.nodePeakRssMiB < 200 : null,
      peakRssLargestRun: biggest ? biggest.nodePeakRssMiB < 200 : null,
    };
    printTable(
      "Large files: targets",
      ["target", "wanted", "measured", "met"],
      [
        [
          "throughput vs gpg --detach-sign (worst size)",
          "≥ 0.90×",
          `${fmt(worstRatio)}×`,
          met.throughputVsGpg ? "yes" : "NO",
        ],
        [
          `node peak RSS at ${biggest?.sizeMiB ?? "-"} MiB${gib ? "" : " (1 GiB: BENCH_HUGE=1)"}`,
          "< 200 MiB",
          `${fmt(biggest?.nodePeakRssMiB)} MiB`,
          met.peakRssLargestRun ? "yes" : "NO",
        ],
      ],
    );
    writeResult("large-files", {
      settings: {
        sizesMiB: SIZES_MIB,
        huge: Boolean(process.env.BENCH_HUGE),
        glibcTunables: process.env.GLIBC_TUNABLES ?? null,
      },
      results,
      met,
    });
  } finally {
    gpg.close();
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
