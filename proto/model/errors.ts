/**
 * The one error type Kedge throws on purpose: a stable `code` callers branch
 * on, a message that tells the operator what is wrong and what to check, and
 * the underlying `cause` when there is one.
 */
export class KedgeError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'KedgeError';
    this.code = code;
  }
}

/** True when `err` is a KedgeError with the given code. */
export function hasCode(err: unknown, code: string): boolean {
  return err instanceof KedgeError && err.code === code;
}

/** The message of anything thrown, for logs. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
