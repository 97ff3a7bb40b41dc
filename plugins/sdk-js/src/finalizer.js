/**
 * Finalizers on objects.
 *
 * A plugin that names a finalizer in its registration needs none of this:
 * the host adds it, calls `cleanup` while the object is being deleted, and
 * removes it when cleanup is done. These helpers are for plugins that guard
 * other objects with finalizers of their own. They change the object in
 * memory; persist it with `Api#replace`, whose `resourceVersion` check keeps
 * another writer's finalizers safe.
 *
 * @module
 */

/** Whether `object` carries the finalizer `name`. */
export function has(object, name) {
  return (object?.metadata?.finalizers ?? []).includes(name);
}

/** Adds the finalizer `name`; returns whether it was missing (the object changed). */
export function add(object, name) {
  if (has(object, name)) return false;
  object.metadata ??= {};
  object.metadata.finalizers = [...(object.metadata.finalizers ?? []), name];
  return true;
}

/** Removes the finalizer `name`; returns whether it was there (the object changed). */
export function remove(object, name) {
  if (!has(object, name)) return false;
  object.metadata.finalizers = object.metadata.finalizers.filter((finalizer) => finalizer !== name);
  return true;
}

/** Whether `object` is being deleted (it has a `deletionTimestamp`). */
export function isDeleting(object) {
  return Boolean(object?.metadata?.deletionTimestamp);
}
