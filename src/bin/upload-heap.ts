import { setFlagsFromString } from "node:v8";

/**
 * Lets a node's old generation grow to 4× its live size before a full collection: the largest
 * factor V8 itself uses, fixed so it does not fall after the node sat idle.
 *
 * Why: Node's HTTP parser copies every upload chunk into a fresh 64 KiB ArrayBuffer, and V8
 * counts those bytes against the old generation's limit until a scavenge frees them (every
 * ~32 MiB). A node that was idle for a few seconds has that limit cut to ~2.2× a ~19 MiB heap,
 * less than 32 MiB of headroom, so a large upload then collected the whole heap every ~35 MiB:
 * 2.2–2.3 s of node CPU per GiB instead of 1.35–1.6 s (bench/README.md, "large-files"). The flag is read
 * at each full collection, so setting it at start-up takes effect.
 */
const HEAP_GROWING_PERCENT = 300;

/** Sets it, unless the operator gave node a `--heap-growing-percent` of their own. */
export function tuneHeapForUploads(execArgv: readonly string[] = process.execArgv): boolean {
  if (execArgv.some((a) => /^--heap[-_]growing[-_]percent\b/.test(a))) return false;
  setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  return true;
}
