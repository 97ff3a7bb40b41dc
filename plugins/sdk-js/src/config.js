/**
 * The plugin's configuration: its Plugin object's `spec.config`.
 *
 * @module
 */

import { ConfigError } from './errors.js';
import { configuration } from './host.js';
import { err, ok } from './result.js';

/**
 * The configuration, parsed and checked: `check(raw)` receives the parsed
 * JSON (`{}` when none is set) and returns the typed configuration, or
 * throws (for example a `TypeError`) when it is unusable. A configuration
 * that is not JSON or fails the check comes back as a `ConfigError`, which
 * a reconcile reports as permanent: only a new configuration fixes it.
 *
 * ```js
 * const config = loadConfig((raw) => ({
 *   selector: optionalString(raw, 'selector') ?? 'leasehold.dev/labeler',
 * }));
 * if (!config.ok) return config.error;
 * ```
 *
 * @returns {import('./result.js').Result}
 */
export function loadConfig(check = (raw) => raw) {
  return parseConfig(configuration.getConfig(), check);
}

/** Like `loadConfig`, from JSON text: for tests. */
export function parseConfig(json, check = (raw) => raw) {
  let raw;
  try {
    raw = JSON.parse(json);
  } catch (error) {
    return err(new ConfigError(`not JSON: ${error.message}`));
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    return err(new ConfigError('not a JSON object'));
  }
  try {
    return ok(check(raw));
  } catch (error) {
    return err(new ConfigError(error instanceof Error ? error.message : String(error)));
  }
}

/** `raw[key]` when it is a string, `undefined` when absent; throws a `TypeError` otherwise. */
export function optionalString(raw, key) {
  const value = raw[key];
  if (value === undefined || typeof value === 'string') return value;
  throw new TypeError(`${key} must be a string`);
}

/** `raw[key]` when it is an object of strings, `undefined` when absent; throws a `TypeError` otherwise. */
export function optionalStringMap(raw, key) {
  const value = raw[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'object' || value === null || Array.isArray(value)
    || !Object.values(value).every((entry) => typeof entry === 'string')) {
    throw new TypeError(`${key} must map names to strings`);
  }
  return value;
}
