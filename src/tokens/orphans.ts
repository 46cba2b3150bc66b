import type { Epoch } from "../store/epoch.js";
import type { TokenClaims } from "./codec.js";

export type { Epoch } from "../store/epoch.js";

/** What happens to a token lost with Redis (`store.recoveryGraceMs`, `store.orphanPolicy`). */
export interface OrphanPolicy {
  /**
   * After a data loss, lost tokens get STORE_RECOVERING this long: the monitor's time to re-seed.
   */
  recoveryGraceMs: number;
  /** After the grace period: `heal` re-inserts a lost token, `reject` refuses it. */
  orphanPolicy: "heal" | "reject";
}

export type OrphanDecision =
  | { action: "invalidated" }
  | { action: "heal"; why: "lost_in_epoch" | "restored_epoch" | "orphan_policy" }
  | { action: "recovering"; retryAfterMs: number };

/**
 * What to do with a MAC-valid, unrevoked token that is not in Redis: the decision table of
 * DESIGN.md §4. Revocation is a marker that the store checks first, so a missing record is
 * always a loss: within the token's own epoch a write or two went missing (an unreplicated
 * write before a failover, an AOF fsync window, eviction) and the token heals; from an older
 * epoch, the epoch's state says whether the monitor restored, invalidated or has not yet acted.
 */
export function decideOrphan(
  claims: TokenClaims,
  epoch: Epoch,
  nowMs: number,
  policy: OrphanPolicy,
): OrphanDecision {
  // Before anything else: an operator invalidated everything issued before minIat, in any epoch.
  if (claims.iat * 1000 < epoch.minIat) return { action: "invalidated" };
  if (claims.ep === epoch.id) return { action: "heal", why: "lost_in_epoch" };
  if (epoch.state === "invalidated") return { action: "invalidated" };
  if (epoch.state === "restored") return { action: "heal", why: "restored_epoch" };
  const graceLeft = epoch.createdAt + policy.recoveryGraceMs - nowMs;
  if (graceLeft > 0) return { action: "recovering", retryAfterMs: graceLeft };
  return policy.orphanPolicy === "heal"
    ? { action: "heal", why: "orphan_policy" }
    : { action: "invalidated" };
}
