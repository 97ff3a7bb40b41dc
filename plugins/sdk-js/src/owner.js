/**
 * Owner references: how a child object names the primary that controls
 * it. The host maps a change to an owned child back to its primary through
 * the controller owner reference, and Kubernetes' garbage collector deletes
 * the child with its primary, so a plugin that sets one needs no cleanup.
 *
 * @module
 */

import { OwnerError } from './errors.js';
import { err, ok } from './result.js';

/**
 * An owner reference to `owner` (an object read from the API server: it
 * needs `apiVersion`, `kind`, `metadata.name` and `metadata.uid`).
 * `controller: true` makes it the controller reference.
 *
 * @returns {import('./result.js').Result} the reference, or an `OwnerError`
 */
export function ownerReference(owner, { controller = false } = {}) {
  const metadata = owner?.metadata ?? {};
  const name = metadata.name ?? '';
  if (!metadata.uid) {
    return err(new OwnerError(`owner ${name} has no uid; read it from the api server first`));
  }
  if (!owner.apiVersion || !owner.kind) {
    return err(new OwnerError(`owner ${name} has no apiVersion or kind`));
  }
  const reference = { apiVersion: owner.apiVersion, kind: owner.kind, name, uid: metadata.uid };
  // blockOwnerDeletion needs `update` on the owner's finalizers, RBAC a
  // plugin rarely has; the garbage collector removes children either way.
  if (controller) reference.controller = true;
  return ok(reference);
}

/** The controller owner reference to `owner`; see `ownerReference`. */
export function controllerReference(owner) {
  return ownerReference(owner, { controller: true });
}

/** The controller owner reference on `object`, if any. */
export function controllerOf(object) {
  return (object?.metadata?.ownerReferences ?? []).find((reference) => reference.controller === true);
}

/** Whether `owner` is `child`'s controller (matched by uid). */
export function isControlledBy(child, owner) {
  const uid = owner?.metadata?.uid;
  return uid !== undefined && controllerOf(child)?.uid === uid;
}

/**
 * Makes `owner` the controller of `child` (changed in place): replaces a
 * reference to the same owner, and refuses a child in another namespace or
 * one another object already controls.
 *
 * @returns {import('./result.js').Result} `child`, or an `OwnerError`
 */
export function setController(child, owner) {
  const reference = controllerReference(owner);
  if (!reference.ok) return reference;
  const ownerNamespace = owner.metadata.namespace;
  const childNamespace = child.metadata?.namespace;
  if (ownerNamespace && childNamespace && ownerNamespace !== childNamespace) {
    return err(new OwnerError(
      `owner in namespace ${ownerNamespace} cannot own an object in namespace ${childNamespace}`,
    ));
  }
  const current = controllerOf(child);
  if (current && current.uid !== reference.value.uid) {
    return err(new OwnerError(`object is already controlled by ${current.kind} ${current.name}`));
  }
  child.metadata ??= {};
  const others = (child.metadata.ownerReferences ?? [])
    .filter((existing) => existing.uid !== reference.value.uid);
  child.metadata.ownerReferences = [...others, reference.value];
  return ok(child);
}
