/**
 * Write Leasehold controller plugins in JavaScript, on the
 * `leasehold:controller@0.2.0` contract: typed Kubernetes calls that return
 * errors as values, owner references, finalizers, Events, configuration,
 * structured logs, the `reconciler` export and the `admission` export.
 *
 * @module
 */

export { AdmissionRequest, exportAdmission, parseRequest, patched } from './admission.js';
export { Api, Patch } from './api.js';
export {
  AdmissionError, ApiError, ConfigError, OwnerError, ReconcileError, SelectorError,
} from './errors.js';
export { EventType, emitEvent } from './event.js';
export { CONTRACT } from './host.js';
export { loadConfig, optionalString, optionalStringMap, parseConfig } from './config.js';
export {
  controllerOf, controllerReference, isControlledBy, ownerReference, setController,
} from './owner.js';
export { done, requeueAfter } from './action.js';
export { ALL_PRIMARIES, exportController, groupVersionKind, labelMapping } from './reconciler.js';
export * from './kinds.js';
export { Result, err, ok } from './result.js';
export { Selector } from './selector.js';
export { Verdict, allow, deny } from './verdict.js';
export * as event from './event.js';
export * as finalizer from './finalizer.js';
export * as log from './log.js';
export * as owner from './owner.js';

