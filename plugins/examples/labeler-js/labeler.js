/**
 * labeler-js: a Leasehold controller plugin in JavaScript, on the SDK
 * (`@leasehold/sdk`, contract leasehold:controller@0.2.0).
 *
 * For every ConfigMap that matches the configured selector it server-side
 * applies the configured labels and an annotation counting the ConfigMap's
 * keys, then records an Event. Because it applies as its own field manager,
 * a label dropped from the configuration is dropped from the ConfigMaps too.
 *
 * Configuration (the Plugin's `spec.config`):
 *
 *     {"selector": "leasehold.dev/labeler=on", "labels": {"team": "payments"}}
 */

import {
  Api, ConfigMap, done, event, exportController, loadConfig, log, optionalString,
  optionalStringMap,
} from '@leasehold/sdk';

/** The controller's name, also its field manager. */
const NAME = 'labeler-js';
/** Which ConfigMaps are labelled when the configuration names none. */
const DEFAULT_SELECTOR = 'leasehold.dev/labeler';
/** The annotation holding the number of keys in `data` and `binaryData`. */
const KEYS_ANNOTATION = 'leasehold.dev/keys';

/** The configuration, checked: a `ConfigError` value when it is unusable. */
function config() {
  return loadConfig((raw) => ({
    selector: optionalString(raw, 'selector') ?? DEFAULT_SELECTOR,
    labels: optionalStringMap(raw, 'labels') ?? {},
  }));
}

function reconcile(configMap) {
  const configured = config();
  if (!configured.ok) return configured.error;
  const { labels } = configured.value;
  const keys = String(Object.keys(configMap.data ?? {}).length
    + Object.keys(configMap.binaryData ?? {}).length);
  const { name, namespace, labels: current = {}, annotations = {} } = configMap.metadata;
  const labelled = Object.entries(labels).every(([key, value]) => current[key] === value);
  if (labelled && annotations[KEYS_ANNOTATION] === keys) {
    log.debug('already labelled');
    return done();
  }

  const applied = Api.namespaced(ConfigMap, namespace).apply(
    name,
    { metadata: { namespace, labels, annotations: { [KEYS_ANNOTATION]: keys } } },
    { fieldManager: NAME, force: true },
  );
  // Retryable unless the API server found the request invalid.
  if (!applied.ok) return applied.error;
  log.info('labelled', { labels: Object.keys(labels).join(','), keys });
  const recorded = event.normal(configMap, 'Labelled', `labelled by ${NAME}; ${keys} keys`);
  if (!recorded.ok) {
    // The labels are applied; a lost Event is not worth a retry.
    log.warn('event not recorded', { error: recorded.error.message });
  }
  return done();
}

/** The `leasehold:controller/reconciler` export. */
export const reconciler = exportController({
  registration() {
    // A broken configuration still registers (with the default selector);
    // each reconcile then reports it.
    const { selector } = config().unwrapOr({ selector: DEFAULT_SELECTOR });
    // Plain console output reaches the host's log too (as stdout, at info).
    console.log(`labeler-js labels ConfigMaps matching ${selector}`);
    return { name: NAME, primary: ConfigMap, labelSelector: selector };
  },
  reconcile,
});
