import { type DestinationStream, type Logger, pino } from "pino";

/**
 * Structured JSON logs. Tokens, passwords and keys are never logged; these paths are
 * redacted in case a careless log call passes a request or config object.
 */
export function createLogger(level: string, node: string, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { node },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: [
        "token",
        "password",
        "passphrase",
        "secret",
        "*.token",
        "*.password",
        "*.passphrase",
        "*.secret",
        "req.headers.authorization",
      ],
      censor: "[redacted]",
    },
  };
  return destination ? pino(options, destination) : pino(options);
}
