/** Shared by the routes and the shutdown sequence: once set, readiness fails and uploads are refused. */
export interface Lifecycle {
  shuttingDown: boolean;
}
