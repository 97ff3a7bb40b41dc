/**
 * The SDK's errors. Each says whether calling again can help, because the
 * host retries a retryable reconcile error with backoff and waits for a
 * change otherwise.
 *
 * @module
 */

/**
 * The API server's (or the host's) answer to a failed call: the contract's
 * `api-error`.
 */
export class ApiError extends Error {
  /**
   * @param {number} code the HTTP status; 0 when the call failed before
   *   reaching the API server
   * @param {string} reason machine-readable, for example `NotFound`
   * @param {string} message human-readable
   */
  constructor(code, reason, message) {
    super(`api error ${code} ${reason}: ${message}`);
    this.name = 'ApiError';
    this.code = code;
    this.reason = reason;
    this.detail = message;
  }

  /** Whether the object does not exist (404). */
  isNotFound() {
    return this.code === 404;
  }

  /** Whether the call conflicted with the stored object (409). */
  isConflict() {
    return this.code === 409;
  }

  /** Whether RBAC refused the call (403). */
  isForbidden() {
    return this.code === 403;
  }

  /**
   * Whether the same call can succeed later. A request the API server
   * rejects as malformed or invalid (400, 405, 406, 413, 415, 422) fails the
   * same way every time; everything else can heal without a change to the
   * plugin (a conflict by re-reading, a 403 by an RBAC change, a 404 by the
   * object appearing, 429 and 5xx by waiting, 0 by reconnecting).
   */
  isRetryable() {
    return ![400, 405, 406, 413, 415, 422].includes(this.code);
  }
}

/** Why a reconcile failed, and whether retrying can help. */
export class ReconcileError extends Error {
  /**
   * @param {string} message shown in the log and the Plugin's status
   * @param {boolean} retryable whether the host should call again
   */
  constructor(message, retryable) {
    super(message);
    this.name = 'ReconcileError';
    this.retryable = retryable;
  }

  /** An error that calling again, later, can fix. */
  static retryable(message) {
    return new ReconcileError(message, true);
  }

  /** An error that only a change (to the object, the config or the plugin) fixes. */
  static permanent(message) {
    return new ReconcileError(message, false);
  }

  /**
   * The reconcile error for any error value: an `ApiError` keeps its
   * retryability, a `ReconcileError` stays as it is, and anything else
   * (a bad configuration, an owner without uid, a bug) is permanent.
   * `context` prefixes the message, for example `applying labels`.
   */
  static from(error, context) {
    const prefix = context ? `${context}: ` : '';
    if (error instanceof ReconcileError) {
      return context ? new ReconcileError(prefix + error.message, error.retryable) : error;
    }
    if (error instanceof ApiError) {
      return new ReconcileError(prefix + error.message, error.isRetryable());
    }
    const message = error instanceof Error ? error.message : String(error);
    return new ReconcileError(prefix + message, false);
  }
}

/** The plugin's configuration cannot be used: fixed only by changing it. */
export class ConfigError extends Error {
  constructor(message) {
    super(`invalid plugin configuration: ${message}`);
    this.name = 'ConfigError';
  }
}

/**
 * Why a plugin could not decide about an admission request. The host hears
 * it as the `admission` export's error and applies the admission rule's
 * failure policy with this message as the cause (`Fail` refuses the
 * request, `Ignore` lets it through with a warning).
 */
export class AdmissionError extends Error {
  constructor(message) {
    super(message);
    this.name = 'AdmissionError';
  }
}

/** A label selector does not parse: the text says which requirement is malformed. */
export class SelectorError extends Error {
  constructor(message) {
    super(message);
    this.name = 'SelectorError';
  }
}

/** An owner reference cannot be set. */
export class OwnerError extends Error {
  constructor(message) {
    super(message);
    this.name = 'OwnerError';
  }
}

/** A value as an error message shows it: JSON, cut short. */
export function describe(value) {
  if (value === undefined) return 'undefined';
  if (typeof value === 'function') return 'a function';
  let text;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = Object.prototype.toString.call(value);
  }
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}
