/**
 * The `admission` export (world `controller-with-admission`): checking, and
 * defaulting, requests to the API server before it stores them.
 *
 * ```js
 * export const admission = exportAdmission({
 *   validate(request) {
 *     if (request.operation === 'DELETE') return allow();   // no object to check
 *     const team = request.object.metadata?.labels?.team;
 *     return team ? allow() : deny('every ConfigMap needs a team label');
 *   },
 *   mutate(request) {
 *     if (request.object === undefined) return allow();
 *     const labels = (request.object.metadata.labels ??= {});
 *     labels.team ??= 'unowned';
 *     return patched(request, request.object);             // the JSON patch from the object as sent
 *   },
 * });
 * ```
 *
 * componentize-js builds the component's `admission` export from the entry
 * module's export of that name (as `reconciler`), when the component is
 * built with `leasehold-js build --world controller-with-admission`.
 *
 * For every request its Plugin's admission rules match, the API server
 * asks `mutate` (which may change the object) and later `validate` (which
 * allows or denies it), through any replica, leader or not. Each review
 * runs in a fresh instance within the plugin's limits: keep it quick and
 * keep no state. Kubernetes calls are the plugin's account's, and reads
 * only.
 *
 * @module
 */

import { AdmissionError, describe } from './errors.js';
import { diff } from './json-patch.js';
import { Result, err, ok } from './result.js';
import { Verdict, allow } from './verdict.js';
import * as log from './log.js';

/** What an AdmissionRequest's `operation` may be. */
const OPERATIONS = ['CREATE', 'UPDATE', 'DELETE', 'CONNECT'];

/** The JSON text of each request, as sent: `patched` diffs against it, so a handler may change `object` in place. */
const SENT = new WeakMap();

/**
 * One request under review, as the API server describes it (see
 * `parseRequest`).
 */
export class AdmissionRequest {
  /** @private use `parseRequest` */
  constructor(raw, json) {
    /** The review's id; the host answers with it. */
    this.uid = raw.uid;
    /** `CREATE`, `UPDATE`, `DELETE` or `CONNECT`. */
    this.operation = raw.operation;
    /** The object's type as the SDK names types: `{apiVersion, kind}`. */
    this.kind = {
      apiVersion: raw.kind.group ? `${raw.kind.group}/${raw.kind.version}` : raw.kind.version,
      kind: raw.kind.kind,
    };
    /** `{group, version, resource}`, as sent. */
    this.resource = raw.resource;
    /** For example `status`, for a request on a subresource. */
    this.subResource = raw.subResource;
    /** Empty on a create whose object has only a `generateName`: the API server has not named it yet. */
    this.name = raw.name ?? '';
    /** Absent for a cluster-scoped object. */
    this.namespace = raw.namespace || undefined;
    /** The object as it would be stored (create, update); absent on a delete. Yours to change in `mutate`. */
    this.object = raw.object ?? undefined;
    /** The object as it is stored now (update, delete). */
    this.oldObject = raw.oldObject ?? undefined;
    /** Who made the request: `{username, uid, groups, extra}`. */
    this.userInfo = raw.userInfo ?? {};
    /** Nothing will be stored (`kubectl --dry-run=server`): have no side effects. */
    this.dryRun = raw.dryRun === true;
    SENT.set(this, json);
  }

  /**
   * The whole request exactly as the API server sent it (its uid,
   * requestKind, options, …), parsed anew on each read, so changes to
   * `object` do not show in it.
   */
  get raw() {
    return JSON.parse(SENT.get(this));
  }
}

/**
 * The AdmissionReview's `request`, as the host passes it (JSON text),
 * checked: a failed `Result` with an `AdmissionError` when it is not JSON,
 * names no operation or kind, or is a create or update without an object.
 */
export function parseRequest(json) {
  if (typeof json !== 'string') {
    return err(new AdmissionError(`the admission request is not JSON text but ${describe(json)}`));
  }
  let raw;
  try {
    raw = JSON.parse(json);
  } catch (error) {
    return err(new AdmissionError(`the admission request is not JSON: ${error.message}`));
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    return err(new AdmissionError(`the admission request is not a JSON object but ${describe(raw)}`));
  }
  if (!OPERATIONS.includes(raw.operation)) {
    return err(new AdmissionError(
      `the admission request's operation is ${describe(raw.operation)}, not one of ${OPERATIONS.join(', ')}`,
    ));
  }
  const { kind } = raw;
  if (typeof kind?.version !== 'string' || typeof kind?.kind !== 'string') {
    return err(new AdmissionError(`the admission request names no kind ({group, version, kind}): ${describe(kind)}`));
  }
  const needsObject = raw.operation === 'CREATE' || raw.operation === 'UPDATE';
  if (needsObject && !isObject(raw.object)) {
    return err(new AdmissionError(`the admission request is a ${raw.operation} without an object`));
  }
  return ok(new AdmissionRequest(raw, json));
}

/**
 * Allows the request with its object changed into `changed`: the verdict
 * carries the JSON patch (RFC 6902) from the object as the API server sent
 * it to `changed` as JSON (what `JSON.stringify` writes: a member set to
 * `undefined` is removed). `changed` may be `request.object` itself,
 * changed in place. A list that differs is replaced whole.
 *
 * A failed `Result` with an `AdmissionError` for a request without an
 * object (a delete); return it as it is, or `.map(verdict => verdict.warn(…))`.
 *
 * @returns {Result}
 */
export function patched(request, changed) {
  const json = SENT.get(request);
  if (json === undefined) {
    throw new TypeError('patched(request, changed) takes the request the handler was given');
  }
  const sent = JSON.parse(json).object;
  if (!isObject(sent)) {
    return err(new AdmissionError(`a ${request.operation} request has no object to patch`));
  }
  if (!isObject(changed)) {
    throw new TypeError(`patched(request, changed) takes the changed object, not ${describe(changed)}`);
  }
  // As JSON: `undefined` members and `toJSON` are settled first.
  const target = JSON.parse(JSON.stringify(changed));
  return ok(allow().withPatch(diff(sent, target)));
}

/**
 * The object componentize-js exports as the `admission` interface; export
 * it as `admission`.
 *
 * - `validate(request)`: whether the request may proceed. Must not change
 *   anything: a patch from it is an error. Default: `allow()`.
 * - `mutate(request)`: like `validate`, and may change the object with
 *   `patched(request, changed)`. Mutating webhooks run before validating
 *   ones, and may run again when another webhook changes the object, so a
 *   mutation must be idempotent. Default: `allow()`.
 *
 * Each receives an `AdmissionRequest` and returns a `Verdict` (`allow()`,
 * `deny(message, {code})`, `patched(…)`), or an error value (an `Error`,
 * or a failed `Result`) when it cannot decide: the host then applies the
 * admission rule's failure policy with the error's message as the cause.
 * A thrown SDK error (from `unwrap()`) is reported the same way; any other
 * exception is a bug, logged with its stack and reported as an error, as
 * is anything returned that is not a verdict. Nothing traps.
 */
export function exportAdmission({ validate, mutate } = {}) {
  for (const [name, handler] of [['validate', validate], ['mutate', mutate]]) {
    if (handler !== undefined && typeof handler !== 'function') {
      throw new TypeError(`exportAdmission: ${name} must be a function, not ${describe(handler)}`);
    }
  }
  if (validate === undefined && mutate === undefined) {
    throw new TypeError('exportAdmission needs validate(request), mutate(request) or both');
  }
  return {
    validate: (json) => review('validate', validate, json),
    mutate: (json) => review('mutate', mutate, json),
  };
}

/** The contract's `result<verdict, string>` for one review by `handler` (`name` is `validate` or `mutate`). */
function review(name, handler, json) {
  const request = parseRequest(json);
  if (!request.ok) return failure(request.error.message);
  if (handler === undefined) return answer(name, allow());
  let returned;
  try {
    returned = handler(request.value);
  } catch (thrown) {
    if (isSdkError(thrown)) return failure(thrown.message);
    log.error('plugin failed', { review: name, error: thrown?.stack ?? String(thrown) });
    const what = thrown instanceof Error ? `${thrown.name}: ${thrown.message}` : describe(thrown);
    return failure(`${name} threw ${what}`);
  }
  if (returned instanceof Result) {
    if (!returned.ok) return failure(messageOf(returned.error));
    returned = returned.value;
  }
  if (returned instanceof Error) return failure(returned.message);
  if (typeof returned?.then === 'function') {
    return failure(`${name} returned a Promise: a review is synchronous, return its verdict`);
  }
  if (!(returned instanceof Verdict)) {
    return failure(`${name} returned ${describe(returned)}; return allow(), deny(message), patched(request, object) or an error`);
  }
  return answer(name, returned);
}

/** The contract's verdict record, or why `verdict` cannot be one. */
function answer(name, verdict) {
  if (name === 'validate' && verdict.patch !== undefined) {
    return failure('validate answered a patch; only mutate may change the object');
  }
  // `allow` and `deny` check what they are given; a verdict made with `new`
  // is checked here, where a value the contract cannot carry would trap.
  const { allowed, message, code, warnings } = verdict;
  const carried = typeof allowed === 'boolean'
    && (message === undefined || typeof message === 'string')
    && (code === undefined || (Number.isInteger(code) && code >= 0 && code <= 0xffff))
    && Array.isArray(warnings) && warnings.every((warning) => typeof warning === 'string');
  if (!carried) return failure(`${name} answered a verdict the contract cannot carry: ${describe(verdict)}`);
  return {
    tag: 'ok',
    val: {
      allowed: verdict.allowed,
      message: verdict.message,
      code: verdict.code,
      warnings: [...verdict.warnings],
      patch: verdict.patch === undefined ? undefined : JSON.stringify(verdict.patch),
    },
  };
}

function failure(message) {
  return { tag: 'err', val: message };
}

function messageOf(error) {
  return error instanceof Error ? error.message : String(error);
}

function isSdkError(error) {
  return error instanceof Error
    && ['AdmissionError', 'ApiError', 'ConfigError', 'OwnerError', 'ReconcileError', 'SelectorError'].includes(error.name);
}

function isObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
