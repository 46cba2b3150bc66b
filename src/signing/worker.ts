import { createReadStream } from "node:fs";
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

export default async function sign(task: SignTask): Promise<Buffer> {
  const signer = (await signers).get(task.format);
  if (!signer) throw new Error(`format ${task.format} is not enabled`);
  return signer.sign(createReadStream(task.path));
}
