/**
 * How the long-running programs end: `main` resolves to an exit code, or to "serving" and
 * stays up until a signal; a start-up error the operator can fix (`expected`) is one line on
 * stderr and exit 2; anything else is a bug: the stack and exit 1.
 */
export function runMain(
  program: string,
  main: () => Promise<number | "serving">,
  expected: (err: unknown) => boolean,
): void {
  main().then(
    (code) => {
      if (code !== "serving") process.exit(code);
    },
    (err: unknown) => {
      if (expected(err)) {
        console.error(`${program}: ${(err as Error).message}`);
        process.exit(2);
      }
      console.error(err);
      process.exit(1);
    },
  );
}
