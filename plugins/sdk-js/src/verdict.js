/**
 * What a plugin decided about one admission request: `allow()`,
 * `deny(message, {code})`, either with `.warn(text)` for the client, and
 * from `mutate` a JSON patch (`patched(request, changed)` in the admission
 * module computes it; `.withPatch(operations)` takes one written by hand).
 *
 * ```js
 * allow().warn('spec.replicas above 10 will be capped');
 * deny('spec.replicas must be positive', { code: 422 });
 * ```
 *
 * Pure values, no host calls: `@leasehold/sdk/testing` builds them too.
 *
 * @module
 */

import { describe } from './errors.js';
import { patchProblem } from './json-patch.js';

/** The statuses a denial may carry; the host answers 403 for anything else, so the SDK refuses it where it is written. */
const DENIAL_CODES = { min: 400, max: 599 };

/** What the API server decides on. Make one with `allow()` or `deny()`. */
export class Verdict {
  /** @private use `allow`, `deny` or `patched` */
  constructor(allowed, message, code, warnings, patch) {
    this.allowed = allowed;
    this.message = message;
    this.code = code;
    this.warnings = Object.freeze([...warnings]);
    this.patch = patch === undefined ? undefined : Object.freeze([...patch]);
    Object.freeze(this);
  }

  /**
   * The same verdict with one more warning for the client (kubectl prints
   * it), whether it allows or denies.
   */
  warn(warning) {
    if (typeof warning !== 'string' || warning.trim() === '') {
      throw new TypeError(`warn takes the text of a warning, not ${describe(warning)}`);
    }
    return new Verdict(this.allowed, this.message, this.code, [...this.warnings, warning], this.patch);
  }

  /**
   * The same verdict with `operations`, an RFC 6902 JSON patch, for the API
   * server to apply to the object; from `mutate` only (a patch from
   * `validate` is an error). An empty patch is no change. A patch that is
   * not one throws a TypeError.
   */
  withPatch(operations) {
    const problem = patchProblem(operations);
    if (problem) throw new TypeError(`not an RFC 6902 JSON patch: ${problem}`);
    const patch = operations.length === 0 ? undefined : operations;
    return new Verdict(this.allowed, this.message, this.code, this.warnings, patch);
  }
}

/** The request may proceed unchanged. */
export function allow() {
  return new Verdict(true, undefined, undefined, [], undefined);
}

/**
 * The request is refused, and whoever made it reads `message`: say what
 * is wrong and how to fix it. `code` is the HTTP status (400–599; 403
 * when absent), for example 422 for an invalid object.
 */
export function deny(message, options = {}) {
  if (typeof message !== 'string' || message.trim() === '') {
    throw new TypeError(`deny needs a message saying what is wrong and how to fix it, not ${describe(message)}`);
  }
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(`deny takes its code as an option, deny(message, { code: 422 }), not ${describe(options)}`);
  }
  const { code } = options;
  if (code !== undefined
    && !(Number.isInteger(code) && code >= DENIAL_CODES.min && code <= DENIAL_CODES.max)) {
    throw new TypeError(`a denial's code is an HTTP error status, a whole number from 400 to 599, not ${describe(code)}`);
  }
  return new Verdict(false, message, code, [], undefined);
}
