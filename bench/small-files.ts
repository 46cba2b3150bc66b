/**
 * Small files (1 KiB checksums files): signatures/s and latency through the full HTTP path of
 * one signing node (token check, nonce, upload, sign, fetch) at 1, 8, 32, 128 concurrent
 * clients, next to `gpg --detach-sign` one process per file (with an unprotected key, the
 * headline baseline, and with the passphrase-protected dev key as classic signing scripts run
 * it), openpgp.js in-process and the node's own signer in-process (the limit).
 *
 *   node dist/bench/small-files.js        BENCH_SECONDS=5  BENCH_LEVELS=1,8,32,128
 */
import { rmSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { cpus } from "node:os";
import { join } from "node:path";
import { ProcessCluster } from "../scripts/process-cluster.js";
import { hashInput } from "../src/signing/signer.js";
import { loadGpgSigner } from "../src/signing/signers/gpg.js";
import {
  benchNodeEnv,
  CLIENT_PARENT_DIR,
  checksumsFile,
  childrenCpuMs,
  clientDir,
  closedLoop,
  cpuMs,
  fmt,
  type GpgHome,
  gpgHome,
  main,
  premadeInputs,
  printTable,
  ratio,
  unprotectedGpgHome,
  WARM_SIGNATURES_PER_NODE,
  type WarmUp,
  writeResult,
} from "./lib.js";
import {
  type BaselineResult,
  baselineResult,
  type LevelResult,
  measureLevel,
  perFileBaselines,
  type Sample,
  warmOneNodeRig,
} from "./node-levels.js";
import { openpgpJsSigner } from "./openpgp-baseline.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const LEVELS = (process.env.BENCH_LEVELS ?? "1,8,32,128").split(",").map(Number);
const WARM_MS = 1000;
const CORES = cpus().length;

const GPG_UNPROTECTED = "gpg --detach-sign per file, unprotected key";
const GPG_PROTECTED = "gpg --detach-sign per file, protected key (loopback passphrase)";
const SIGNER_IN_PROCESS = "node's signer in-process (1 thread)";

/** This process's CPU time so far, ms. */
function ownCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** The best rate among the baselines called `name` (gpg: over its concurrencies). */
function best(baselines: BaselineResult[], name: string): number {
  const rates = baselines.filter((b) => b.name === name).map((b) => b.sigsPerSec);
  return rates.length ? Math.max(...rates) : Number.NaN;
}

type Verified = Record<"node" | "gpgUnprotected" | "gpgProtected" | "openpgp" | "signer", boolean>;

/** The targets for small files, printed as met or not. */
function printTargets(levels: LevelResult[], gpgUnprotected: number, verified: Verified) {
  const at32 = levels.find((l) => l.clients === 32);
  const targets = {
    sigsPerSecVsGpgAt32: {
      target: ">= 20x gpg with an unprotected key",
      value: at32 ? ratio(at32.sigsPerSec, gpgUnprotected) : null,
    },
    p99At32Ms: { target: "<= 50", value: at32?.p99Ms ?? null },
    zeroFailed: { target: 0, value: levels.reduce((a, l) => a + l.failed, 0) },
  };
  const allVerified = Object.values(verified).every(Boolean);
  const met = {
    sigsPerSecVsGpgAt32: (targets.sigsPerSecVsGpgAt32.value ?? 0) >= 20,
    p99At32Ms: (targets.p99At32Ms.value ?? Number.POSITIVE_INFINITY) <= 50,
    zeroFailed: targets.zeroFailed.value === 0,
    verified: allVerified,
  };
  const yes = (b: boolean) => (b ? "yes" : "NO");
  printTable(
    "Small files: targets",
    ["target", "wanted", "measured", "met"],
    [
      [
        "sigs/s at 32 clients vs gpg per file, unprotected key",
        "≥ 20×",
        `${fmt(targets.sigsPerSecVsGpgAt32.value ?? Number.NaN)}×`,
        yes(met.sigsPerSecVsGpgAt32),
      ],
      [
        "p99 at 32 clients",
        "≤ 50 ms",
        `${fmt(targets.p99At32Ms.value ?? Number.NaN)} ms`,
        yes(met.p99At32Ms),
      ],
      ["failed jobs", "0", String(targets.zeroFailed.value), yes(met.zeroFailed)],
      [
        "signatures verify with gpg --verify (node, gpg ×2, openpgp.js, signer in-process)",
        "yes",
        Object.values(verified).join(", "),
        yes(allVerified),
      ],
    ],
  );
  return { targets, met };
}

/** The levels' table, each level's rate also set against gpg's best rates and the in-process signer's. */
function printLevels(
  levels: LevelResult[],
  gpgUnprotected: number,
  gpgProtected: number,
  signer: number,
): void {
  printTable(
    "Small files (1 KiB): one node, full HTTP path (token check, nonce, upload, sign, fetch)",
    [
      "clients",
      "signed",
      "sigs/s",
      "p50 ms",
      "p99 ms",
      "max ms",
      "failed",
      "retries",
      "node CPU ms/sig",
      "client CPU ms/sig",
      "Redis CPU ms/sig",
      "node faults/sig",
      "× gpg unprotected",
      "× gpg protected",
      "of in-process signer",
    ],
    levels.map((l) => [
      l.clients,
      l.signed,
      l.sigsPerSec,
      l.p50Ms,
      l.p99Ms,
      l.maxMs,
      l.failed,
      l.retries,
      l.nodeCpuMsPerSig,
      l.benchCpuMsPerSig,
      l.redisCpuMsPerSig,
      l.nodeFaultsPerSig,
      ratio(l.sigsPerSec, gpgUnprotected),
      ratio(l.sigsPerSec, gpgProtected),
      `${fmt(100 * ratio(l.sigsPerSec, signer), 0)} %`,
    ]),
  );
}

function printBaselines(baselines: BaselineResult[]): void {
  printTable(
    "Small files (1 KiB): baselines, same files, same run",
    ["signer", "concurrency", "signed", "sigs/s", "CPU ms/sig", "p50 ms", "p99 ms"],
    baselines.map((b) => [b.name, b.concurrency, b.signed, b.sigsPerSec, b.cpuMsPerSig, b.p50Ms, b.p99Ms]),
  );
}

/** Prints the tables and writes bench/results/small-files.json. */
function report(levels: LevelResult[], baselines: BaselineResult[], warm: WarmUp, verified: Verified): void {
  const gpgUnprotected = best(baselines, GPG_UNPROTECTED);
  const gpgProtected = best(baselines, GPG_PROTECTED);
  const signer = best(baselines, SIGNER_IN_PROCESS);
  printLevels(levels, gpgUnprotected, gpgProtected, signer);
  printBaselines(baselines);
  const { targets, met } = printTargets(levels, gpgUnprotected, verified);
  writeResult("small-files", {
    settings: {
      seconds: SECONDS,
      warmMs: WARM_MS,
      warmSignatures: WARM_SIGNATURES_PER_NODE,
      levels: LEVELS,
      fileBytes: 1024,
      clientDir: CLIENT_PARENT_DIR,
    },
    warmUp: warm,
    levels,
    baselines,
    gpgUnprotectedBestSigsPerSec: gpgUnprotected,
    gpgProtectedBestSigsPerSec: gpgProtected,
    signerInProcessSigsPerSec: signer,
    verified,
    targets,
    met,
  });
}

/** gpg --detach-sign, one process per file, 1 and CORES at a time, with each home's key. */
async function gpgBaselines(
  dir: string,
  homes: (readonly [string, GpgHome])[],
): Promise<{ baselines: BaselineResult[]; verified: boolean[] }> {
  const gpgFile = (w: number, n: number) => {
    const f = join(dir, `gpg-${w}-${n}.txt`);
    writeFileSync(f, checksumsFile(`gpg-${w}-${n}`));
    return f;
  };
  const baselines: BaselineResult[] = [];
  const verified: boolean[] = [];
  for (const [name, home] of homes) {
    await home.sign(gpgFile(9, 9), join(dir, "warm.asc")); // starts gpg-agent, untimed
    const agent = home.agentPid();
    const gpgCpu = () => childrenCpuMs() + (agent ? cpuMs(agent) : 0);
    const sign = (w: number, n: number) => {
      const f = gpgFile(w, n);
      return home.sign(f, `${f}.asc`);
    };
    baselines.push(...(await perFileBaselines(name, SECONDS, [1, CORES], sign, gpgCpu)));
    // One more, untimed, checked with gpg --verify (outside the CPU window: a verify is a child too).
    const f = gpgFile(8, 8);
    await home.sign(f, `${f}.asc`);
    verified.push(home.verify(`${f}.asc`, f));
  }
  return { baselines, verified };
}

/** openpgp.js and the node's own signer (native SHA-256 + Ed25519) in this process, 1 thread. */
async function inProcessBaselines(
  keys: { keyFile: string; passphraseFile: string },
  dir: string,
  gpg: GpgHome,
): Promise<{ baselines: BaselineResult[]; verified: { openpgp: boolean; signer: boolean } }> {
  const passphrase = (await readFile(keys.passphraseFile, "utf8")).trim();
  const openpgpSign = await openpgpJsSigner(keys.keyFile, passphrase);
  const signer = await loadGpgSigner({ keyFile: keys.keyFile, passphrase });
  const kinds = [
    ["openpgp.js in-process (1 thread)", (data: Buffer) => openpgpSign(data)],
    [SIGNER_IN_PROCESS, async (data: Buffer) => signer.sign(await hashInput(data))],
  ] as const;
  const verified: boolean[] = [];
  const baselines: BaselineResult[] = [];
  for (const [name, signOnce] of kinds) {
    const probe = checksumsFile(name);
    const probeFile = join(dir, `in-process-${baselines.length}.txt`);
    writeFileSync(probeFile, probe);
    writeFileSync(`${probeFile}.asc`, await signOnce(probe));
    verified.push(gpg.verify(`${probeFile}.asc`, probeFile));
    const cpu0 = ownCpuMs();
    const r = await closedLoop(1, SECONDS * 1000, async () => {
      await signOnce(probe);
    });
    baselines.push(baselineResult(name, 1, r, ownCpuMs() - cpu0));
  }
  return { baselines, verified: { openpgp: verified[0] ?? false, signer: verified[1] ?? false } };
}

main(async () => {
  const dir = clientDir("small");
  const cluster = await ProcessCluster.start({ nodes: 1, env: benchNodeEnv() });
  const gpg = gpgHome(cluster.state.keys.gpg);
  const gpgUnprotected = unprotectedGpgHome();
  try {
    const maxClients = Math.max(...LEVELS);
    const { rig, warm } = await warmOneNodeRig(cluster, dir, maxClients, {
      seconds: SECONDS,
      warmMs: WARM_MS,
    });
    const levels: LevelResult[] = [];
    let sample: Sample | undefined;
    for (const c of LEVELS) {
      const input = premadeInputs(rig.dir, `l${c}`, c, SECONDS + WARM_MS / 1000);
      const r = await measureLevel(rig, {
        clients: c,
        format: "gpg",
        seconds: SECONDS,
        warmMs: WARM_MS,
        input,
      });
      levels.push(r.level);
      sample = r.samples[0] ?? sample;
    }
    const gpgs = await gpgBaselines(dir, [
      [GPG_UNPROTECTED, gpgUnprotected],
      [GPG_PROTECTED, gpg],
    ]);
    const inProcess = await inProcessBaselines(cluster.state.keys.gpg, dir, gpg);
    report(levels, [...gpgs.baselines, ...inProcess.baselines], warm, {
      node: sample ? gpg.verify(sample.output, sample.file) : false,
      gpgUnprotected: gpgs.verified[0] ?? false,
      gpgProtected: gpgs.verified[1] ?? false,
      ...inProcess.verified,
    });
  } finally {
    gpg.close();
    gpgUnprotected.close();
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
