import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ChaosRig } from "../scripts/chaos-rig.js";
import { basicAuth, issueTokens, sleep, WARM_SIGNATURES_PER_NODE } from "./lib.js";
import { WorkerLoad } from "./load-worker.js";

/**
 * The outage rigs' load: one token per client, issued before any fault, client i starting at
 * node i mod N, on a worker thread (load-worker.ts); signs continuously until stop(). Resolves
 * once the nodes are warm (WARM_SIGNATURES_PER_NODE each, at most 2 minutes), with when the load
 * started and when it was warm.
 */
export async function warmRigLoad(
  rig: ChaosRig,
  dir: string,
  clients: number,
): Promise<{ load: WorkerLoad; loadStart: number; warmAt: number }> {
  const nodes = rig.urls.length;
  const auth = basicAuth(rig.state.issuer.user, rig.state.issuer.password);
  const tokens = await issueTokens(rig.urls[0] as string, auth, clients);
  // In `dir`, not rig.dir (the disk): the clients share one event loop, and signtool's
  // synchronous file creation on a slow disk stalls all of them at once.
  const files = tokens.map((t, i) => {
    const tokenFile = join(dir, `token-${i}`);
    writeFileSync(tokenFile, t);
    return { tokenFile, nonceFile: join(dir, `nonce-${i}`) };
  });
  await sleep(1500); // the monitor snapshots the new tokens (every second)
  const load = WorkerLoad.start({ dir, nodes: rig.urls, clients: files });
  const loadStart = Date.now();
  while (load.signed < WARM_SIGNATURES_PER_NODE * nodes && Date.now() < loadStart + 120_000) await sleep(100);
  return { load, loadStart, warmAt: Date.now() };
}
