/** Whole seconds since `ms` (a Date.now() value), as the monitor's texts and checks say ages. */
export const secondsAgo = (ms: number, now = Date.now()): number => Math.round((now - ms) / 1000);
