/**
 * Where a large file's time goes (issue 31): one warm node, one file of BENCH_PROFILE_MIB
 * uploaded by SigningClient (signtool's code) in rounds, with V8's CPU profiler on the main
 * thread of both sides (the node through bench/profile-preload.ts) and each side's user and
 * system CPU from /proc; `gpg --detach-sign` with an unprotected key on the same file in the
 * same round for the ratio. Samples are put in a few buckets by the function they fell in:
 * SHA-256, multipart parsing (busboy's boundary search on the node, the form on the client),
 * the file and socket calls JavaScript makes, garbage collection, and the rest (other
 * JavaScript, and native work outside it: the node's socket reads happen there, in libuv).
 * Not in `npm run bench`.
 *
 *   node dist/bench/large-file-profile.js     BENCH_PROFILE_MIB=1024 BENCH_ROUNDS=3
 */
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { join } from "node:path";
import { ProcessCluster } from "../scripts/process-cluster.js";
import type { SigningClient } from "../src/client/signing-client.js";
import {
  basicAuth,
  benchNodeEnv,
  clientDir,
  fmt,
  type GpgHome,
  gpgHome,
  issueTokens,
  largeFileClient,
  machine,
  main,
  printTable,
  ROOT,
  sleep,
  unprotectedGpgHome,
  writeResult,
} from "./lib.js";

const MiB = 1024 * 1024;
const SIZE_MIB = Number(process.env.BENCH_PROFILE_MIB ?? 1024);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
const BUCKETS = ["sha-256", "multipart", "system calls", "gc", "other", "idle"] as const;
type Bucket = (typeof BUCKETS)[number];

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string } }[];
  samples: number[];
  timeDeltas: number[];
}

/** The bucket of one profiled function: by its name and file. */
function bucketOf(functionName: string, url: string): Bucket {
  if (functionName === "(idle)") return "idle";
  if (functionName === "(garbage collector)") return "gc";
  if (url === "" && functionName === "update") return "sha-256";
  if (/busboy|streamsearch|sbmh|multipart/.test(url)) return "multipart";
  if (url === "" && /^(read|writeBuffer|writev|writeUtf8String|open|close|fstat)$/.test(functionName))
    return "system calls";
  return "other";
}

/** Milliseconds of a profile in each bucket. */
function buckets(profile: CpuProfile): Record<Bucket, number> {
  const frames = new Map(profile.nodes.map((n) => [n.id, n.callFrame]));
  const ms = Object.fromEntries(BUCKETS.map((b) => [b, 0])) as Record<Bucket, number>;
  profile.samples.forEach((id, i) => {
    const f = frames.get(id);
    if (f) ms[bucketOf(f.functionName, f.url)] += (profile.timeDeltas[i] ?? 0) / 1000;
  });
  return ms;
}

/** User and system CPU of a process so far, ms. */
function userSys(pid: number): { user: number; sys: number } {
  const fields = (readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1] ?? "").split(" ");
  const tick = 10; // USER_HZ is 100 on Linux
  return { user: Number(fields[11]) * tick, sys: Number(fields[12]) * tick };
}

/** This process's main-thread profile while `fn` runs. */
async function profiled<T>(
  session: Session,
  fn: () => Promise<T>,
): Promise<{ value: T; profile: CpuProfile }> {
  const post = (method: string) =>
    new Promise<unknown>((done, fail) =>
      session.post(method, (err, r) => (err ? fail(err) : done((r as { profile?: unknown })?.profile))),
    );
  await post("Profiler.enable");
  await post("Profiler.start");
  const value = await fn();
  return { value, profile: (await post("Profiler.stop")) as CpuProfile };
}

/** The node's profile file, once its preload has written it. */
async function nodeProfile(prefix: string, pid: number): Promise<CpuProfile> {
  const file = `${prefix}.${pid}.cpuprofile`;
  for (let i = 0; i < 100 && !existsSync(file); i++) await sleep(50);
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  rmSync(file);
  return profile;
}

interface Side {
  userMs: number;
  sysMs: number;
  buckets: Record<Bucket, number>;
}

interface Round {
  uploadMs: number;
  gpgMs: number;
  node: Side;
  client: Side;
}

async function uploadRound(rig: Rig, round: number): Promise<Round> {
  writeFileSync(rig.file, `round ${round}\n`, { flag: "r+" });
  const gpgMs = await rig.gpg.sign(rig.file, join(rig.dir, "gpg.asc"));
  const node0 = userSys(rig.pid);
  const client0 = process.cpuUsage();
  process.kill(rig.pid, "SIGUSR2");
  const t0 = performance.now();
  const { profile } = await profiled(rig.session, () =>
    rig.client.sign(rig.file, "gpg", join(rig.dir, `node-${round}.asc`)),
  );
  const uploadMs = performance.now() - t0;
  process.kill(rig.pid, "SIGUSR1");
  const client = process.cpuUsage(client0);
  const node1 = userSys(rig.pid);
  if (!rig.verifier.verify(join(rig.dir, `node-${round}.asc`), rig.file)) {
    throw new Error(`round ${round}: the node's signature does not verify`);
  }
  return {
    uploadMs,
    gpgMs,
    node: {
      userMs: node1.user - node0.user,
      sysMs: node1.sys - node0.sys,
      buckets: buckets(await nodeProfile(rig.profilePrefix, rig.pid)),
    },
    client: { userMs: client.user / 1000, sysMs: client.system / 1000, buckets: buckets(profile) },
  };
}

interface Rig {
  pid: number;
  file: string;
  dir: string;
  client: SigningClient;
  session: Session;
  gpg: GpgHome;
  /** The dev key's gpg home: checks the node's signatures. */
  verifier: GpgHome;
  profilePrefix: string;
}

function printRounds(rounds: Round[]): void {
  const perGiB = (ms: number) => fmt((ms * 1024) / SIZE_MIB, 0);
  const side = (name: "node" | "client") =>
    rounds.map((r, i) => [
      i + 1,
      name,
      fmt((SIZE_MIB * MiB) / 1e3 / r.uploadMs, 0),
      fmt(r.uploadMs / r.gpgMs, 2),
      perGiB(r[name].userMs),
      perGiB(r[name].sysMs),
      ...BUCKETS.map((b) => perGiB(r[name].buckets[b])),
    ]);
  printTable(
    `Where ${SIZE_MIB} MiB goes, ms per GiB (main-thread profile buckets; user/sys from /proc, all threads)`,
    ["round", "side", "MB/s", "× gpg time", "user", "sys", ...BUCKETS],
    [...side("node"), ...side("client")],
  );
}

main(async () => {
  const dir = clientDir("profile");
  const profilePrefix = join(dir, "node");
  const cluster = await ProcessCluster.start({
    nodes: 1,
    env: benchNodeEnv({
      SIGNING__signing__formats__gpg__maxSize: String(2 * SIZE_MIB * MiB),
      NODE_OPTIONS: `--import=${join(ROOT, "dist", "bench", "profile-preload.js")}`,
      BENCH_PROFILE_OUT: profilePrefix,
    }),
  });
  const gpg = unprotectedGpgHome();
  const verifier = gpgHome(cluster.state.keys.gpg);
  const session = new Session();
  session.connect();
  try {
    const node = cluster.nodes[0];
    if (!node?.child.pid) throw new Error("no node");
    const auth = basicAuth(cluster.state.issuer.user, cluster.state.issuer.password);
    writeFileSync(join(dir, "token"), (await issueTokens(node.url, auth, 1))[0] ?? "");
    const file = join(dir, "artifact.bin");
    const block = randomBytes(MiB);
    writeFileSync(file, Buffer.alloc(0));
    for (let i = 0; i < SIZE_MIB; i++) {
      block.writeUInt32LE(i, 0);
      writeFileSync(file, block, { flag: "a" });
    }
    const client = largeFileClient(node.url, dir);
    const rig: Rig = { pid: node.child.pid, file, dir, client, session, gpg, verifier, profilePrefix };
    await uploadRound(rig, 0); // warm: V8 compiles the upload path, gpg-agent starts
    const rounds: Round[] = [];
    for (let r = 1; r <= ROUNDS; r++) rounds.push(await uploadRound(rig, r));
    printRounds(rounds);
    writeResult("large-file-profile", {
      settings: { sizeMiB: SIZE_MIB, rounds: ROUNDS },
      machine: machine(),
      rounds,
    });
  } finally {
    session.disconnect();
    gpg.close();
    verifier.close();
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
