/**
 * Formats: each format one warm node signs (gpg, gpg-clearsign, sshsig, minisign, authenticode),
 * small inputs through the full HTTP path at 8 and 32 clients, next to the format's own tool run
 * one process per file in the same run (`gpg --detach-sign` and `gpg --clearsign` with an
 * unprotected key, `ssh-keygen -Y sign`, `minisign -S` with a key made without a password,
 * `osslsigncode sign` with the node's certificate and key); then Authenticode of a large PE end
 * to end through the node (upload, spool, osslsigncode, the whole signed file back) against
 * `osslsigncode sign` alone on the same file, in alternating rounds, with the node's peak RSS,
 * also for a 1 GiB file. Every kind of output is checked by its real tool.
 *
 *   node dist/bench/formats.js     BENCH_SECONDS=5  BENCH_LEVELS=8,32  BENCH_ROUNDS=3
 *                                  BENCH_LARGE_MIB=100  BENCH_HUGE=0 (skips the 1 GiB file)
 */
import { spawnSync } from "node:child_process";
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import {
  minimalPe,
  osslsigncodeVerify,
  powershellScript,
  writeLargePe,
} from "../scripts/authenticode-files.js";
import { ProcessCluster } from "../scripts/process-cluster.js";
import {
  clearsignVerify,
  gpgVerify,
  minisignVerify,
  sshVerify,
  type VerifyResult,
} from "../scripts/verify-tools.js";
import { type Phase, SigningClient } from "../src/client/signing-client.js";
import { osslsigncodeArgs } from "../src/signing/formats/authenticode.js";
import {
  benchNodeEnv,
  CLIENT_PARENT_DIR,
  checksumsFile,
  childrenCpuMs,
  clientDir,
  cpuMs,
  endedChildrenCpuMs,
  fmt,
  type GpgHome,
  type InputKind,
  main,
  peakRss,
  percentile,
  premadeInputs,
  printTable,
  ratio,
  resetPeakRss,
  rss,
  tempDir,
  timed,
  unprotectedGpgHome,
  WARM_SIGNATURES_PER_NODE,
  type WarmUp,
  writeResult,
} from "./lib.js";
import {
  type BaselineResult,
  type LevelResult,
  measureLevel,
  perFileBaselines,
  type Rig,
  type Sample,
  warmOneNodeRig,
} from "./node-levels.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const LEVELS = (process.env.BENCH_LEVELS ?? "8,32").split(",").map(Number);
const WARM_MS = 1000;
const CORES = cpus().length;
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
const MiB = 1024 * 1024;
const LARGE_MIB = Number(process.env.BENCH_LARGE_MIB ?? 100);
/** The 1 GiB file, for the node's peak RSS (one round): on unless BENCH_HUGE=0. */
const HUGE_MIB = process.env.BENCH_HUGE === "0" ? 0 : 1024;
/** The bound on the node's RSS while it takes a 1 GiB file: 200 MB (190.7 MiB). */
const RSS_TARGET_MIB = 200e6 / MiB;

/** One way to sign a file with a tool, one process per file, and to check what it wrote. */
interface Tool {
  name: string;
  sign(input: string, output: string): Promise<number>;
  verify(output: string, input: string): VerifyResult;
  /** CPU ms its processes have used so far (ended children, gpg-agent for gpg). */
  cpuMs(): number;
}

/** A format as this benchmark signs it: the node's format, its inputs, and its tool. */
interface FormatCase {
  /** Its row: the format, and the kind of input when a format has several. */
  name: string;
  format: string;
  input: InputKind & { bytes: number };
  /** What the input is, for the tables. */
  inputLabel: string;
  /** Where the client, and the tool, write the output for `file`. */
  output: (file: string) => string;
  tool: Tool;
  /** The node's output checked by the real tool against the node's key or CA. */
  verifyNode(sample: Sample): VerifyResult;
}

interface CaseResult {
  name: string;
  format: string;
  inputLabel: string;
  tool: string;
  inputBytes: number;
  levels: LevelResult[];
  baselines: BaselineResult[];
  /** The tool's best rate over its concurrencies (1 and the CPU count). */
  toolBestSigsPerSec: number;
  toolBestCpuMsPerSig: number;
  verified: { node: boolean[]; tool: boolean };
  errors: string[];
}

/** A 1 KiB PE made another file by `seed`, written past its code (minimalPe). */
function stampedPe(seed: string): Buffer {
  const pe = minimalPe();
  pe.write(seed.slice(0, 200), 0x300, "latin1");
  return pe;
}

const signedName = (file: string) => file.replace(/(\.[^./]+)$/, ".signed$1");
const run = (cmd: string, args: string[], env?: NodeJS.ProcessEnv) => {
  const r = spawnSync(cmd, args, { env: env ?? process.env, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed: ${r.stderr}`);
};
const readBoth = (s: Sample) => ({ data: readFileSync(s.file), out: readFileSync(s.output) });

/** gpg with an unprotected Ed25519 key: detached and clearsigned. */
function gpgTools(home: GpgHome): { detached: Tool; clearsign: Tool } {
  // Asked once it runs: each question is a process, whose CPU would count as gpg's.
  let agent: number | undefined;
  const cpu = () => {
    agent ??= home.agentPid();
    return childrenCpuMs() + (agent ? cpuMs(agent) : 0);
  };
  return {
    detached: {
      name: "gpg --detach-sign --armor per file, unprotected key",
      sign: (input, output) => home.sign(input, output),
      verify: (output, input) => gpgVerify(home.publicKey(), readFileSync(input), readFileSync(output)),
      cpuMs: cpu,
    },
    clearsign: {
      name: "gpg --clearsign per file, unprotected key",
      sign: (input, output) => home.clearsign(input, output),
      verify: (output, input) => textMatches(clearsignVerify(home.publicKey(), readFileSync(output)), input),
      cpuMs: cpu,
    },
  };
}

/** A cleartext signature that verifies and carries the input's text. */
function textMatches(v: VerifyResult & { text: string }, input: string): VerifyResult {
  const same = v.text.trimEnd() === readFileSync(input, "utf8").trimEnd();
  return { ok: v.ok && same, output: same ? v.output : `${v.output}\nthe signed text is not the input` };
}

/** `ssh-keygen -Y sign` with an Ed25519 key made without a passphrase (no agent). */
function sshTool(dir: string): Tool {
  const key = join(dir, "ssh-ed25519");
  const env = { ...process.env, SSH_AUTH_SOCK: "" };
  run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", key], env);
  const publicLine = readFileSync(`${key}.pub`, "utf8");
  return {
    name: "ssh-keygen -Y sign per file, unprotected key",
    // It writes INPUT.sig itself (the case's output).
    sign: (input) => timed("ssh-keygen", ["-q", "-Y", "sign", "-f", key, "-n", "file", input], env),
    verify: (output, input) => sshVerify(publicLine, "file", readFileSync(input), readFileSync(output)),
    cpuMs: childrenCpuMs,
  };
}

/** `minisign -S` with a key made by `minisign -G -W` (no password). */
function minisignTool(dir: string): Tool {
  const sec = join(dir, "minisign.key");
  const pub = join(dir, "minisign.pub");
  run("minisign", ["-G", "-W", "-p", pub, "-s", sec]);
  return {
    name: "minisign -S per file, key without a password",
    sign: (input, output) => timed("minisign", ["-S", "-s", sec, "-m", input, "-x", output]),
    verify: (output, input) =>
      minisignVerify(readFileSync(pub, "utf8"), readFileSync(input), readFileSync(output)),
    cpuMs: childrenCpuMs,
  };
}

/** `osslsigncode sign` with the node's own certificate and key (PEM, no passphrase), SHA-256, as the node runs it. */
function osslsigncodeTool(codeSigning: { certFile: string; keyFile: string; caFile: string }): Tool {
  const options = {
    credentials: { kind: "pem" as const, certFile: codeSigning.certFile, keyFile: codeSigning.keyFile },
  };
  return {
    name: "osslsigncode sign per file, the node's certificate and key",
    sign: (input, output) => timed("osslsigncode", osslsigncodeArgs(options, input, output)),
    verify: (output) => osslsigncodeVerify(output, codeSigning.caFile),
    cpuMs: childrenCpuMs,
  };
}

/** The cases that sign 1 KiB text: gpg detached and clearsigned, sshsig, minisign. */
function textCases(keys: ProcessCluster["state"]["keys"], gpg: GpgHome, dir: string): FormatCase[] {
  const gpgPublic = readFileSync(keys.gpg.publicKeyFile, "utf8");
  const sshPublic = readFileSync(keys.sshsig.publicKeyFile, "utf8");
  const minisignPublic = readFileSync(keys.minisign.publicKeyFile, "utf8");
  const tools = gpgTools(gpg);
  const checksums: FormatCase["input"] = { content: checksumsFile, ext: ".txt", bytes: 1024 };
  return [
    {
      name: "gpg",
      format: "gpg",
      input: checksums,
      inputLabel: "1 KiB text",
      output: (f) => `${f}.asc`,
      tool: tools.detached,
      verifyNode: (s) => gpgVerify(gpgPublic, readBoth(s).data, readBoth(s).out),
    },
    {
      name: "gpg-clearsign",
      format: "gpg-clearsign",
      input: checksums,
      inputLabel: "1 KiB text",
      output: (f) => `${f}.asc`,
      tool: tools.clearsign,
      verifyNode: (s) => textMatches(clearsignVerify(gpgPublic, readFileSync(s.output)), s.file),
    },
    {
      name: "sshsig",
      format: "sshsig",
      input: checksums,
      inputLabel: "1 KiB text",
      // ssh-keygen -Y sign writes INPUT.sig itself.
      output: (f) => `${f}.sig`,
      tool: sshTool(dir),
      verifyNode: (s) => sshVerify(sshPublic, "file", readBoth(s).data, readBoth(s).out),
    },
    {
      name: "minisign",
      format: "minisign",
      input: checksums,
      inputLabel: "1 KiB text",
      output: (f) => `${f}.minisig`,
      tool: minisignTool(dir),
      verifyNode: (s) => minisignVerify(minisignPublic, readBoth(s).data, readBoth(s).out),
    },
  ];
}

/** The Authenticode cases, a 1 KiB PE and a PowerShell script, both checked against the dev CA. */
function authenticodeCases(codeSigning: { certFile: string; keyFile: string; caFile: string }): FormatCase[] {
  const osslsigncode = osslsigncodeTool(codeSigning);
  const signedFile = (s: Sample) => osslsigncodeVerify(s.output, codeSigning.caFile);
  const slow = { perSecond: 300 };
  return [
    {
      name: "authenticode (1 KiB PE)",
      format: "authenticode",
      input: { content: stampedPe, ext: ".exe", bytes: minimalPe().length, ...slow },
      inputLabel: `${minimalPe().length / 1024} KiB PE executable`,
      output: signedName,
      tool: osslsigncode,
      verifyNode: signedFile,
    },
    {
      name: "authenticode (PowerShell script)",
      format: "authenticode",
      input: {
        content: (seed) => powershellScript(seed),
        ext: ".ps1",
        bytes: powershellScript("x").length,
        ...slow,
      },
      inputLabel: "PowerShell script",
      output: signedName,
      tool: osslsigncode,
      verifyNode: signedFile,
    },
  ];
}

/** Every format of the dev state, its 1 KiB-ish inputs, and its tool. */
function formatCases(cluster: ProcessCluster, gpg: GpgHome, dir: string): FormatCase[] {
  const { keys, codeSigning } = cluster.state;
  if (!codeSigning) throw new Error("the cluster signs no authenticode");
  return [...textCases(keys, gpg, dir), ...authenticodeCases(codeSigning)];
}

/** The tool on the case's inputs, 1 and CORES processes at a time; one more output, checked. */
async function toolBaselines(
  c: FormatCase,
  dir: string,
): Promise<{ baselines: BaselineResult[]; verified: boolean }> {
  const signOne = (f: string) => c.tool.sign(f, c.output(f));
  const extra = premadeInputs(dir, "extra", 1, 0, c.input);
  await signOne(extra(0, 0)); // gpg-agent starts, untimed
  const baselines: BaselineResult[] = [];
  for (const conc of [1, CORES]) {
    const inputs = premadeInputs(dir, `t${conc}`, conc, SECONDS, { ...c.input, perSecond: 500 });
    const sign = (w: number, n: number) => signOne(inputs(w, n));
    baselines.push(...(await perFileBaselines(c.tool.name, SECONDS, [conc], sign, () => c.tool.cpuMs())));
  }
  const probe = extra(0, 1);
  await signOne(probe);
  const v = c.tool.verify(c.output(probe), probe);
  if (!v.ok) console.log(`  ${c.tool.name}: its output does not verify: ${v.output}`);
  return { baselines, verified: v.ok };
}

/** One format: the node at each level, then its tool; every kind of output checked. */
async function measureCase(rig: Rig, c: FormatCase): Promise<CaseResult> {
  const levels: LevelResult[] = [];
  const nodeVerified: boolean[] = [];
  const errors: string[] = [];
  for (const clients of LEVELS) {
    const dir = join(rig.dir, `${c.format}-${c.input.ext?.slice(1)}-${clients}`);
    mkdirSync(dir);
    const input = premadeInputs(dir, "in", clients, SECONDS + WARM_MS / 1000, c.input);
    const r = await measureLevel(rig, {
      clients,
      format: c.format,
      seconds: SECONDS,
      warmMs: WARM_MS,
      input,
      output: c.output,
    });
    levels.push(r.level);
    errors.push(...r.level.errors);
    for (const s of r.samples) {
      const v = c.verifyNode(s);
      if (!v.ok) errors.push(`node output ${s.output} does not verify: ${v.output}`);
      nodeVerified.push(v.ok);
    }
    if (r.samples.length === 0) nodeVerified.push(false);
    rmSync(dir, { recursive: true, force: true });
  }
  const toolDir = join(rig.dir, `${c.format}-${c.input.ext?.slice(1)}-tool`);
  mkdirSync(toolDir);
  const { baselines, verified } = await toolBaselines(c, toolDir);
  rmSync(toolDir, { recursive: true, force: true });
  const best = baselines.reduce((a, b) => (b.sigsPerSec > a.sigsPerSec ? b : a));
  console.log(`  ${c.tool.name}: ${fmt(best.sigsPerSec)} sigs/s at ${best.concurrency} at a time`);
  return {
    name: c.name,
    format: c.format,
    inputLabel: c.inputLabel,
    tool: c.tool.name,
    inputBytes: c.input.bytes,
    levels,
    baselines,
    toolBestSigsPerSec: best.sigsPerSec,
    toolBestCpuMsPerSig: best.cpuMsPerSig,
    verified: { node: nodeVerified, tool: verified },
    errors,
  };
}

// ---------------------------------------------------------------- a large Authenticode file

/** One round: the node end to end and osslsigncode alone on the same freshly stamped file. */
interface LargeRound {
  nodeMs: number;
  toolMs: number;
  /** The node's MB/s over osslsigncode's, this round. */
  ratio: number;
  nodePeakRssMiB: number;
  nodeCpuMs: number;
  /** The osslsigncode the node ran. */
  nodeToolCpuMs: number;
  toolCpuMs: number;
  clientCpuMs: number;
  /**
   * Where the wall time went, from the client's events: the upload until the node answered it
   * (received and spooled, osslsigncode, the signed file into the spool); a GET when the answer
   * did not carry the file (0 when it did); and the signed file received (streamed to disk,
   * hashed, its certificate found, renamed into place).
   */
  phasesMs: { upload: number; poll: number; receive: number };
  nodeVerified: boolean;
  toolVerified: boolean;
}

interface LargeResult {
  sizeMiB: number;
  rounds: LargeRound[];
  nodeMBps: number;
  toolMBps: number;
  ratio: number;
  ratioMin: number;
  ratioMax: number;
  nodePeakRssMiB: number;
  nodeRssBeforeMiB: number;
  peakResetWorked: boolean;
  /** Medians over the rounds of LargeRound.phasesMs. */
  phasesMs: LargeRound["phasesMs"];
  verified: boolean;
}

const median = (values: readonly number[]) => percentile(values, 50);

/** A new input each round: bytes of the .text section after its code change. */
function stampPe(path: string, stamp: string): void {
  const fd = openSync(path, "r+");
  try {
    writeSync(fd, Buffer.from(stamp.padEnd(32)), 0, undefined, 0x200 + 0x40);
  } finally {
    closeSync(fd);
  }
}

/** The large file's client, and when it entered each phase (its onEvent). */
interface LargeClient {
  client: SigningClient;
  marks: { phase: Phase; at: number }[];
}

function largeClient(rig: Rig): LargeClient {
  const marks: LargeClient["marks"] = [];
  const client = new SigningClient({
    nodes: [rig.url],
    tokenFile: join(rig.dir, "token-0"),
    nonceFile: join(rig.dir, "nonce-0"),
    maxTimeMs: 30 * 60_000,
    requestTimeoutMs: 10 * 60_000,
    pollWaitSeconds: 60,
    onEvent: (e) => marks.push({ phase: e.phase, at: performance.now() }),
  });
  return { client, marks };
}

/** The phases of one signing that started at `t0` and ended at `t1`. */
function phases(marks: LargeClient["marks"], t0: number, t1: number): LargeRound["phasesMs"] {
  const first = (...p: Phase[]) => marks.find((m) => p.includes(m.phase))?.at ?? Number.NaN;
  const answered = first("signing", "downloading");
  const receiving = first("downloading");
  return { upload: answered - t0, poll: receiving - answered, receive: t1 - receiving };
}

/** The node's upload of `file` and its signed file back: wall time, CPU, peak RSS, checked. */
async function nodeRound(rig: Rig, { client, marks }: LargeClient, file: string, caFile: string) {
  const { nodePid: pid } = rig;
  const resetWorked = resetPeakRss(pid);
  const before = { cpu: cpuMs(pid), tools: endedChildrenCpuMs(pid), client: process.cpuUsage() };
  marks.length = 0;
  const t0 = performance.now();
  const r = await client.sign(file, "authenticode", signedName(file));
  const t1 = performance.now();
  const nodeMs = t1 - t0;
  const clientCpu = process.cpuUsage(before.client);
  const figures = {
    nodeMs,
    phasesMs: phases(marks, t0, t1),
    nodePeakRssMiB: peakRss(pid) / MiB,
    nodeCpuMs: cpuMs(pid) - before.cpu,
    nodeToolCpuMs: endedChildrenCpuMs(pid) - before.tools,
    clientCpuMs: (clientCpu.user + clientCpu.system) / 1000,
  };
  const v = osslsigncodeVerify(r.output, caFile);
  if (!v.ok) console.log(`  the node's signed file does not verify: ${v.output}`);
  rmSync(r.output, { force: true });
  return { ...figures, nodeVerified: v.ok, resetWorked };
}

/** osslsigncode alone on `file`: wall time and CPU, checked. */
async function toolRound(tool: Tool, file: string) {
  const out = `${file}.tool.exe`;
  const cpu0 = tool.cpuMs();
  const toolMs = await tool.sign(file, out);
  const toolCpuMs = tool.cpuMs() - cpu0;
  const v = tool.verify(out, file);
  rmSync(out, { force: true });
  return { toolMs, toolCpuMs, toolVerified: v.ok };
}

/** `rounds` rounds on one file of `mib`, the order alternating; medians and the highest peak RSS. */
async function largeAuthenticode(
  rig: Rig,
  client: LargeClient,
  tool: Tool,
  caFile: string,
  mib: number,
  rounds: number,
): Promise<LargeResult> {
  const dir = tempDir("formats-large");
  const file = join(dir, `setup-${mib}.exe`);
  try {
    await writeLargePe(file, mib * MiB);
    const MBps = (ms: number) => (mib * MiB) / 1e6 / (ms / 1000);
    const nodeRssBefore = rss(rig.nodePid) / MiB;
    const results: LargeRound[] = [];
    let peakResetWorked = true;
    for (let round = 1; round <= rounds; round++) {
      stampPe(file, `${mib} MiB round ${round}`);
      const toolFirst = round % 2 === 1;
      const t1 = toolFirst ? await toolRound(tool, file) : undefined;
      const { resetWorked, ...n } = await nodeRound(rig, client, file, caFile);
      const t = t1 ?? (await toolRound(tool, file));
      peakResetWorked &&= resetWorked;
      const r: LargeRound = { ...n, ...t, ratio: ratio(MBps(n.nodeMs), MBps(t.toolMs)) };
      results.push(r);
      console.log(
        `  authenticode ${mib} MiB, round ${round}/${rounds}: node ${fmt(MBps(r.nodeMs))} MB/s end to end, osslsigncode ${fmt(MBps(r.toolMs))} MB/s (${fmt(r.ratio)}×), node peak RSS ${fmt(r.nodePeakRssMiB)} MiB`,
      );
    }
    const ratios = results.map((r) => r.ratio);
    return {
      sizeMiB: mib,
      rounds: results,
      nodeMBps: MBps(median(results.map((r) => r.nodeMs))),
      toolMBps: MBps(median(results.map((r) => r.toolMs))),
      ratio: median(ratios),
      ratioMin: Math.min(...ratios),
      ratioMax: Math.max(...ratios),
      nodePeakRssMiB: Math.max(...results.map((r) => r.nodePeakRssMiB)),
      nodeRssBeforeMiB: nodeRssBefore,
      peakResetWorked,
      phasesMs: {
        upload: median(results.map((r) => r.phasesMs.upload)),
        poll: median(results.map((r) => r.phasesMs.poll)),
        receive: median(results.map((r) => r.phasesMs.receive)),
      },
      verified: results.every((r) => r.nodeVerified && r.toolVerified),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- report

function printCases(cases: CaseResult[]): void {
  const at = (c: CaseResult, clients: number) => c.levels.find((l) => l.clients === clients);
  const top = Math.max(...LEVELS);
  printTable(
    `Formats: one node, full HTTP path, ${LEVELS.join(" and ")} clients, vs the format's tool per file (best of 1 and ${CORES} at a time)`,
    [
      "format",
      ...LEVELS.map((l) => `sigs/s @${l}`),
      `p50/p99 ms @${top}`,
      `node CPU ms/sig @${top} (its tool)`,
      "tool",
      "tool sigs/s",
      "tool CPU ms/sig",
      `× tool @${top}`,
      "failed",
      "verified node, tool",
    ],
    cases.map((c) => {
      const l = at(c, top);
      return [
        c.name,
        ...LEVELS.map((n) => at(c, n)?.sigsPerSec),
        l ? `${fmt(l.p50Ms)}/${fmt(l.p99Ms)}` : "-",
        l ? `${fmt(l.nodeCpuMsPerSig + l.nodeToolCpuMsPerSig)} (${fmt(l.nodeToolCpuMsPerSig)})` : "-",
        c.tool,
        c.toolBestSigsPerSec,
        c.toolBestCpuMsPerSig,
        l ? ratio(l.sigsPerSec, c.toolBestSigsPerSec) : undefined,
        c.levels.reduce((a, x) => a + x.failed, 0),
        `${c.verified.node.every(Boolean) ? "yes" : "NO"}, ${c.verified.tool ? "yes" : "NO"}`,
      ];
    }),
  );
}

function printLarge(large: LargeResult[]): void {
  printTable(
    "Authenticode, one large PE: end to end through the node (upload, spool, osslsigncode, the signed file back) vs osslsigncode alone",
    [
      "size MiB",
      "rounds",
      "node MB/s",
      "osslsigncode MB/s",
      "× osslsigncode",
      "rounds ×",
      "node s: upload+sign, poll, receive",
      "node peak RSS MiB",
      "RSS before MiB",
      "verified",
    ],
    large.map((r) => [
      r.sizeMiB,
      r.rounds.length,
      r.nodeMBps,
      r.toolMBps,
      r.ratio,
      `${fmt(r.ratioMin)}–${fmt(r.ratioMax)}`,
      [r.phasesMs.upload, r.phasesMs.poll, r.phasesMs.receive].map((ms) => fmt(ms / 1000)).join(", "),
      r.nodePeakRssMiB,
      r.nodeRssBeforeMiB,
      r.verified ? "yes" : "NO",
    ]),
  );
}

/** The targets, printed: what was wanted, what was measured, whether it was met. */
function targets(cases: CaseResult[], large: LargeResult[]) {
  const huge = large.find((r) => r.sizeMiB >= 1024);
  const verified =
    cases.every((c) => c.verified.tool && c.verified.node.every(Boolean)) && large.every((r) => r.verified);
  const failed = cases.reduce((a, c) => a + c.levels.reduce((b, l) => b + l.failed, 0), 0);
  const met = {
    peakRss1GiB: huge ? huge.nodePeakRssMiB < RSS_TARGET_MIB : null,
    zeroFailed: failed === 0,
    verified,
  };
  const yes = (b: boolean | null) => (b === null ? "not run (BENCH_HUGE=0)" : b ? "yes" : "NO");
  printTable(
    "Formats: targets",
    ["target", "wanted", "measured", "met"],
    [
      [
        `node peak RSS with a 1 GiB Authenticode file`,
        `< 200 MB (${fmt(RSS_TARGET_MIB, 1)} MiB)`,
        `${fmt(huge?.nodePeakRssMiB)} MiB`,
        yes(met.peakRss1GiB),
      ],
      ["failed jobs", "0", String(failed), yes(met.zeroFailed)],
      [
        "every output checked verifies (gpg, gpgv, ssh-keygen, minisign, osslsigncode)",
        "yes",
        String(verified),
        yes(verified),
      ],
    ],
  );
  return met;
}

function report(
  cases: CaseResult[],
  large: LargeResult[],
  node: { warm: WarmUp; afterSmallRssMiB: number },
): void {
  printCases(cases);
  printLarge(large);
  const met = targets(cases, large);
  writeResult("formats", {
    settings: {
      seconds: SECONDS,
      warmMs: WARM_MS,
      warmSignatures: WARM_SIGNATURES_PER_NODE,
      levels: LEVELS,
      toolConcurrencies: [1, CORES],
      rounds: ROUNDS,
      largeMiB: LARGE_MIB,
      hugeMiB: HUGE_MIB || null,
      clientDir: CLIENT_PARENT_DIR,
      rssTargetMiB: RSS_TARGET_MIB,
    },
    warmUp: node.warm,
    /** The warm node's RSS after the small inputs: the large files go to a fresh node. */
    nodeRssAfterSmallInputsMiB: node.afterSmallRssMiB,
    cases,
    large,
    met,
  });
}

main(async () => {
  const dir = clientDir("formats");
  const biggest = Math.max(LARGE_MIB, HUGE_MIB) * MiB;
  const cluster = await ProcessCluster.start({
    nodes: 1,
    authenticode: true,
    env: benchNodeEnv({
      SIGNING__signing__formats__authenticode__maxSize: String(biggest + 64 * MiB),
      // A 1 GiB file takes osslsigncode longer than the default two minutes on a busy machine.
      SIGNING__signing__formats__authenticode__timeoutMs: String(10 * 60_000),
    }),
  });
  const gpg = unprotectedGpgHome();
  try {
    const maxClients = Math.max(...LEVELS);
    const { rig, warm } = await warmOneNodeRig(cluster, dir, maxClients, {
      seconds: SECONDS,
      warmMs: WARM_MS,
    });
    const cases: CaseResult[] = [];
    for (const c of formatCases(cluster, gpg, dir)) cases.push(await measureCase(rig, c));
    const codeSigning = cluster.state.codeSigning as { certFile: string; keyFile: string; caFile: string };
    // The large files go to a freshly started node (as in large-files): its peak RSS is then what
    // a file costs, not the heap glibc keeps (GLIBC_TUNABLES) from the small inputs' load.
    const afterSmallRssMiB = rss(rig.nodePid) / MiB;
    await cluster.restart(0);
    const fresh = { ...rig, nodePid: cluster.nodes[0]?.child.pid as number };
    const client = largeClient(fresh);
    const tool = osslsigncodeTool(codeSigning);
    const large = [await largeAuthenticode(fresh, client, tool, codeSigning.caFile, LARGE_MIB, ROUNDS)];
    if (HUGE_MIB) large.push(await largeAuthenticode(fresh, client, tool, codeSigning.caFile, HUGE_MIB, 1));
    report(cases, large, { warm, afterSmallRssMiB });
  } finally {
    gpg.close();
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
