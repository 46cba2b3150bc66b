/**
 * Redis key names (DESIGN.md §4). The keys of one token share the hash tag `{<id>}` so one
 * script can touch all of them.
 */
export class StoreKeys {
  constructor(readonly prefix: string) {}

  epoch(): string {
    return `${this.prefix}epoch`;
  }
  token(id: string): string {
    return `${this.prefix}token:{${id}}`;
  }
  revoked(id: string): string {
    return `${this.prefix}revoked:{${id}}`;
  }
  nonce(id: string): string {
    return `${this.prefix}nonce:{${id}}`;
  }
  job(format: string, sha256: string): string {
    return `${this.prefix}job:${format}:${sha256}`;
  }
  result(format: string, sha256: string): string {
    return `${this.prefix}result:${format}:${sha256}`;
  }
  /** Classic clients poll by sha1: this maps it to the sha256 that names jobs and results. */
  sha1Alias(format: string, sha1: string): string {
    return `${this.prefix}sha1:${format}:${sha1}`;
  }
}
