/**
 * Kubernetes Events about objects, the trail `kubectl describe` shows. An
 * Event is a courtesy: losing one should not fail a reconcile, so check
 * the result and log rather than return it.
 *
 * @module
 */

import { call, kubernetes } from './host.js';

/** Event types, as Kubernetes spells them. */
export const EventType = Object.freeze({ Normal: 'Normal', Warning: 'Warning' });

/**
 * Records an Event about `regarding` (an object with `apiVersion`, `kind`
 * and `metadata`; its uid is passed when known, so `kubectl describe`
 * finds the Event).
 *
 * @param {object} regarding
 * @param {{type?: 'Normal' | 'Warning', reason: string, message: string}} event
 * @returns {import('./result.js').Result} `undefined`, or an `ApiError`
 */
export function emitEvent(regarding, { type = EventType.Normal, reason, message }) {
  if (type !== EventType.Normal && type !== EventType.Warning) {
    throw new TypeError(`event type must be Normal or Warning, not ${type}`);
  }
  const metadata = regarding.metadata ?? {};
  return call(() => kubernetes.emitEvent(
    {
      typeMeta: { apiVersion: regarding.apiVersion, kind: regarding.kind },
      object: { namespace: metadata.namespace, name: metadata.name },
      uid: metadata.uid,
    },
    { eventType: type === EventType.Normal ? 'normal' : 'warning', reason, message },
  ));
}

/** A routine Event about `regarding`. */
export function normal(regarding, reason, message) {
  return emitEvent(regarding, { type: EventType.Normal, reason, message });
}

/** An Event that a person may need to look at. */
export function warning(regarding, reason, message) {
  return emitEvent(regarding, { type: EventType.Warning, reason, message });
}
