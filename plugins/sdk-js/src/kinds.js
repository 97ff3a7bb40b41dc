/**
 * Types of the core group and a few common ones, for `Api`, registrations
 * and objects (`{...ConfigMap, metadata}`). Each also carries its
 * `plural`, which saves the host a discovery call in a registration; it is
 * not enumerable, so spreading a type into an object copies only
 * `apiVersion` and `kind`.
 *
 * @module
 */

function type(apiVersion, kind, plural) {
  return Object.freeze(Object.defineProperty({ apiVersion, kind }, 'plural', { value: plural }));
}

export const ConfigMap = type('v1', 'ConfigMap', 'configmaps');
export const Secret = type('v1', 'Secret', 'secrets');
export const Namespace = type('v1', 'Namespace', 'namespaces');
export const Service = type('v1', 'Service', 'services');
export const Pod = type('v1', 'Pod', 'pods');
export const Event = type('events.k8s.io/v1', 'Event', 'events');
export const Deployment = type('apps/v1', 'Deployment', 'deployments');
