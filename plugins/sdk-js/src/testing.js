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
 * @module
 */

import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

// What tests compare with, importable outside a component (the SDK's main
// module imports the contract, which only a component has).
export { done, requeueAfter } from './action.js';
export * from './kinds.js';

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
