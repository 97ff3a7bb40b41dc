/**
 * Structured logs, which the host writes with the plugin's name and the
 * object being reconciled attached. `console.log` reaches the host's log
 * too (as the plugin's stdout), without a level or fields.
 *
 * @module
 */

import { logging } from './host.js';

/** The levels, least important first. */
export const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

/**
 * Writes one record; `fields` is an object whose values are formatted with
 * `String` (objects as JSON).
 */
export function write(level, message, fields = {}) {
  if (!LEVELS.includes(level)) throw new TypeError(`unknown log level ${level}`);
  logging.log(level, String(message), Object.entries(fields).map(([key, value]) => ({
    key,
    value: typeof value === 'object' && value !== null ? JSON.stringify(value) : String(value),
  })));
}

/** Step-by-step detail, off unless asked for. */
export const trace = (message, fields) => write('trace', message, fields);
/** Detail that helps a developer. */
export const debug = (message, fields) => write('debug', message, fields);
/** Something normal worth knowing. */
export const info = (message, fields) => write('info', message, fields);
/** Something a person may need to act on. */
export const warn = (message, fields) => write('warn', message, fields);
/** Something failed or was lost. */
export const error = (message, fields) => write('error', message, fields);
