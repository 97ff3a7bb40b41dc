/**
 * JSON patches (RFC 6902): the diff `patched` answers from `mutate`, the
 * check `withPatch` makes, and applying one as the API server does (for
 * `@leasehold/sdk/testing`).
 *
 * Written here rather than taken from npm (fast-json-patch's `compare` and
 * `applyPatch` would do): the SDK is used through `file:` links (the
 * example in this repository, `leasehold plugin new --lang js` on a
 * checkout), and npm installs no dependency of a package linked from
 * outside the plugin's directory, so a dependency of the SDK would be
 * missing from those plugins' bundles and tests. Without one, the SDK
 * needs no `npm install` at all.
 *
 * @module
 */

import { describe } from './errors.js';

const OPERATIONS = ['add', 'remove', 'replace', 'move', 'copy', 'test'];

/** A patch that does not apply to the document, or is not one. */
export class PatchError extends Error {
  constructor(message) {
    super(message);
    this.name = 'PatchError';
  }
}

/**
 * The patch that turns `from` into `to` (both JSON values): members are
 * removed, added and replaced one by one; a list that differs is replaced
 * whole, as in the Rust SDK. Paths escape `~` and `/` (`leasehold.dev~1team`).
 */
export function diff(from, to) {
  const operations = [];
  diffInto(operations, from, to, '');
  return operations;
}

function diffInto(operations, from, to, path) {
  if (equal(from, to)) return;
  if (!isObject(from) || !isObject(to)) {
    operations.push({ op: 'replace', path, value: to });
    return;
  }
  for (const key of Object.keys(from)) {
    if (!Object.hasOwn(to, key)) operations.push({ op: 'remove', path: `${path}/${escape(key)}` });
  }
  for (const key of Object.keys(to)) {
    const at = `${path}/${escape(key)}`;
    if (Object.hasOwn(from, key)) diffInto(operations, from[key], to[key], at);
    else operations.push({ op: 'add', path: at, value: to[key] });
  }
}

/** Why `operations` is not an RFC 6902 patch; `undefined` when it is one. */
export function patchProblem(operations) {
  if (!Array.isArray(operations)) return `a patch is a list of operations, not ${describe(operations)}`;
  for (const [index, operation] of operations.entries()) {
    const problem = operationProblem(operation);
    if (problem) return `operation ${index} ${describe(operation)}: ${problem}`;
  }
  return undefined;
}

function operationProblem(operation) {
  if (!isObject(operation)) return 'not an object';
  if (!OPERATIONS.includes(operation.op)) return `op is not one of ${OPERATIONS.join(', ')}`;
  if (!isPointer(operation.path)) return 'path is not a JSON pointer ("" or starting with "/")';
  if ((operation.op === 'move' || operation.op === 'copy') && !isPointer(operation.from)) {
    return 'from is not a JSON pointer ("" or starting with "/")';
  }
  if (['add', 'replace', 'test'].includes(operation.op) && operation.value === undefined) return 'value is missing';
  return undefined;
}

/**
 * `document` with `operations` applied, as the API server applies a
 * mutating webhook's patch; `document` itself is left as it was. Throws a
 * `PatchError` naming the operation that does not apply (all or nothing).
 */
export function applyPatch(document, operations) {
  const problem = patchProblem(operations);
  if (problem) throw new PatchError(problem);
  let result = structuredClone(document);
  for (const [index, operation] of operations.entries()) {
    try {
      result = applyOperation(result, operation);
    } catch (error) {
      if (!(error instanceof PatchError)) throw error;
      throw new PatchError(`operation ${index} ${describe(operation)}: ${error.message}`);
    }
  }
  return result;
}

function applyOperation(document, { op, path, from, value }) {
  switch (op) {
    case 'add': return add(document, path, structuredClone(value));
    case 'remove': return remove(document, path);
    case 'replace': return add(remove(document, path), path, structuredClone(value));
    case 'move': {
      if (path !== from && path.startsWith(`${from}/`)) throw new PatchError('cannot move a value into itself');
      const moved = get(document, from);
      return add(remove(document, from), path, moved);
    }
    case 'copy': return add(document, path, structuredClone(get(document, from)));
    case 'test':
      if (!equal(get(document, path), value)) throw new PatchError('the value differs');
      return document;
    default: throw new PatchError(`unknown op ${op}`);
  }
}

/** The value at `path`; throws when there is none. */
function get(document, path) {
  let value = document;
  for (const token of tokens(path)) {
    if (Array.isArray(value)) value = value[index(value, token, false)];
    else if (isObject(value) && Object.hasOwn(value, token)) value = value[token];
    else throw new PatchError(`no value at ${path}`);
  }
  return value;
}

function add(document, path, value) {
  if (path === '') return value;
  const { parent, key } = parentOf(document, path);
  if (Array.isArray(parent)) parent.splice(key === '-' ? parent.length : index(parent, key, true), 0, value);
  else define(parent, key, value);
  return document;
}

function remove(document, path) {
  if (path === '') throw new PatchError('cannot remove the whole document');
  const { parent, key } = parentOf(document, path);
  if (Array.isArray(parent)) {
    parent.splice(index(parent, key, false), 1);
  } else {
    if (!Object.hasOwn(parent, key)) throw new PatchError(`no value at ${path}`);
    delete parent[key];
  }
  return document;
}

/** The container `path` points into, and the last token. */
function parentOf(document, path) {
  const all = tokens(path);
  const key = all.pop();
  const parentPath = all.map(escape).map((token) => `/${token}`).join('');
  const parent = get(document, parentPath);
  if (!Array.isArray(parent) && !isObject(parent)) throw new PatchError(`no object or list at ${parentPath || '/'}`);
  return { parent, key };
}

/** An array index token; `past` allows the index one past the end (an add). */
function index(array, token, past) {
  const limit = past ? array.length : array.length - 1;
  if (!/^(0|[1-9][0-9]*)$/.test(token) || Number(token) > limit) {
    throw new PatchError(`${token} is not an index of a list of ${array.length}`);
  }
  return Number(token);
}

function tokens(path) {
  if (path === '') return [];
  return path.slice(1).split('/').map((token) => token.replaceAll('~1', '/').replaceAll('~0', '~'));
}

function escape(key) {
  return key.replaceAll('~', '~0').replaceAll('/', '~1');
}

/** Sets an own member, even one named `__proto__`, as JSON.parse does. */
function define(object, key, value) {
  Object.defineProperty(object, key, { value, writable: true, enumerable: true, configurable: true });
}

function isPointer(path) {
  return typeof path === 'string' && (path === '' || path.startsWith('/'));
}

function isObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Equal as JSON values. */
function equal(a, b) {
  if (a === b) return true;
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length
      && a.every((item, position) => equal(item, b[position]));
  }
  if (!isObject(a) || !isObject(b)) return false;
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length
    && keys.every((key) => Object.hasOwn(b, key) && equal(a[key], b[key]));
}
