/**
 * The monitor's readiness and status, as /readyz, /livez and /status (and through them
 * `signing-admin status`) report them: is the detection loop running, is Redis reached, is
 * there a snapshot; what happened lately and what fires.
 */
import type { Alerter } from "./alerts.js";
import { secondsAgo } from "./clock.js";
import type { MonitorConfig } from "./config.js";
import type { Detector } from "./detector.js";
import type { RecentEvents, TokenRates } from "./recent.js";
import type { Snapshotter } from "./snapshotter.js";

/** What the monitor's health and status are read from. */
export interface HealthSources {
  monitorId: string;
  detector: Detector;
  snapshotter: Snapshotter;
  alerter: Alerter;
  recent: RecentEvents;
  tokenRates: TokenRates;
  spike: MonitorConfig["spike"];
  /** A detection pass begun longer ago than this means the loop is stuck (from monitor.detectCron). */
  loopFreshMs: number;
}

/** One check of /readyz: a failing one says what fails and since when. */
export interface Check {
  ok: boolean;
  detail: string;
  error?: string;
  since?: string;
  sinceSeconds?: number;
}

/** Redis as the detector last found it: a failure says what fails and since when. */
export function redisCheck(detector: Detector): Check {
  const down = detector.unreachable;
  if (down) {
    const since = new Date(down.since).toISOString();
    const seconds = secondsAgo(down.since);
    const detail = `unreachable since ${since} (${seconds}s): ${down.error}`;
    return { ok: false, detail, error: down.error, since, sinceSeconds: seconds };
  }
  const prev = detector.lastObservation;
  if (!prev) return { ok: false, detail: "not reached yet" };
  return { ok: true, detail: `run_id ${prev.runId.slice(0, 8)}, epoch ${prev.epoch.id} ${prev.epoch.state}` };
}

/**
 * Ready while the detection loop runs (a pass begun within loopFreshMs, which follows
 * monitor.detectCron); the other checks inform.
 */
export function readiness(s: HealthSources, now = Date.now()) {
  const sinceLastPass = now - s.detector.lastPassAt;
  const looping = sinceLastPass < s.loopFreshMs;
  const snapshot = s.snapshotter.current;
  return {
    status: looping ? "ok" : "unavailable",
    checks: {
      loop: { ok: looping, detail: `last detection ${sinceLastPass} ms ago (limit ${s.loopFreshMs} ms)` },
      redis: redisCheck(s.detector),
      snapshot: {
        ok: snapshot !== undefined,
        detail: snapshot
          ? `${snapshot.tokens.length} tokens, ${secondsAgo(snapshot.takenAt)}s old`
          : "none yet",
      },
    },
  };
}

/** For `signing-admin status`: what happened lately, what fires, the share of rejected tokens. */
export function monitorStatus(s: HealthSources) {
  return {
    monitor: s.monitorId,
    redis: redisCheck(s.detector),
    events: s.recent.list(),
    firing: s.alerter.firing(),
    tokens: {
      lastMinute: s.tokenRates.over(60) ?? null,
      last5Minutes: s.tokenRates.over(300) ?? null,
      spike: { ratio: s.spike.ratio, minChecksPerSecond: s.spike.minChecksPerSecond },
    },
  };
}
