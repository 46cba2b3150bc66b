import { Redis } from "ioredis";

export interface SentinelAddress {
  host: string;
  port: number;
}

const CHANNEL = "+switch-master";

/**
 * Moves `client` to the new primary as soon as any Sentinel announces `+switch-master` for
 * `name`, whatever state the client is in.
 *
 * ioredis' own failoverDetector subscribes through the connection to the primary it has, so
 * when the primary *died* it hears nothing, and the client found the new one only at its next
 * retry: up to a second after Sentinel's announcement (retries back off to 1 s), for every
 * node and the monitor. These subscriptions go to the Sentinels directly and outlive the
 * primary; they close when the client ends.
 */
export function followSwitchMaster(client: Redis, sentinels: readonly SentinelAddress[], name: string): void {
  const subscribers = sentinels.map(
    (s) =>
      new Redis({
        host: s.host,
        port: s.port,
        lazyConnect: true,
        // The SUBSCRIBE waits for a Sentinel that is down, however long it stays down.
        maxRetriesPerRequest: null,
        connectTimeout: client.options.connectTimeout,
        retryStrategy: (attempt: number) => Math.min(100 * 2 ** attempt, 2000),
      }),
  );
  const onSwitch = (_channel: string, message: string) => {
    // "<name> <old-ip> <old-port> <new-ip> <new-port>"
    if (message.split(" ")[0] !== name) return;
    if (client.status === "reconnecting") client.connect().catch(() => {});
    else if (client.status === "ready") client.disconnect(true);
  };
  for (const sub of subscribers) {
    sub.on("error", () => {}); // a Sentinel that is down is the others' to cover
    sub.on("message", onSwitch);
    sub.subscribe(CHANNEL).catch(() => {});
  }
  client.once("end", () => {
    for (const sub of subscribers) sub.disconnect();
  });
}
