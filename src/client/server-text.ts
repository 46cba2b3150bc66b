/**
 * Text a node sent (an error message, a header) as it may be printed into a build log: control
 * characters (terminal escapes) replaced, the length capped, and anything shaped like a token
 * or a nonce redacted, since a node (or something pretending to be one) may echo them.
 */
const MAX_CHARS = 300;
// biome-ignore lint/suspicious/noControlCharactersInRegex: removing control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const TOKEN = /v1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}/g;
const NONCE = /\b[0-9]{1,15}\.[A-Za-z0-9_-]{8,}(\.[A-Za-z0-9_-]{8,}){1,2}\b/g;

export function serverText(text: string): string {
  const clean = text.replace(CONTROL, " ").replace(TOKEN, "[token]").replace(NONCE, "[nonce]");
  return clean.length > MAX_CHARS ? `${clean.slice(0, MAX_CHARS)}…` : clean;
}
