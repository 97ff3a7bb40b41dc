/**
 * labeler-js: a Leasehold controller plugin written in JavaScript against the
 * same WIT contract as the Rust examples, in its previous version (wit/v0.1/),
 * which the host still links.
 *
 * For every ConfigMap that matches the configured selector it server-side
 * applies the configured labels and an annotation counting the ConfigMap's
 * keys, then records an Event. Because it applies as its own field manager,
 * a label dropped from the configuration is dropped from the ConfigMaps too.
 *
 * Configuration (the Plugin manifest's `config`):
 *
 *     {"selector": "leasehold.dev/labeler=on", "labels": {"team": "payments"}}
 *
 * componentize-js turns this module into a component: the WIT imports are
 * ES modules named after their interfaces, the `reconciler` export is an
 * object of functions, records are objects with camelCase fields, variants
 * are `{tag, val}`, enums are strings, options are `undefined` or a value,
 * and u64 is a BigInt. An imported function whose result is an error throws
 * an error whose `payload` is the WIT `api-error`. Console output goes
 * nowhere (the host grants no stdout): log through the `log` import.
 */

import { apply, emitEvent } from 'leasehold:controller/kubernetes@0.1.0';
import { log } from 'leasehold:controller/log@0.1.0';
import { getConfig } from 'leasehold:controller/config@0.1.0';

/** The controller's name, also its field manager. */
const NAME = 'labeler-js';
/** Which ConfigMaps are labelled when the configuration names none. */
const DEFAULT_SELECTOR = 'leasehold.dev/labeler';
/** The annotation holding the number of keys in `data` and `binaryData`. */
const KEYS_ANNOTATION = 'leasehold.dev/keys';
const CONFIG_MAP = { apiVersion: 'v1', kind: 'ConfigMap' };
const DONE = { tag: 'done' };

/** The plugin's configuration, checked; throws a TypeError when invalid. */
function readConfig() {
  const config = JSON.parse(getConfig());
  const selector = config.selector ?? DEFAULT_SELECTOR;
  const labels = config.labels ?? {};
  if (typeof selector !== 'string') {
    throw new TypeError('config.selector must be a label selector string');
  }
  if (typeof labels !== 'object' || Array.isArray(labels)
    || !Object.values(labels).every((value) => typeof value === 'string')) {
    throw new TypeError('config.labels must map label names to strings');
  }
  return { selector, labels };
}

/** Log fields from an object of strings. */
function fields(values) {
  return Object.entries(values).map(([key, value]) => ({ key, value: String(value) }));
}

/**
 * Runs one host call and turns its `api-error` into a WIT `reconcile-error`
 * (as a thrown `{reconcileError}`), retryable unless the WIT says retrying
 * cannot help (400, 422, a request the host refused as malformed).
 */
function call(what, fn) {
  try {
    return fn();
  } catch (error) {
    const apiError = error?.payload;
    if (apiError === undefined) throw error;
    const retryable = apiError.code !== 400 && apiError.code !== 422
      && apiError.reason !== 'BadRequest';
    throw {
      reconcileError: {
        message: `${what}: ${apiError.code} ${apiError.reason}: ${apiError.message}`,
        retryable,
      },
    };
  }
}

/**
 * Returns `reconcile`'s WIT result: the action, or the error of a failed
 * host call. A bug (any other exception) is logged and reported as an error
 * that retrying will not fix, instead of trapping with its message lost.
 */
function result(reconcile) {
  try {
    return { tag: 'ok', val: reconcile() };
  } catch (error) {
    if (error?.reconcileError) return { tag: 'err', val: error.reconcileError };
    log('error', 'plugin failed', fields({ error: String(error) }));
    return { tag: 'err', val: { message: String(error), retryable: false } };
  }
}

function reconcileConfigMap({ reference, object }) {
  // Gone or no longer selected: nothing of ours lives outside the object.
  if (object === undefined) return DONE;
  const configMap = JSON.parse(object);
  const { labels } = readConfig();
  const keys = String(Object.keys(configMap.data ?? {}).length
    + Object.keys(configMap.binaryData ?? {}).length);
  const metadata = configMap.metadata ?? {};
  const labelled = Object.entries(labels).every(([key, value]) => metadata.labels?.[key] === value);
  if (labelled && metadata.annotations?.[KEYS_ANNOTATION] === keys) {
    log('debug', 'already labelled', []);
    return DONE;
  }

  const desired = {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: {
      name: reference.name,
      namespace: reference.namespace,
      labels,
      annotations: { [KEYS_ANNOTATION]: keys },
    },
  };
  call('applying labels', () => apply(CONFIG_MAP, reference, JSON.stringify(desired), {
    fieldManager: NAME,
    force: true,
  }));
  log('info', 'labelled', fields({ labels: Object.keys(labels).join(','), keys }));
  try {
    emitEvent(
      { typeMeta: CONFIG_MAP, object: reference, uid: metadata.uid },
      { eventType: 'normal', reason: 'Labelled', message: `labelled by ${NAME}; ${keys} keys` },
    );
  } catch (error) {
    // The labels are applied; a lost Event is not worth a retry.
    log('warn', 'event not recorded', fields({ error: error?.payload?.message ?? String(error) }));
  }
  return DONE;
}

/** The `leasehold:controller/reconciler` export. */
export const reconciler = {
  register() {
    const { selector } = readConfig();
    // Plain console output reaches the host's log too (as stdout, at info).
    console.log(`labeler-js labels ConfigMaps matching ${selector}`);
    return {
      name: NAME,
      primary: { group: '', version: 'v1', kind: 'ConfigMap', plural: 'configmaps' },
      labelSelector: selector,
      namespace: undefined,
      owns: [],
      watches: [],
      resyncPeriodMs: undefined,
      finalizer: undefined,
    };
  },

  reconcile(request) {
    return result(() => reconcileConfigMap(request));
  },

  // Never called: the registration names no finalizer.
  cleanup() {
    return DONE;
  },
};
