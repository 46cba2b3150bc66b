import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** The dev Authenticode credentials: a CA (what verifiers trust) and a code-signing certificate it issued. */
export interface DevCodeSigning {
  caFile: string;
  certFile: string;
  keyFile: string;
}

function openssl(dir: string, args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
}

const LEAF_EXTENSIONS =
  "[leaf]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n";

/**
 * Makes (once: files present are reused) a dev CA and a code-signing certificate with openssl
 * in `dir`, so `npm start` signs Authenticode that `osslsigncode verify -CAfile ca.pem` accepts.
 */
export function devCodeSigning(dir: string): DevCodeSigning {
  const files = {
    caFile: join(dir, "ca.pem"),
    certFile: join(dir, "cert.pem"),
    keyFile: join(dir, "key.pem"),
  };
  if (Object.values(files).every((f) => existsSync(f))) return files;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ca = ["-subj", "/CN=signing-cluster dev CA", "-addext", "basicConstraints=critical,CA:TRUE"];
  openssl(dir, [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "3650",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    ...ca,
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  writeFileSync(join(dir, "leaf.cnf"), LEAF_EXTENSIONS);
  openssl(dir, [
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "key.pem",
    "-out",
    "cert.csr",
    "-subj",
    "/CN=signing-cluster dev code signing",
  ]);
  openssl(dir, [
    "x509",
    "-req",
    "-in",
    "cert.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "825",
    "-out",
    "cert.pem",
    "-extfile",
    "leaf.cnf",
    "-extensions",
    "leaf",
  ]);
  for (const secret of ["ca.key", "key.pem"]) chmodSync(join(dir, secret), 0o600);
  return files;
}
