/**
 * Errors as values: every call that can fail returns a `Result`, never
 * throws. Check `ok`, or `unwrap()` inside a reconcile: the error it throws
 * is caught by `exportController` and reported with its retryability, as
 * Rust's `?` does.
 *
 * @module
 */

/** The outcome of a call that can fail: `{ok: true, value}` or `{ok: false, error}`. */
export class Result {
  /** @private */
  constructor(ok, value, error) {
    this.ok = ok;
    if (ok) this.value = value;
    else this.error = error;
    Object.freeze(this);
  }

  /** The value; throws the error when the call failed. */
  unwrap() {
    if (this.ok) return this.value;
    throw this.error;
  }

  /** The value, or `fallback` when the call failed. */
  unwrapOr(fallback) {
    return this.ok ? this.value : fallback;
  }

  /** A result whose value is `fn(value)`; a failure stays as it is. */
  map(fn) {
    return this.ok ? ok(fn(this.value)) : this;
  }
}

/** A successful result holding `value`. */
export function ok(value) {
  return new Result(true, value, undefined);
}

/** A failed result holding `error`. */
export function err(error) {
  return new Result(false, undefined, error);
}
