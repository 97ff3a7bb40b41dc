/**
 * The `reconciler` export: what a plugin reconciles, and how.
 *
 * ```js
 * export const reconciler = exportController({
 *   registration: () => ({ name: 'labeler', primary: ConfigMap, labelSelector: 'team' }),
 *   reconcile(configMap) { ...; return done(); },
 * });
 * ```
 *
 * componentize-js builds the component's `reconciler` export from the
 * module's export of that name, so the plugin's entry module must export
 * it under exactly that name.
 *
 * @module
 */

import { done } from './action.js';
import { ReconcileError } from './errors.js';
import { Result } from './result.js';
import * as log from './log.js';


/** `{apiVersion: 'apps/v1', kind}` as the contract's group-version-kind. */
export function groupVersionKind({ apiVersion, kind, plural }) {
  if (typeof apiVersion !== 'string' || typeof kind !== 'string') {
    throw new TypeError('a kind needs apiVersion and kind');
  }
  const slash = apiVersion.indexOf('/');
  return {
    group: slash < 0 ? '' : apiVersion.slice(0, slash),
    version: slash < 0 ? apiVersion : apiVersion.slice(slash + 1),
    kind,
    plural,
  };
}

/** A watched object names its primary in labels (`namespace`: the label holding its namespace). */
export function labelMapping(name, namespace) {
  return { labels: { name, namespace } };
}

/** Any change to the watched kind requeues every primary. */
export const ALL_PRIMARIES = Object.freeze({ allPrimaries: true });

/** The contract's registration record from the SDK's. */
export function toRegistration(registration) {
  const {
    name, primary, labelSelector, namespace, owns = [], watches = [], resyncPeriodMs, finalizer,
  } = registration;
  if (typeof name !== 'string' || name === '') throw new TypeError('a registration needs a name');
  return {
    name,
    primary: groupVersionKind(primary),
    labelSelector,
    namespace,
    owns: owns.map(groupVersionKind),
    watches: watches.map((watch) => ({
      kind: groupVersionKind(watch.kind),
      labelSelector: watch.labelSelector,
      mapping: watch.mapping?.labels
        ? { tag: 'labels', val: { name: watch.mapping.labels.name, namespace: watch.mapping.labels.namespace } }
        : { tag: 'all-primaries' },
    })),
    resyncPeriodMs: resyncPeriodMs === undefined ? undefined : BigInt(resyncPeriodMs),
    finalizer,
  };
}

/**
 * The contract's `result<action, reconcile-error>` from what a handler
 * returned or threw: an action (`undefined` is `done()`), an error value
 * (an `ApiError` keeps its retryability; see `ReconcileError.from`), or a
 * failed `Result`. A thrown error is treated the same; one that is not an
 * SDK error is a bug, logged and reported as permanent rather than trapping.
 */
export function toOutcome(handler) {
  let returned;
  try {
    returned = handler();
  } catch (thrown) {
    if (!isSdkError(thrown)) {
      log.error('plugin failed', { error: thrown?.stack ?? String(thrown) });
    }
    return failure(ReconcileError.from(thrown));
  }
  if (returned instanceof Result) {
    returned = returned.ok ? returned.value : returned.error;
  }
  if (returned instanceof Error) return failure(ReconcileError.from(returned));
  if (returned === undefined || returned.done === true) return { tag: 'ok', val: { tag: 'done' } };
  if (Number.isSafeInteger(returned.requeueAfterMs)) {
    return { tag: 'ok', val: { tag: 'requeue-after', val: BigInt(returned.requeueAfterMs) } };
  }
  return failure(ReconcileError.permanent(
    `reconcile returned ${JSON.stringify(returned)}; return done(), requeueAfter(ms) or an error`,
  ));
}

function isSdkError(error) {
  return error instanceof Error
    && ['ApiError', 'ReconcileError', 'ConfigError', 'OwnerError', 'SelectorError', 'AdmissionError'].includes(error.name);
}

function failure(error) {
  return { tag: 'err', val: { message: error.message, retryable: error.retryable } };
}

/**
 * The object componentize-js exports as the `reconciler` interface.
 *
 * - `registration()`: what to reconcile (see the type declarations);
 *   called once per instance, before anything else.
 * - `reconcile(object)`: brings the cluster in line with the primary
 *   (parsed JSON). Must be idempotent.
 * - `cleanup(object)`: releases what a primary being deleted holds; called
 *   only when the registration names a `finalizer`, which the host removes
 *   once this returns `done()`. Default: `done()`.
 * - `absent(reference)`: the primary `{namespace, name}` is gone or no
 *   longer matches the selector. Default: `done()`.
 *
 * Each returns `done()`, `requeueAfter(ms)`, or an error value.
 */
export function exportController({ registration, reconcile, cleanup, absent }) {
  if (typeof registration !== 'function' || typeof reconcile !== 'function') {
    throw new TypeError('exportController needs registration() and reconcile()');
  }
  // The host registers every instance before anything else: the primary's
  // type fills in an object that arrives without its apiVersion and kind.
  let primary = {};
  const parsePrimary = (json) => {
    const object = JSON.parse(json);
    return { ...primary, ...object };
  };
  return {
    register() {
      const registered = registration();
      primary = { apiVersion: registered.primary?.apiVersion, kind: registered.primary?.kind };
      return toRegistration(registered);
    },
    reconcile({ reference, object }) {
      if (object === undefined) {
        return toOutcome(() => (absent ? absent({ ...reference }) : done()));
      }
      return toOutcome(() => reconcile(parsePrimary(object)));
    },
    cleanup({ object }) {
      if (object === undefined || !cleanup) return toOutcome(done);
      return toOutcome(() => cleanup(parsePrimary(object)));
    },
  };
}
