// The real tools' verifiers live in scripts/, which the benchmarks share (they never import test/).
export * from "../../scripts/verify-tools.js";
