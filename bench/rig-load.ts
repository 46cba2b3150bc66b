import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ChaosRig } from "../test/helpers/chaos.js";
import { SigningLoad } from "../test/helpers/load.js";
import { basicAuth, issueTokens, sleep, startAtNode, WARM_SIGNATURES_PER_NODE } from "./lib.js";

/**
 * The outage rigs' load: one token per client, issued before any fault, client i starting at
 * node i mod N; signs continuously until stop(). Resolves once the nodes are warm
 * (WARM_SIGNATURES_PER_NODE each, at most 2 minutes), with when the load started.
 */
export async function warmRigLoad(
  rig: ChaosRig,
  dir: string,
  clients: number,
): Promise<{ load: SigningLoad; loadStart: number }> {
  const nodes = rig.urls.length;
  const auth = basicAuth(rig.state.issuer.user, rig.state.issuer.password);
  const tokens = await issueTokens(rig.urls[0] as string, auth, clients);
  // In `dir`, not rig.dir (the disk): the clients share this process's one event loop, and
  // signtool's synchronous file creation on this VM's ext4 (0.5-1.1 ms a file, for seconds at a
  // time) stalled all of them at once: the rate climbed from ~200/s for 20 s (README, Performance).
  const files = tokens.map((t, i) => {
    const tokenFile = join(dir, `token-${i}`);
    writeFileSync(tokenFile, t);
    return { tokenFile, nonceFile: join(dir, `nonce-${i}`), random: startAtNode(i, nodes) };
  });
  await sleep(1500); // the monitor snapshots the new tokens (every second)
  const load = new SigningLoad(join(dir, "load"), files, {
    nodes: rig.urls,
    maxTimeMs: 30_000,
    requestTimeoutMs: 10_000,
  });
  const loadStart = Date.now();
  while (load.result.signed < WARM_SIGNATURES_PER_NODE * nodes && Date.now() < loadStart + 120_000)
    await sleep(100);
  return { load, loadStart };
}
