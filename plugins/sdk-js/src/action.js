/**
 * What the host does after a successful reconcile.
 *
 * @module
 */

/** Nothing more until something changes (or the resync period). */
export function done() {
  return { done: true };
}

/** Call again after `millis` milliseconds, for something no watch can see. */
export function requeueAfter(millis) {
  if (!Number.isSafeInteger(millis) || millis < 0) {
    throw new TypeError('requeueAfter takes whole milliseconds');
  }
  return { requeueAfterMs: millis };
}
