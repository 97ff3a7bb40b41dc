/**
 * The contract's imports (`leasehold:controller@0.2.0`), the one module
 * that names them. componentize-js binds these specifiers when it builds
 * the component; everything else in the SDK goes through this module.
 *
 * An import whose result is an error throws it with the contract's
 * `api-error` in `payload`; `call` turns that into a failed `Result`, so
 * no host error reaches a plugin as an exception.
 *
 * @module
 */

import * as kubernetes from 'leasehold:controller/kubernetes@0.2.0';
import * as logging from 'leasehold:controller/log@0.2.0';
import * as configuration from 'leasehold:controller/config@0.2.0';

import { ApiError } from './errors.js';
import { err, ok } from './result.js';

/** The contract version these bindings were built for. */
export const CONTRACT = 'leasehold:controller@0.2.0';

/**
 * Runs one host call and returns its `Result`: the value, or the
 * `ApiError` the host answered. Anything else thrown is a bug in the SDK
 * and propagates.
 */
export function call(fn) {
  try {
    return ok(fn());
  } catch (error) {
    const payload = error?.payload;
    if (payload === undefined || typeof payload.code !== 'number') throw error;
    return err(new ApiError(payload.code, payload.reason, payload.message));
  }
}

export { kubernetes, logging, configuration };
