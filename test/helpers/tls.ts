import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TestPki {
  dir: string;
  /** Self-signed server certificate for 127.0.0.1, and its key. */
  serverCert: string;
  serverKey: string;
  /** Another self-signed certificate for 127.0.0.1: the wrong one to pin. */
  otherCert: string;
  /** A CA for client certificates, and a client certificate it signed. */
  clientCa: string;
  clientCert: string;
  clientKey: string;
}

const openssl = (dir: string, ...args: string[]) =>
  execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });

function selfSigned(dir: string, name: string): void {
  openssl(
    dir,
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.crt`,
    "-days",
    "2",
    "-subj",
    "/CN=127.0.0.1",
    "-addext",
    "subjectAltName=IP:127.0.0.1",
  );
  chmodSync(join(dir, `${name}.key`), 0o600);
}

/** Certificates made with the real openssl, in a temp dir. */
export function makePki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), "signing-pki-"));
  selfSigned(dir, "server");
  selfSigned(dir, "other");
  selfSigned(dir, "client-ca");
  openssl(
    dir,
    "req",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    "client.key",
    "-out",
    "client.csr",
    "-subj",
    "/CN=build-machine-1",
  );
  openssl(
    dir,
    "x509",
    "-req",
    "-in",
    "client.csr",
    "-CA",
    "client-ca.crt",
    "-CAkey",
    "client-ca.key",
    "-CAcreateserial",
    "-out",
    "client.crt",
    "-days",
    "2",
  );
  chmodSync(join(dir, "client.key"), 0o600);
  const f = (n: string) => join(dir, n);
  return {
    dir,
    serverCert: f("server.crt"),
    serverKey: f("server.key"),
    otherCert: f("other.crt"),
    clientCa: f("client-ca.crt"),
    clientCert: f("client.crt"),
    clientKey: f("client.key"),
  };
}
