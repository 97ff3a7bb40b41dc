/**
 * Types of the core group and a few common ones, for `Api` and
 * registrations (`plural` saves the host a discovery call).
 *
 * @module
 */

export const ConfigMap = Object.freeze({ apiVersion: 'v1', kind: 'ConfigMap', plural: 'configmaps' });
export const Secret = Object.freeze({ apiVersion: 'v1', kind: 'Secret', plural: 'secrets' });
export const Namespace = Object.freeze({ apiVersion: 'v1', kind: 'Namespace', plural: 'namespaces' });
export const Service = Object.freeze({ apiVersion: 'v1', kind: 'Service', plural: 'services' });
export const Pod = Object.freeze({ apiVersion: 'v1', kind: 'Pod', plural: 'pods' });
export const Event = Object.freeze({ apiVersion: 'events.k8s.io/v1', kind: 'Event', plural: 'events' });
export const Deployment = Object.freeze({ apiVersion: 'apps/v1', kind: 'Deployment', plural: 'deployments' });
