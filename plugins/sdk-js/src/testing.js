/**
 * Test a built plugin component offline, from Node's test runner: the
 * component runs on Leasehold's own runtime (`leasehold plugin run
 * --serve`: the host's engine, limits and contract checks) against an
 * in-memory cluster, the same harness the Rust SDK's tests use.
 *
 * ```js
 * import { ConfigMap, Harness, done } from '@leasehold/sdk/testing';
 *
 * const harness = await Harness.load('dist/my-plugin.wasm', { config: { greeting: 'hi' } });
 * await harness.insert(configMap);
 * const result = await harness.reconcile({ namespace: 'default', name: 'settings' });
 * assert.deepEqual(result.action, done());
 * assert.deepEqual(result.calls, ['apply v1/ConfigMap default/settings -> ok']);
 * harness.close();
 * ```
 *
 * The binary is `LEASEHOLD` (which `leasehold plugin test` sets), else
 * `leasehold` on the PATH. Compiled code is cached (`~/.cache/leasehold/compile`,
 * or `LEASEHOLD_COMPILE_CACHE`), so only the first load of a component
 * pays for compiling the JavaScript engine.
 *
 * The cluster is a model, not Kubernetes: no admission or defaulting,
 * server-side apply without conflicts, garbage collection at once.
 *
 * A plugin's `admission` export is asked about requests by `Admission`,
 * in this process, on the module the component was built from:
 *
 * ```js
 * import { Admission, ConfigMap, ReviewRequest, deny } from '@leasehold/sdk/testing';
 *
 * const admission = await Admission.load('dist/my-plugin.wasm', { config: { team: 'payments' } });
 * const { verdict } = await admission.validate(ReviewRequest.create(configMap));
 * assert.deepEqual(verdict, deny('every ConfigMap needs a team label'));
 * const { object } = await admission.mutate(ReviewRequest.create(configMap));
 * assert.equal(object.metadata.labels.team, 'payments');
 * ```
 *
 * @module
 */

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { register } from 'node:module';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { PatchError, applyPatch, patchProblem } from './json-patch.js';
import * as kinds from './kinds.js';
import { ACTIVE } from './offline-host.js';
import { describe } from './errors.js';
import { Verdict } from './verdict.js';

// What tests compare with, importable outside a component (the SDK's main
// module imports the contract, which only a component has).
export { done, requeueAfter } from './action.js';
export * from './kinds.js';
export { Verdict, allow, deny } from './verdict.js';

/** A component loaded into the harness, with its in-memory cluster. */
export class Harness {
  #child;
  #pending = [];
  #exited;
  #stderr = '';

  /** @private use `Harness.load` */
  constructor(child) {
    this.#child = child;
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      // Keep the end: the reason a load failed is in the last lines.
      this.#stderr = (this.#stderr + chunk).slice(-8192);
    });
    createInterface({ input: child.stdout }).on('line', (line) => {
      const waiter = this.#pending.shift();
      if (waiter) waiter.resolve(line);
      this.#idle();
    });
    child.on('error', (error) => this.#fail(error));
    // A write to a process that has already ended fails with EPIPE; the
    // `exit` handler reports why it ended, which is what the caller needs.
    child.stdin.on('error', () => {});
    child.on('exit', (code, signal) => {
      this.#exited = `leasehold plugin run exited (${signal ?? `code ${code}`})`;
      this.#fail(new Error(`${this.#exited}:\n${this.#stderr.trim()}`));
    });
    // The harness must never keep a finished test process alive: the
    // process and its pipes hold the event loop only while a command waits.
    child.unref();
    child.stdin.unref?.();
    this.#idle();
  }

  /**
   * Compiles the component at `path` (or loads it from the compile
   * cache), with `config` as the plugin's configuration, and asks it for
   * its registration (then in `harness.registration`).
   *
   * @param {string | URL} path
   * @param {{config?: object, leasehold?: string}} [options]
   */
  static async load(path, { config = {}, leasehold = process.env.LEASEHOLD ?? 'leasehold' } = {}) {
    const file = path instanceof URL ? fileURLToPath(path) : String(path);
    const child = spawn(
      leasehold,
      ['plugin', 'run', '--serve', '--config', JSON.stringify(config), file],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    const harness = new Harness(child);
    try {
      harness.registration = await harness.#send({ op: 'registration' });
    } catch (error) {
      harness.close();
      throw new Error(`cannot load ${file} into the harness: ${error.message}`);
    }
    delete harness.registration.ok;
    return harness;
  }

  /** Stores `object` (with its apiVersion and kind) as a user would create it; returns it as stored. */
  async insert(object) {
    return (await this.#send({ op: 'insert', object })).object;
  }

  /** The stored object at `{apiVersion, kind, namespace?, name}`, or `undefined`. */
  async get(target) {
    return (await this.#send({ op: 'get', ...target })).object ?? undefined;
  }

  /**
   * Deletes the object at `{apiVersion, kind, namespace?, name}` as a user
   * would: it stays, marked for deletion, while it has finalizers. Returns
   * whether it existed.
   */
  async delete(target) {
    return (await this.#send({ op: 'delete', ...target })).deleted;
  }

  /** Makes every call on `{apiVersion, kind}` fail with 403, as missing RBAC would. */
  async forbid(type) {
    await this.#send({ op: 'forbid', apiVersion: type.apiVersion, kind: type.kind });
  }

  /** Every stored object, ordered by apiVersion, kind, namespace and name. */
  async objects() {
    return (await this.#send({ op: 'objects' })).objects;
  }

  /**
   * Does for one primary what the leader does: reads it (absent when
   * missing or not selected), adds the registration's finalizer first, and
   * calls `cleanup` for a primary being deleted. `target` is
   * `{namespace?, name}` or the object itself.
   *
   * @returns {Promise<{reference: object, action?: object, error?: {message: string, retryable: boolean, runtime?: boolean}, calls: string[], events: object[], logs: object[]}>}
   *   `action` (`{done: true}` or `{requeueAfterMs}`, as `done()` and
   *   `requeueAfter()` make them) or `error`, with the calls, Events and
   *   logs this reconcile made
   */
  async reconcile(target) {
    const reference = target.metadata ?? target;
    const answer = await this.#send({ op: 'reconcile', namespace: reference.namespace, name: reference.name });
    delete answer.ok;
    return answer;
  }

  /** Stops the harness process. */
  close() {
    this.#child.stdin.end();
  }

  async #send(command) {
    if (this.#exited) throw new Error(`${this.#exited}:\n${this.#stderr.trim()}`);
    const line = await new Promise((resolve, reject) => {
      this.#pending.push({ resolve, reject });
      this.#busy();
      this.#child.stdin.write(`${JSON.stringify(command)}\n`);
    });
    const answer = JSON.parse(line);
    if (!answer.ok) throw new Error(answer.error);
    return answer;
  }

  #busy() {
    this.#child.ref();
    this.#child.stdout.ref?.();
  }

  #idle() {
    if (this.#pending.length > 0) return;
    this.#child.unref();
    this.#child.stdout.unref?.();
    this.#child.stderr.unref?.();
  }

  #fail(error) {
    for (const waiter of this.#pending.splice(0)) waiter.reject(error);
    this.#idle();
  }
}

// === Admission ===

/**
 * Reviews a plugin's `admission` export offline, as the API server would
 * ask it through a replica: `validate(request)` answers the verdict,
 * `mutate(request)` the verdict and the object with its patch applied.
 *
 * It runs in this process, under Node, the bundle `leasehold-js build`
 * wrote beside the component (`dist/x.bundle.js` for `dist/x.wasm`):
 * the module the component was built from, with the SDK inside it. The
 * contract's imports are answered offline: the configuration given to
 * `load`, the log records kept for each result, and every Kubernetes call
 * failing with an `ApiError` of code 0 (reason `Offline`), since there is
 * no cluster; test a review that reads the cluster against a real API
 * server. What it does not cover is the component itself (the engine, its
 * limits, the contract's encoding): `leasehold plugin validate` checks
 * that it exports `admission`, and tests on the real API server the rest.
 *
 * The module is evaluated once per `load`, and every review of it runs in
 * it: keep no state between reviews, as a replica's fresh instance per
 * review would not have it.
 */
export class Admission {
  #admission;
  #context;

  /** @private use `Admission.load` */
  constructor(admission, context) {
    this.#admission = admission;
    this.#context = context;
  }

  /**
   * Evaluates the plugin's module with `config` as its configuration and
   * takes its `admission` export. `path` is the component (its bundle
   * beside it is loaded) or a JavaScript module: the bundle, or the
   * plugin's own entry module, to test without building.
   *
   * @param {string | URL} path
   * @param {{config?: object}} [options]
   */
  static async load(path, { config = {} } = {}) {
    const file = path instanceof URL ? fileURLToPath(path) : String(path);
    const module = file.endsWith('.wasm') ? `${file.slice(0, -'.wasm'.length)}.bundle.js` : file;
    if (!existsSync(module)) {
      throw new Error(`cannot load ${file} for admission reviews: no ${module}, which leasehold-js build writes beside the component`);
    }
    registerOfflineImports();
    const context = { config: JSON.stringify(config), calls: [], logs: [] };
    // A query of its own: each load evaluates the module anew.
    const url = pathToFileURL(resolve(module));
    url.searchParams.set('admission-load', String(++loads));
    // One evaluation at a time: the module reads the configuration of the
    // load under way, and evaluating it can wait (on its own imports).
    const evaluated = evaluating.then(async () => {
      const previous = globalThis[ACTIVE];
      globalThis[ACTIVE] = context;
      try {
        return await import(url.href);
      } finally {
        globalThis[ACTIVE] = previous;
      }
    });
    evaluating = evaluated.catch(() => {});
    const exported = (await evaluated).admission;
    if (typeof exported?.validate !== 'function' || typeof exported?.mutate !== 'function') {
      throw new Error(`${module} exports no admission: export const admission = exportAdmission({ validate, mutate })`);
    }
    return new Admission(exported, context);
  }

  /**
   * Asks the plugin to validate `request` (a `ReviewRequest`, or the
   * AdmissionReview's `request` as JSON text or a value).
   *
   * @returns {Promise<{verdict?: Verdict, error?: {message: string, runtime?: true}, calls: string[], logs: object[]}>}
   *   the verdict, or why there is none: the plugin's error, or
   *   (`runtime`) an exception out of the export, which in a component is a
   *   trap; with the calls and logs of this review
   */
  async validate(request) {
    return this.#review('validate', request);
  }

  /**
   * Asks the plugin to mutate `request`, and applies its patch to the
   * request's object as the API server would.
   *
   * @returns {Promise<{verdict?: Verdict, object?: object, error?: {message: string, runtime?: true}, calls: string[], logs: object[]}>}
   *   as `validate`, with `object`: the request's object, patched when the
   *   verdict allows it with a patch (absent for a delete)
   */
  async mutate(request) {
    return this.#review('mutate', request);
  }

  #review(name, request) {
    const json = typeof request === 'string' ? request : JSON.stringify(request);
    const context = this.#context;
    const [calls, logs] = [context.calls.length, context.logs.length];
    let outcome;
    const previous = globalThis[ACTIVE];
    globalThis[ACTIVE] = context;
    try {
      outcome = outcomeOf(name, json, this.#admission[name](json));
    } catch (thrown) {
      const what = thrown instanceof Error ? `${thrown.name}: ${thrown.message}` : describe(thrown);
      outcome = { error: { message: `the ${name} export threw (a trap in a component): ${what}`, runtime: true } };
    } finally {
      globalThis[ACTIVE] = previous;
    }
    return { ...outcome, calls: context.calls.slice(calls), logs: context.logs.slice(logs) };
  }
}

let loads = 0;
let evaluating = Promise.resolve();
let offlineImports = false;

function registerOfflineImports() {
  if (offlineImports) return;
  register(new URL('./offline-hooks.js', import.meta.url));
  offlineImports = true;
}

/** What the host makes of the contract's `result<verdict, string>`, as the harness reports it. */
function outcomeOf(name, json, answer) {
  if (answer?.tag === 'err') return { error: { message: String(answer.val) } };
  if (answer?.tag !== 'ok') {
    return { error: { message: `the ${name} export answered ${describe(answer)}, not a result`, runtime: true } };
  }
  const { allowed, message, code, warnings, patch: text } = answer.val;
  let operations;
  if (text !== undefined && text !== null) {
    try {
      operations = JSON.parse(text);
    } catch (error) {
      return { error: { message: `not a JSON patch (RFC 6902): ${error.message}` } };
    }
  }
  const problem = operations === undefined ? undefined : patchProblem(operations);
  if (problem) return { error: { message: `not a JSON patch (RFC 6902): ${problem}` } };
  if (name === 'validate' && operations !== undefined) {
    return { error: { message: 'validate answered a patch; the API server takes one from mutate only' } };
  }
  const verdict = new Verdict(
    allowed,
    message ?? undefined,
    code ?? undefined,
    warnings ?? [],
    operations?.length ? operations : undefined,
  );
  if (name === 'validate') return { verdict };
  const sent = JSON.parse(json).object ?? undefined;
  if (!verdict.allowed || verdict.patch === undefined || sent === undefined) return { verdict, object: sent };
  try {
    return { verdict, object: applyPatch(sent, verdict.patch) };
  } catch (error) {
    if (!(error instanceof PatchError)) throw error;
    return { error: { message: `the API server cannot apply the verdict's patch to the object: ${error.message}` } };
  }
}

// === ReviewRequest ===

/** The `uid` of every built request; a real one is unique per review. */
const FAKE_REVIEW_UID = '00000000-0000-0000-0000-00000000review';
/** Who makes a built request unless `user()` says otherwise: the administrator a local cluster's kubeconfig names. */
const DEFAULT_USER = { username: 'kubernetes-admin', groups: ['system:masters', 'system:authenticated'] };

/**
 * The `request` of an AdmissionReview about an object, as the API server
 * sends it: kind, resource, name, namespace, operation, user, the object
 * and the old object. Objects need their `apiVersion` and `kind` (spread a
 * type: `{...ConfigMap, metadata}`).
 *
 * ```js
 * const request = ReviewRequest.create(configMap).user('jane', ['devs']).dryRun();
 * ```
 *
 * Each method answers a new request; `toJSON()` is the request as a value
 * and `toString()` as JSON text.
 */
export class ReviewRequest {
  #request;

  /** @private use `create`, `update` or `delete` */
  constructor(request) {
    this.#request = request;
    Object.freeze(this);
  }

  /** A request to create `object`. */
  static create(object) {
    return ReviewRequest.#build('CREATE', 'CreateOptions', object, undefined);
  }

  /** A request to change `old` into `changed`. */
  static update(old, changed) {
    return ReviewRequest.#build('UPDATE', 'UpdateOptions', changed, old);
  }

  /** A request to delete `old`; it carries no new object. */
  static delete(old) {
    return ReviewRequest.#build('DELETE', 'DeleteOptions', undefined, old);
  }

  static #build(operation, options, object, oldObject) {
    const subject = object ?? oldObject;
    if (typeof subject?.apiVersion !== 'string' || typeof subject?.kind !== 'string') {
      throw new TypeError(`ReviewRequest.${operation.toLowerCase()} needs an object with apiVersion and kind ({...ConfigMap, metadata}), not ${describe(subject)}`);
    }
    const slash = subject.apiVersion.indexOf('/');
    const group = slash < 0 ? '' : subject.apiVersion.slice(0, slash);
    const version = subject.apiVersion.slice(slash + 1);
    const kind = { group, version, kind: subject.kind };
    const resource = { group, version, resource: pluralOf(subject) };
    const copy = (value) => (value === undefined ? null : JSON.parse(JSON.stringify(value)));
    return new ReviewRequest({
      uid: FAKE_REVIEW_UID,
      kind,
      resource,
      requestKind: kind,
      requestResource: resource,
      name: subject.metadata?.name ?? '',
      namespace: subject.metadata?.namespace,
      operation,
      userInfo: DEFAULT_USER,
      object: copy(object),
      oldObject: copy(oldObject),
      dryRun: false,
      options: { apiVersion: 'meta.k8s.io/v1', kind: options },
    });
  }

  /** The same request, made by `username`, a member of `groups`. */
  user(username, groups = []) {
    return new ReviewRequest({ ...this.#request, userInfo: { username, groups: [...groups] } });
  }

  /** The same request, made with `--dry-run=server`: nothing will be stored. */
  dryRun() {
    return new ReviewRequest({ ...this.#request, dryRun: true });
  }

  /** The request as a JSON value (a copy). */
  toJSON() {
    return JSON.parse(JSON.stringify(this.#request));
  }

  /** The request as JSON text, as the host passes it to the plugin. */
  toString() {
    return JSON.stringify(this.#request);
  }
}

/**
 * The resource name of `object`'s kind: the SDK's types know theirs; any
 * other kind is lowercased and made plural by the English rules
 * Kubernetes uses for most kinds.
 */
function pluralOf({ apiVersion, kind }) {
  const known = Object.values(kinds).find((type) => type.apiVersion === apiVersion && type.kind === kind);
  if (known) return known.plural;
  const lower = kind.toLowerCase();
  if (/(s|x|z|ch|sh)$/.test(lower)) return `${lower}es`;
  if (/[^aeiou]y$/.test(lower)) return `${lower.slice(0, -1)}ies`;
  return `${lower}s`;
}
