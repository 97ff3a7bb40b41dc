/**
 * The Kubernetes API, as the plugin's ServiceAccount: typed by
 * `{apiVersion, kind}`, scoped to a namespace or to all of them, every call
 * returning a `Result`.
 *
 * ```js
 * const configMaps = Api.namespaced(ConfigMap, 'default');
 * const found = configMaps.get('settings');
 * if (!found.ok) return found.error;        // retryable unless the request was invalid
 * if (found.value === undefined) return done();
 * ```
 *
 * Reads are answered from the host's watch caches when a watch of the
 * plugin covers them; `getLive`, a list with a field selector or a `limit`
 * read from the API server itself.
 *
 * @module
 */

import { call, kubernetes } from './host.js';
import { err, ok } from './result.js';

/** Ways to change an object with `Api#patch`. */
export const Patch = Object.freeze({
  /** A JSON merge patch (RFC 7386): `null` removes a field. */
  merge: (patch) => ({ merge: patch }),
  /** A JSON patch (RFC 6902): a list of operations; a failed `test` fails the call with 422. */
  json: (operations) => ({ json: operations }),
});

/** A resource type of the API: `Api` takes `{apiVersion, kind}`. */
export class Api {
  /**
   * @param {{apiVersion: string, kind: string}} type for example `{apiVersion: 'v1', kind: 'ConfigMap'}`
   * @param {string} [namespace] absent: every namespace (lists), or a cluster-scoped kind
   */
  constructor(type, namespace) {
    if (typeof type?.apiVersion !== 'string' || typeof type?.kind !== 'string') {
      throw new TypeError('Api needs a type {apiVersion, kind}');
    }
    this.type = { apiVersion: type.apiVersion, kind: type.kind };
    this.namespace = namespace;
  }

  /** Objects of `type` in `namespace`. */
  static namespaced(type, namespace) {
    if (!namespace) throw new TypeError('Api.namespaced needs a namespace');
    return new Api(type, namespace);
  }

  /** Objects of `type` in every namespace, or a cluster-scoped type. */
  static all(type) {
    return new Api(type, undefined);
  }

  /** Reads the object called `name`: the object, or `undefined` when it does not exist. */
  get(name) {
    return call(() => kubernetes.get(this.type, this.#reference(name))).map(parse);
  }

  /** Like `get`, always from the API server (a list by name), never from the host's caches. */
  getLive(name) {
    return this.list({ fieldSelector: `metadata.name=${name}` }).map((items) => items[0]);
  }

  /**
   * The objects matching `params` (`labelSelector`, `fieldSelector`;
   * with `limit`, the first page only: see `listPage`).
   */
  list(params = {}) {
    return this.listPage(params).map((page) => page.items);
  }

  /**
   * One page: `{items, continueToken}`; pass `continueToken` back (with
   * the same other parameters) for the next, until it is `undefined`.
   */
  listPage({ labelSelector, fieldSelector, limit, continueToken } = {}) {
    const listed = call(() => kubernetes.list(this.type, {
      namespace: this.namespace,
      labelSelector,
      fieldSelector,
      limit,
      continueToken,
    }));
    if (!listed.ok) return listed;
    const list = JSON.parse(listed.value);
    // The API server leaves apiVersion and kind out of list items.
    const items = (list.items ?? []).map((item) => ({ ...this.type, ...item }));
    return ok({ items, continueToken: list.metadata?.continue || undefined });
  }

  /** Creates `object` (in this Api's namespace, else its own) and returns it as stored. */
  create(object) {
    const namespace = this.namespace ?? object.metadata?.namespace;
    return call(() => kubernetes.create(this.type, namespace, this.#body(object))).map(parse);
  }

  /** Replaces the object called `name`; its `resourceVersion`, when set, makes this a compare-and-swap (409 when stale). */
  replace(name, object) {
    return call(() => kubernetes.replace(this.type, this.#reference(name), this.#body(object, name)))
      .map(parse);
  }

  /**
   * Server-side apply: creates the object or sets the fields `object` has,
   * owned by `fieldManager`; fields it applied before and leaves out now
   * are removed. `apiVersion`, `kind` and `metadata.name` are filled in.
   */
  apply(name, object, { fieldManager, force = false }) {
    if (!fieldManager) throw new TypeError('apply needs a fieldManager');
    return call(() => kubernetes.apply(
      this.type,
      this.#reference(name),
      this.#body(object, name),
      { fieldManager, force },
    )).map(parse);
  }

  /** Patches the object called `name` with `Patch.merge(...)` or `Patch.json([...])`; returns it as stored. */
  patch(name, patch) {
    let wit;
    if (patch?.merge !== undefined) wit = { tag: 'merge', val: JSON.stringify(patch.merge) };
    else if (patch?.json !== undefined) wit = { tag: 'json', val: JSON.stringify(patch.json) };
    else throw new TypeError('patch needs Patch.merge(...) or Patch.json([...])');
    return call(() => kubernetes.patch(this.type, this.#reference(name), wit)).map(parse);
  }

  /**
   * Deletes the object called `name`: `true` when this call deleted it,
   * `false` when it was already gone (so cleanups can run twice).
   */
  delete(name) {
    const deleted = call(() => kubernetes.delete(this.type, this.#reference(name)));
    if (deleted.ok) return ok(true);
    return deleted.error.isNotFound() ? ok(false) : err(deleted.error);
  }

  /** Replaces the status subresource with `object`'s status (a compare-and-swap on its resourceVersion). */
  replaceStatus(name, object) {
    const update = { tag: 'replace', val: this.#body(object, name) };
    return call(() => kubernetes.updateStatus(this.type, this.#reference(name), update)).map(parse);
  }

  /** Merge-patches the status subresource, for example `{status: {ready: true}}`. */
  patchStatus(name, patch) {
    const update = { tag: 'merge-patch', val: JSON.stringify(patch) };
    return call(() => kubernetes.updateStatus(this.type, this.#reference(name), update)).map(parse);
  }

  #reference(name) {
    if (typeof name !== 'string' || name === '') throw new TypeError('an object name is required');
    return { namespace: this.namespace, name };
  }

  #body(object, name) {
    const metadata = { ...object.metadata };
    if (name !== undefined) metadata.name ??= name;
    return JSON.stringify({ ...this.type, ...object, metadata });
  }
}

function parse(json) {
  return json === undefined ? undefined : JSON.parse(json);
}
