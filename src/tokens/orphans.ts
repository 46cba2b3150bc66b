import type { TokenClaims } from "./codec.js";

/** The store epoch record, `signing:epoch` (DESIGN.md §4). Times are milliseconds. */
export interface Epoch {
  id: string;
  createdAt: number;
  state: "fresh" | "restored" | "invalidated";
  /** Tokens issued before this (ms) are refused; 0 when unset. */
  minIat: number;
}

export interface OrphanPolicy {
  recoveryGraceMs: number;
  orphanPolicy: "heal" | "reject";
}

export type OrphanDecision =
  | { action: "revoked" }
  | { action: "invalidated" }
  | { action: "heal" }
  | { action: "recovering"; retryAfterMs: number };

/**
 * What to do with a MAC-valid token that is not in Redis: the decision table of DESIGN.md §4.
 * A token missing in its own epoch was deleted on purpose; one from an older epoch was lost
 * with the store, and the epoch's state says whether the monitor restored, invalidated or
 * has not yet acted.
 */
export function decideOrphan(
  claims: TokenClaims,
  epoch: Epoch,
  nowMs: number,
  policy: OrphanPolicy,
): OrphanDecision {
  // Before anything else: an operator invalidated everything issued before minIat, in any epoch.
  if (claims.iat * 1000 < epoch.minIat) return { action: "invalidated" };
  if (claims.ep === epoch.id) return { action: "revoked" };
  if (epoch.state === "invalidated") return { action: "invalidated" };
  if (epoch.state === "restored") return { action: "heal" };
  const graceLeft = epoch.createdAt + policy.recoveryGraceMs - nowMs;
  if (graceLeft > 0) return { action: "recovering", retryAfterMs: graceLeft };
  return policy.orphanPolicy === "heal" ? { action: "heal" } : { action: "invalidated" };
}
