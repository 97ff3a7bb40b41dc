/**
 * The contract's imports for a review run offline by `Admission`
 * (`@leasehold/sdk/testing`), one module for every interface: the
 * configuration and the log record go to the review under way, and every
 * Kubernetes call fails, since there is no cluster.
 *
 * @module
 */

/**
 * Where `Admission` keeps the load or review under way: set only while it
 * evaluates the plugin's module or runs a review, which is synchronous.
 */
export const ACTIVE = Symbol.for('@leasehold/sdk/testing admission');

function active() {
  const context = globalThis[ACTIVE];
  if (context === undefined) throw new Error('a contract import was called outside an offline review');
  return context;
}

// === config ===

export function getConfig() {
  return active().config;
}

// === log ===

export function log(level, message, fields) {
  active().logs.push({
    level,
    message,
    fields: Object.fromEntries(fields.map(({ key, value }) => [key, value])),
  });
}

// === kubernetes ===

/** The contract's `api-error` for every call: code 0, as for a call that never reached an API server. */
const OFFLINE = {
  code: 0,
  reason: 'Offline',
  message: 'an offline review has no cluster to call; test a review that reads the cluster against a real API server',
};

function refuse(verb, type, target) {
  const place = target ? ` ${[target.namespace, target.name].filter(Boolean).join('/')}` : '';
  active().calls.push(`${verb} ${type.apiVersion}/${type.kind}${place} -> 0 Offline`);
  const error = new Error(`${verb}: ${OFFLINE.message}`);
  error.payload = OFFLINE;
  throw error;
}

export const get = (type, target) => refuse('get', type, target);
export const list = (type, params) => refuse('list', type, params?.namespace ? { namespace: params.namespace } : undefined);
export const create = (type, namespace) => refuse('create', type, namespace ? { namespace } : undefined);
export const replace = (type, target) => refuse('replace', type, target);
export const apply = (type, target) => refuse('apply', type, target);
export const patch = (type, target) => refuse('patch', type, target);
const remove = (type, target) => refuse('delete', type, target);
export { remove as delete };
export const updateStatus = (type, target) => refuse('update-status', type, target);
export const emitEvent = (regarding) => refuse('emit-event', regarding.typeMeta, regarding.object);
