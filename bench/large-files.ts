/**
 * Large files: end-to-end throughput (MB/s) of one file through one signing node with the
 * SigningClient, and the node's peak RSS (VmHWM), next to `gpg --detach-sign` (an unprotected
 * key, the headline baseline, and the passphrase-protected dev key), `sha256sum`, node's own
 * sha256 (the limit: the node's signer hashes, then signs 32 bytes), openpgp.js signing
 * in-process, and a bare Node upload that only hashes on both sides (bench/bare-upload.ts, the
 * floor of any Node design), all on the same file.
 *
 *   node dist/bench/large-files.js          64 MiB and 256 MiB
 *   BENCH_HUGE=1 node dist/bench/large-files.js   adds 1 GiB (slow on a 2-core machine)
 *   BENCH_SIZES_MIB=64,512                  any sizes
 *   BENCH_ROUNDS=3                          both gpgs and the node back to back, this many times a size
 */
import { createHash } from "node:crypto";
import {
  closeSync,
  createReadStream,
  createWriteStream,
  openSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { ProcessCluster } from "../scripts/process-cluster.js";
import type { SigningClient } from "../src/client/signing-client.js";
import { bareServer, bareUpload } from "./bare-upload.js";
import {
  basicAuth,
  benchNodeEnv,
  cpuMs,
  fmt,
  type GpgHome,
  gpgHome,
  issueTokens,
  largeFileClient,
  main,
  minorFaults,
  peakRss,
  percentile,
  printTable,
  ratio,
  resetPeakRss,
  rss,
  tempDir,
  timed,
  unprotectedGpgHome,
  writeResult,
} from "./lib.js";
import { type OpenpgpJsSign, openpgpJsSigner } from "./openpgp-baseline.js";

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

/** One signature of the same file by each gpg and one upload through the node, back to back. */
interface Round {
  gpgUnprotectedMs: number;
  gpgProtectedMs: number;
  endToEndMs: number;
  /** The bare upload (bench/bare-upload.ts) of the same file, and its server's and client's CPU. */
  bareMs: number;
  bareServerCpuMs: number;
  bareClientCpuMs: number;
  /** node e2e MB/s over unprotected-key gpg MB/s in this round, measured seconds apart. */
  ratio: number;
  ratioVsProtected: number;
  nodePeakRssMiB: number;
  nodeCpuMs: number;
  clientCpuMs: number;
  nodeFaults: number;
  clientFaults: number;
  verified: boolean;
}

interface SizeResult {
  sizeMiB: number;
  rounds: Round[];
  /** Medians over the rounds (MB/s, ratio), the highest peak RSS. */
  endToEndMBps: number;
  gpgUnprotectedMBps: number;
  gpgProtectedMBps: number;
  /** Against gpg with the unprotected key: the headline and the target. */
  ratioVsGpg: number;
  ratioMin: number;
  ratioMax: number;
  ratioVsGpgProtected: number;
  /** The bare upload's MB/s, over gpg's, and the node's over the bare upload's (medians). */
  bareMBps: number;
  bareVsGpg: number;
  nodeVsBare: number;
  nodePeakRssMiB: number;
  nodeRssBeforeMiB: number;
  peakResetWorked: boolean;
  sha256sumMBps: number;
  nodeSha256MBps: number;
  openpgpInProcessMBps: number;
  /** CPU and fresh pages (minor faults) per GiB end to end, on each side, averaged over rounds. */
  nodeCpuMsPerGiB: number;
  clientCpuMsPerGiB: number;
  nodeFaultsPerGiB: number;
  clientFaultsPerGiB: number;
  bareServerCpuMsPerGiB: number;
  bareClientCpuMsPerGiB: number;
  verified: boolean;
}

/**
 * Rounds per size. The VM's speed drifts by 10–20 % over minutes, and it moves gpg and the node
 * differently when they are timed minutes apart; each round times both back to back, in
 * alternating order, and the ratio is the median over the rounds.
 */
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));

const median = (values: readonly number[]) => percentile(values, 50);
const mean = (values: readonly number[]) => values.reduce((a, b) => a + b, 0) / values.length;

/** Makes each round's file a new input (its first bytes), so the node signs it afresh. */
function stampRound(path: string, round: number): void {
  const fd = openSync(path, "r+");
  try {
    writeSync(fd, Buffer.from(`round ${round}\n`), 0, undefined, 0);
  } finally {
    closeSync(fd);
  }
}

/** The node under test and the client that uploads to it; the bare server beside it. */
interface Rig {
  pid: number;
  client: SigningClient;
  dir: string;
  bare: { url: string; pid: number };
}

/** The bare upload of `file`: its wall time and each side's CPU. */
async function bareRound(rig: Rig, file: string) {
  const server0 = cpuMs(rig.bare.pid);
  const client0 = process.cpuUsage();
  const bareMs = await bareUpload(rig.bare.url, file);
  const client = process.cpuUsage(client0);
  return {
    bareMs,
    bareServerCpuMs: cpuMs(rig.bare.pid) - server0,
    bareClientCpuMs: (client.user + client.system) / 1000,
  };
}

/** The node's upload of `file`: its wall time, and the CPU and fresh pages on each side. */
async function nodeUpload(rig: Rig, file: string, mib: number) {
  const { pid } = rig;
  const node0 = { cpu: cpuMs(pid), faults: minorFaults(pid) };
  const client0 = { cpu: process.cpuUsage(), faults: process.resourceUsage().minorPageFault };
  const e0 = performance.now();
  const r = await rig.client.sign(file, "gpg", join(rig.dir, `node-${mib}.asc`));
  const endToEndMs = performance.now() - e0;
  const clientCpu = process.cpuUsage(client0.cpu);
  return {
    output: r.output,
    endToEndMs,
    nodeCpuMs: cpuMs(pid) - node0.cpu,
    clientCpuMs: (clientCpu.user + clientCpu.system) / 1000,
    nodeFaults: minorFaults(pid) - node0.faults,
    clientFaults: process.resourceUsage().minorPageFault - client0.faults,
    nodePeakRssMiB: peakRss(pid) / MiB,
  };
}

/**
 * One round: the two gpgs and the node's upload of the same freshly stamped file, back to back,
 * in the opposite order every other round, so neither side always runs first after a drift.
 */
async function runRound(
  rig: Rig,
  gpgs: { unprotected: GpgHome; protected: GpgHome },
  file: string,
  mib: number,
  round: number,
): Promise<Round & { resetWorked: boolean }> {
  stampRound(file, round);
  const MBps = (ms: number) => (mib * MiB) / 1e6 / (ms / 1000);
  const times: { unprotected: number; protected: number } = { unprotected: 0, protected: 0 };
  const signWith = async (which: "unprotected" | "protected") => {
    times[which] = await gpgs[which].sign(file, join(rig.dir, `gpg-${which}-${mib}.asc`));
  };
  const gpgFirst = round % 2 === 1;
  let bare: Awaited<ReturnType<typeof bareRound>> | undefined;
  if (gpgFirst) {
    await signWith("unprotected");
    await signWith("protected");
  } else bare = await bareRound(rig, file);
  const resetWorked = resetPeakRss(rig.pid);
  const upload = await nodeUpload(rig, file, mib);
  if (gpgFirst) bare = await bareRound(rig, file);
  else {
    await signWith("protected");
    await signWith("unprotected");
  }
  const { output, ...figures } = upload;
  const r = {
    ...figures,
    ...(bare as Awaited<ReturnType<typeof bareRound>>),
    gpgUnprotectedMs: times.unprotected,
    gpgProtectedMs: times.protected,
    ratio: ratio(MBps(upload.endToEndMs), MBps(times.unprotected)),
    ratioVsProtected: ratio(MBps(upload.endToEndMs), MBps(times.protected)),
    verified: gpgs.protected.verify(output, file),
    resetWorked,
  };
  console.log(
    `  ${mib} MiB, round ${round}/${ROUNDS}: node ${fmt(MBps(r.endToEndMs))} MB/s, gpg ` +
      `${fmt(MBps(r.gpgUnprotectedMs))} MB/s unprotected (${fmt(r.ratio)}×), ` +
      `${fmt(MBps(r.gpgProtectedMs))} MB/s protected (${fmt(r.ratioVsProtected)}×), bare upload ${fmt(MBps(r.bareMs))} MB/s`,
  );
  return r;
}

/** Every figure of one size: the local tools once (the page cache warm), then the rounds. */
async function measureSize(
  rig: Rig,
  gpgs: { unprotected: GpgHome; protected: GpgHome },
  openpgpSign: OpenpgpJsSign,
  mib: number,
): Promise<SizeResult> {
  const file = join(rig.dir, `artifact-${mib}.bin`);
  await makeFile(file, mib * MiB);
  const MBps = (ms: number) => (mib * MiB) / 1e6 / (ms / 1000);
  // The first reader warms the page cache, so every contender reads from memory.
  const sha256sumMs = await timed("sha256sum", [file]);
  const nodeSha256Ms = await nodeSha256(file);
  const t0 = performance.now();
  await openpgpSign(createReadStream(file, { highWaterMark: MiB }));
  const openpgpInProcessMs = performance.now() - t0;
  const nodeRssBefore = rss(rig.pid);
  const rounds: Round[] = [];
  let peakResetWorked = true;
  for (let round = 1; round <= ROUNDS; round++) {
    const { resetWorked, ...r } = await runRound(rig, gpgs, file, mib, round);
    peakResetWorked &&= resetWorked;
    rounds.push(r);
  }
  rmSync(file, { force: true });
  const perGiB = (v: number) => (v * 1024) / mib;
  const ratios = rounds.map((r) => r.ratio);
  return {
    sizeMiB: mib,
    rounds,
    endToEndMBps: MBps(median(rounds.map((r) => r.endToEndMs))),
    gpgUnprotectedMBps: MBps(median(rounds.map((r) => r.gpgUnprotectedMs))),
    gpgProtectedMBps: MBps(median(rounds.map((r) => r.gpgProtectedMs))),
    ratioVsGpg: median(ratios),
    ratioMin: Math.min(...ratios),
    ratioMax: Math.max(...ratios),
    ratioVsGpgProtected: median(rounds.map((r) => r.ratioVsProtected)),
    bareMBps: MBps(median(rounds.map((r) => r.bareMs))),
    bareVsGpg: median(rounds.map((r) => r.gpgUnprotectedMs / r.bareMs)),
    nodeVsBare: median(rounds.map((r) => r.bareMs / r.endToEndMs)),
    nodePeakRssMiB: Math.max(...rounds.map((r) => r.nodePeakRssMiB)),
    nodeRssBeforeMiB: nodeRssBefore / MiB,
    peakResetWorked,
    sha256sumMBps: MBps(sha256sumMs),
    nodeSha256MBps: MBps(nodeSha256Ms),
    openpgpInProcessMBps: MBps(openpgpInProcessMs),
    nodeCpuMsPerGiB: perGiB(mean(rounds.map((r) => r.nodeCpuMs))),
    clientCpuMsPerGiB: perGiB(mean(rounds.map((r) => r.clientCpuMs))),
    nodeFaultsPerGiB: perGiB(mean(rounds.map((r) => r.nodeFaults))),
    clientFaultsPerGiB: perGiB(mean(rounds.map((r) => r.clientFaults))),
    bareServerCpuMsPerGiB: perGiB(mean(rounds.map((r) => r.bareServerCpuMs))),
    bareClientCpuMsPerGiB: perGiB(mean(rounds.map((r) => r.bareClientCpuMs))),
    verified: rounds.every((r) => r.verified),
  };
}

/** The issue's targets for large files, printed as met or not. */
function printTargets(results: SizeResult[]) {
  const biggest = results[results.length - 1];
  const worstRatio = Math.min(...results.map((r) => r.ratioVsGpg));
  const gib = results.find((r) => r.sizeMiB >= 1024);
  const met = {
    throughputVsGpg: worstRatio >= 1,
    peakRss1GiB: gib ? gib.nodePeakRssMiB < 200 : null,
    peakRssLargestRun: biggest ? biggest.nodePeakRssMiB < 200 : null,
  };
  printTable(
    "Large files: targets",
    ["target", "wanted", "measured", "met"],
    [
      [
        `throughput vs gpg --detach-sign, unprotected key (worst size, median of ${ROUNDS} rounds)`,
        "≥ 1.00×",
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
  return met;
}

/** The throughput table: the node and every baseline, per size. */
function printThroughput(results: SizeResult[]): void {
  printTable(
    "Large files: MB/s (1 MB = 10^6 bytes) through one node vs local tools, same file",
    [
      "size MiB",
      "node e2e MB/s",
      "gpg unprotected MB/s",
      "× gpg unprotected",
      "× gpg unprotected, rounds",
      "gpg protected MB/s",
      "× gpg protected",
      "bare upload MB/s",
      "bare × gpg",
      "node × bare",
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
      r.gpgUnprotectedMBps,
      r.ratioVsGpg,
      `${fmt(r.ratioMin)}–${fmt(r.ratioMax)}`,
      r.gpgProtectedMBps,
      r.ratioVsGpgProtected,
      r.bareMBps,
      r.bareVsGpg,
      r.nodeVsBare,
      r.sha256sumMBps,
      r.nodeSha256MBps,
      r.openpgpInProcessMBps,
      r.nodePeakRssMiB,
      r.nodeRssBeforeMiB,
      r.verified ? "yes" : "NO",
    ]),
  );
}

/** The CPU table: each side of the node's upload and of the bare upload, per GiB. */
function printCpu(results: SizeResult[]): void {
  printTable(
    "Large files: CPU and fresh pages (minor faults) per GiB through the node, each side; CPU of the bare upload",
    [
      "size MiB",
      "node CPU ms",
      "client CPU ms",
      "node faults",
      "client faults",
      "bare server CPU ms",
      "bare client CPU ms",
    ],
    results.map((r) => [
      r.sizeMiB,
      r.nodeCpuMsPerGiB,
      r.clientCpuMsPerGiB,
      r.nodeFaultsPerGiB,
      r.clientFaultsPerGiB,
      r.bareServerCpuMsPerGiB,
      r.bareClientCpuMsPerGiB,
    ]),
  );
}

/** Prints the tables and writes bench/results/large-files.json. */
function report(results: SizeResult[]): void {
  printThroughput(results);
  printCpu(results);
  const met = printTargets(results);
  writeResult("large-files", {
    settings: {
      sizesMiB: SIZES_MIB,
      rounds: ROUNDS,
      huge: Boolean(process.env.BENCH_HUGE),
      glibcTunables: process.env.GLIBC_TUNABLES ?? null,
    },
    results,
    met,
  });
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
  const gpgs = { unprotected: unprotectedGpgHome(), protected: gpgHome(cluster.state.keys.gpg) };
  const bare = await bareServer();
  try {
    const node = cluster.nodes[0];
    if (!node?.child.pid) throw new Error("no node");
    const [token] = await issueTokens(
      node.url,
      basicAuth(cluster.state.issuer.user, cluster.state.issuer.password),
      1,
    );
    writeFileSync(join(dir, "token"), token ?? "");
    const client = largeFileClient(node.url, dir);
    const passphrase = (await readFile(cluster.state.keys.gpg.passphraseFile, "utf8")).trim();
    const openpgpSign = await openpgpJsSigner(cluster.state.keys.gpg.keyFile, passphrase);
    // gpg-agent start-up is not part of any measurement.
    writeFileSync(join(dir, "warm.txt"), "warm");
    for (const g of Object.values(gpgs)) await g.sign(join(dir, "warm.txt"), join(dir, "warm.txt.asc"));
    const rig = { pid: node.child.pid, client, dir, bare };
    const results: SizeResult[] = [];
    for (const mib of SIZES_MIB) results.push(await measureSize(rig, gpgs, openpgpSign, mib));
    report(results);
  } finally {
    for (const g of Object.values(gpgs)) g.close();
    bare.stop();
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
