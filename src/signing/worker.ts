import { createReadStream } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { workerData } from "node:worker_threads";
import { type EnabledKeys, loadSigners } from "./registry.js";
import type { FormatName } from "./signer.js";

export interface SignTask {
  format: FormatName;
  /** The spooled upload; read as a stream, never whole. */
  path: string;
}

// Each worker decrypts its keys once, then reuses them for every task.
const signers = loadSigners(workerData as EnabledKeys);

/** Inputs up to this size are read whole: openpgp.js signs a buffer ~5× faster than a stream. */
const WHOLE_INPUT_BYTES = 1024 * 1024;

export default async function sign(task: SignTask): Promise<Buffer> {
  const signer = (await signers).get(task.format);
  if (!signer) throw new Error(`format ${task.format} is not enabled`);
  const { size } = await stat(task.path);
  return signer.sign(size <= WHOLE_INPUT_BYTES ? await readFile(task.path) : createReadStream(task.path));
}
