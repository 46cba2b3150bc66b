import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

// The inputs and the verifier live in scripts/, which the benchmarks share (they never import test/).
export {
  minimalPe,
  osslsigncodeVerify,
  powershellScript,
  writeLargePe,
} from "../../scripts/authenticode-files.js";

/** A throw-away code-signing PKI in `dir`: a CA, a leaf certificate with the codeSigning EKU, and an unrelated CA. */
export interface CodeSigningPki {
  caFile: string;
  otherCaFile: string;
  certFile: string;
  keyFile: string;
  pkcs12File: string;
  pkcs12Passphrase: string;
}

function openssl(dir: string, args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
}

function selfSignedCa(dir: string, name: string, cn: string): void {
  openssl(dir, [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "2",
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

export function makeCodeSigningPki(dir: string): CodeSigningPki {
  selfSignedCa(dir, "ca", "signing-cluster test CA");
  selfSignedCa(dir, "other-ca", "unrelated test CA");
  writeFileSync(
    join(dir, "leaf.cnf"),
    "[leaf]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n",
  );
  openssl(dir, [
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "leaf.key",
    "-out",
    "leaf.csr",
    "-subj",
    "/CN=signing-cluster test code signing",
  ]);
  openssl(dir, [
    "x509",
    "-req",
    "-in",
    "leaf.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "1",
    "-out",
    "leaf.pem",
    "-extfile",
    "leaf.cnf",
    "-extensions",
    "leaf",
  ]);
  const pkcs12Passphrase = "test pkcs12 passphrase";
  openssl(dir, [
    "pkcs12",
    "-export",
    "-in",
    "leaf.pem",
    "-inkey",
    "leaf.key",
    "-certfile",
    "ca.pem",
    "-out",
    "leaf.p12",
    "-passout",
    `pass:${pkcs12Passphrase}`,
  ]);
  return {
    caFile: join(dir, "ca.pem"),
    otherCaFile: join(dir, "other-ca.pem"),
    certFile: join(dir, "leaf.pem"),
    keyFile: join(dir, "leaf.key"),
    pkcs12File: join(dir, "leaf.p12"),
    pkcs12Passphrase,
  };
}
