/**
 * labeler-js: a Leasehold controller plugin in JavaScript, on the SDK
 * (`@leasehold/sdk`, contract leasehold:controller@0.2.0).
 *
 * For every ConfigMap that matches the configured selector it server-side
 * applies the configured labels and an annotation counting the ConfigMap's
 * keys, then records an Event. Because it applies as its own field manager,
 * a label dropped from the configuration is dropped from the ConfigMaps too.
 *
 * Its admission half (built for the `controller-with-admission` world)
 * keeps the labels right from the start: `mutate` adds the configured
 * labels a matching ConfigMap lacks as it is created or updated, so it is
 * stored labelled before the reconciler sees it, and `validate` refuses a
 * matching ConfigMap that sets one of them to another value, naming the
 * label and both values. The Plugin's admission rules choose which
 * requests are reviewed (ConfigMaps only); the selector is checked here
 * too, since a rule is not a selector.
 *
 * Configuration (the Plugin's `spec.config`):
 *
 *     {"selector": "leasehold.dev/labeler=on", "labels": {"team": "payments"}}
 */

import {
  AdmissionError, Api, ConfigMap, Selector, allow, deny, done, event, exportAdmission,
  exportController, loadConfig, log, optionalString, optionalStringMap, patched,
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

/**
 * The configuration and whether the request's ConfigMap matches its
 * selector: `{selector, labels, object}` for one to review, `{}` for one to let
 * through as it is, or an error value.
 */
function reviewed(request) {
  if (request.kind.apiVersion !== ConfigMap.apiVersion || request.kind.kind !== ConfigMap.kind) {
    return new AdmissionError(
      `${NAME} reviews ConfigMaps, not ${request.kind.apiVersion}/${request.kind.kind}: `
      + 'its Plugin\'s admission rules must match only configmaps',
    );
  }
  // A delete has nothing to label.
  if (request.object === undefined) return {};
  const configured = config();
  if (!configured.ok) return configured.error;
  const selector = Selector.parse(configured.value.selector);
  if (!selector.ok) return selector.error;
  if (!selector.value.matches(request.object.metadata?.labels)) return {};
  return { ...configured.value, object: request.object };
}

/** The `leasehold:controller/admission` export (world `controller-with-admission`). */
export const admission = exportAdmission({
  mutate(request) {
    const review = reviewed(request);
    if (review instanceof Error) return review;
    if (!review.object) return allow();
    const metadata = (review.object.metadata ??= {});
    const current = (metadata.labels ??= {});
    for (const [key, value] of Object.entries(review.labels)) {
      // One set to another value is left for `validate` to refuse.
      if (!Object.hasOwn(current, key)) current[key] = value;
    }
    return patched(request, review.object);
  },

  validate(request) {
    const review = reviewed(request);
    if (review instanceof Error) return review;
    if (!review.object) return allow();
    const current = review.object.metadata?.labels ?? {};
    const conflicts = Object.entries(review.labels)
      .filter(([key, value]) => Object.hasOwn(current, key) && current[key] !== value)
      .map(([key, value]) => `label ${key} must be ${JSON.stringify(value)}, not ${JSON.stringify(current[key])}`);
    if (conflicts.length === 0) return allow();
    return deny(`${conflicts.join('; ')}: ${NAME} sets the labels of ConfigMaps matching ${review.selector}`);
  },
});
