import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** The dev Authenticode credentials: a CA (what verifiers trust) and a code-signing certificate it issued. */
export interface DevCodeSigning {
  caFile: string;
  certFile: string;
  keyFile: string;
}

/** Runs openssl in `dir`; its stderr becomes the error when it fails. */
export function openssl(dir: string, args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
}

const LEAF_EXTENSIONS =
  "[leaf]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n";

/** A self-signed CA in `dir`: `<name>.key` and `<name>.pem`. */
export function selfSignedCa(dir: string, name: string, cn: string, days: number): void {
  openssl(dir, [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    String(days),
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.pem`,
    "-subj",
    `/CN=${cn}`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
}

/** What issueCodeSigningCert writes in its dir: file names, the subject, the lifetime. */
export interface CodeSigningLeaf {
  keyFile: string;
  certFile: string;
  cn: string;
  days: number;
}

/** A new key and a certificate for it with the codeSigning EKU, issued by `ca.pem`/`ca.key` in `dir`. */
export function issueCodeSigningCert(dir: string, leaf: CodeSigningLeaf): void {
  writeFileSync(join(dir, "leaf.cnf"), LEAF_EXTENSIONS);
  const csr = `${leaf.certFile.replace(/\.pem$/, "")}.csr`; // cert.pem → cert.csr
  openssl(dir, [
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    leaf.keyFile,
    "-out",
    csr,
    "-subj",
    `/CN=${leaf.cn}`,
  ]);
  openssl(dir, [
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    String(leaf.days),
    "-out",
    leaf.certFile,
    "-extfile",
    "leaf.cnf",
    "-extensions",
    "leaf",
  ]);
}

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
  selfSignedCa(dir, "ca", "signing-cluster dev CA", 3650);
  issueCodeSigningCert(dir, {
    keyFile: "key.pem",
    certFile: "cert.pem",
    cn: "signing-cluster dev code signing",
    days: 825,
  });
  for (const secret of ["ca.key", "key.pem"]) chmodSync(join(dir, secret), 0o600);
  return files;
}
