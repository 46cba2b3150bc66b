import { join } from "node:path";
import { issueCodeSigningCert, openssl, selfSignedCa } from "../../scripts/dev-code-signing.js";

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

export function makeCodeSigningPki(dir: string): CodeSigningPki {
  selfSignedCa(dir, "ca", "signing-cluster test CA", 2);
  selfSignedCa(dir, "other-ca", "unrelated test CA", 2);
  issueCodeSigningCert(dir, {
    keyFile: "leaf.key",
    certFile: "leaf.pem",
    cn: "signing-cluster test code signing",
    days: 1,
  });
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
