/**
 * The node list a client rotates through: it starts at a random node (spreading load across
 * clients), and a node that failed goes to the back so healthy ones are tried first.
 */
export class NodeRotation {
  private readonly order: string[];

  constructor(nodes: readonly string[], random: () => number = Math.random) {
    if (nodes.length === 0) throw new Error("no signing nodes given (use -H host:port)");
    const start = Math.floor(random() * nodes.length);
    this.order = [...nodes.slice(start), ...nodes.slice(0, start)];
  }

  get current(): string {
    return this.order[0] as string;
  }

  get all(): readonly string[] {
    return this.order;
  }

  /** Moves `node` to the back, unless another caller already did. */
  demote(node: string): void {
    const i = this.order.indexOf(node);
    if (i < 0 || this.order.length === 1) return;
    this.order.splice(i, 1);
    this.order.push(node);
  }
}

/** `host:port`, `http://host:port` or `https://host:port` → a base URL without a trailing slash. */
export function nodeUrl(spec: string, tls: boolean): string {
  const s = spec.trim().replace(/\/+$/, "");
  if (/^https?:\/\//.test(s)) return s;
  return `${tls ? "https" : "http"}://${s}`;
}
