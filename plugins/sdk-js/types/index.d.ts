// Type declarations of @leasehold/sdk (hand-written; the sources are plain
// ES modules). Contract: leasehold:controller@0.2.0.

/** A Kubernetes object as JSON: `apiVersion`, `kind`, `metadata` and the rest. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
  [field: string]: unknown;
}

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  ownerReferences?: OwnerReference[];
  deletionTimestamp?: string;
  [field: string]: unknown;
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

/** A resource type: `{apiVersion: 'apps/v1', kind: 'Deployment'}`; `plural` saves the host a discovery call. */
export interface TypeMeta {
  apiVersion: string;
  kind: string;
  plural?: string;
}

/** Where an object lives; `namespace` absent for cluster-scoped objects. */
export interface ObjectRef {
  namespace?: string;
  name: string;
}

// === Errors as values ===

/** The outcome of a call that can fail. */
export type Result<T, E = Error> = Ok<T> | Err<E>;

interface ResultMethods<T, E> {
  /** The value; throws the error (which a reconcile reports with its retryability). */
  unwrap(): T;
  unwrapOr<U>(fallback: U): T | U;
  map<U>(fn: (value: T) => U): Result<U, E>;
}
export interface Ok<T> extends ResultMethods<T, never> {
  readonly ok: true;
  readonly value: T;
}
export interface Err<E> extends ResultMethods<never, E> {
  readonly ok: false;
  readonly error: E;
}
export function ok<T>(value: T): Ok<T>;
export function err<E>(error: E): Err<E>;
export const Result: { prototype: ResultMethods<unknown, unknown> };

/** The API server's (or the host's) answer to a failed call. */
export class ApiError extends Error {
  constructor(code: number, reason: string, message: string);
  /** The HTTP status; 0 when the call failed before reaching the API server. */
  readonly code: number;
  /** Machine-readable, for example `NotFound`. */
  readonly reason: string;
  /** The API server's own message. */
  readonly detail: string;
  isNotFound(): boolean;
  isConflict(): boolean;
  isForbidden(): boolean;
  /** False for 400, 405, 406, 413, 415 and 422 (the request itself is wrong); true otherwise. */
  isRetryable(): boolean;
}

/** Why a reconcile failed, and whether the host should retry it. */
export class ReconcileError extends Error {
  constructor(message: string, retryable: boolean);
  readonly retryable: boolean;
  static retryable(message: string): ReconcileError;
  static permanent(message: string): ReconcileError;
  /** An ApiError keeps its retryability; anything else but a ReconcileError is permanent. */
  static from(error: unknown, context?: string): ReconcileError;
}

/** The configuration is unusable: permanent until it changes. */
export class ConfigError extends Error {}
/** Why a plugin could not decide about an admission request; the host applies the failure policy with its message. */
export class AdmissionError extends Error {
  constructor(message: string);
}
/** A label selector does not parse. */
export class SelectorError extends Error {
  constructor(message: string);
}
/** An owner reference cannot be set. */
export class OwnerError extends Error {}

// === Api ===

export interface ListParams {
  labelSelector?: string;
  fieldSelector?: string;
  /** At most this many objects; the page's `continueToken` names the rest. Always read live. */
  limit?: number;
  continueToken?: string;
}

export interface Page<T> {
  items: T[];
  /** `undefined` on the last page. */
  continueToken?: string;
}

export interface ApplyParams {
  fieldManager: string;
  /** Take fields another manager owns instead of failing with 409. */
  force?: boolean;
}

export type ObjectPatch = { merge: unknown } | { json: unknown[] };
export const Patch: {
  merge(patch: unknown): ObjectPatch;
  json(operations: unknown[]): ObjectPatch;
};

export class Api<T extends KubeObject = KubeObject> {
  constructor(type: TypeMeta, namespace?: string);
  static namespaced<T extends KubeObject = KubeObject>(type: TypeMeta, namespace: string): Api<T>;
  static all<T extends KubeObject = KubeObject>(type: TypeMeta): Api<T>;
  readonly type: TypeMeta;
  readonly namespace?: string;
  /** `undefined` when the object does not exist. */
  get(name: string): Result<T | undefined, ApiError>;
  /** Like `get`, read from the API server rather than the host's caches. */
  getLive(name: string): Result<T | undefined, ApiError>;
  list(params?: ListParams): Result<T[], ApiError>;
  listPage(params?: ListParams): Result<Page<T>, ApiError>;
  create(object: T): Result<T, ApiError>;
  replace(name: string, object: T): Result<T, ApiError>;
  apply(name: string, object: Partial<T> | KubeObject, params: ApplyParams): Result<T, ApiError>;
  patch(name: string, patch: ObjectPatch): Result<T, ApiError>;
  /** `true` when this call deleted it, `false` when it was already gone. */
  delete(name: string): Result<boolean, ApiError>;
  replaceStatus(name: string, object: T): Result<T, ApiError>;
  patchStatus(name: string, patch: unknown): Result<T, ApiError>;
}

// === Reconciler ===

export type Action = { done: true } | { requeueAfterMs: number };
export function done(): { done: true };
export function requeueAfter(millis: number): { requeueAfterMs: number };

export type Mapping = { labels: { name: string; namespace?: string } } | { allPrimaries: true };
export const ALL_PRIMARIES: { allPrimaries: true };
export function labelMapping(name: string, namespace?: string): Mapping;

export interface Watch {
  kind: TypeMeta;
  labelSelector?: string;
  mapping: Mapping;
}

export interface Registration {
  /** Unique among plugins; the default field manager. */
  name: string;
  primary: TypeMeta;
  labelSelector?: string;
  namespace?: string;
  owns?: TypeMeta[];
  watches?: Watch[];
  resyncPeriodMs?: number;
  /** Held by the host on every primary; `cleanup` runs before it is released. */
  finalizer?: string;
}

/** What a handler may return: an action, an error value, or a failed Result. */
export type Outcome = Action | Error | Result<Action | undefined, Error> | undefined;

export interface Controller<T extends KubeObject = KubeObject> {
  registration(): Registration;
  reconcile(object: T): Outcome;
  cleanup?(object: T): Outcome;
  absent?(reference: ObjectRef): Outcome;
}

/** The contract's `reconciler` export; export it as `reconciler`. */
export interface ReconcilerExport {
  register(): unknown;
  reconcile(request: unknown): unknown;
  cleanup(request: unknown): unknown;
}
export function exportController<T extends KubeObject = KubeObject>(controller: Controller<T>): ReconcilerExport;
export function groupVersionKind(type: TypeMeta): { group: string; version: string; kind: string; plural?: string };

// === Admission ===

/** `{group, version, resource}`, as the API server names a resource. */
export interface GroupVersionResource {
  group: string;
  version: string;
  resource: string;
}

/** Who made a request. */
export interface UserInfo {
  username?: string;
  uid?: string;
  groups?: string[];
  extra?: Record<string, string[]>;
}

/** One request under review, parsed from the AdmissionReview's `request`. */
export class AdmissionRequest<T extends KubeObject = KubeObject> {
  private constructor();
  readonly uid: string;
  readonly operation: 'CREATE' | 'UPDATE' | 'DELETE' | 'CONNECT';
  /** The object's type as the SDK names types. */
  readonly kind: TypeMeta;
  readonly resource: GroupVersionResource;
  readonly subResource?: string;
  /** Empty on a create whose object has only a `generateName`. */
  readonly name: string;
  /** Absent for a cluster-scoped object. */
  readonly namespace?: string;
  /** The object as it would be stored (create, update); absent on a delete. Yours to change in `mutate`. */
  object?: T;
  /** The object as it is stored now (update, delete). */
  readonly oldObject?: T;
  readonly userInfo: UserInfo;
  /** Nothing will be stored (`--dry-run=server`). */
  readonly dryRun: boolean;
  /** The whole request as sent, parsed anew on each read. */
  readonly raw: Record<string, unknown>;
}

/** An RFC 6902 JSON patch operation. */
export interface PatchOperation {
  op: 'add' | 'remove' | 'replace' | 'move' | 'copy' | 'test';
  path: string;
  from?: string;
  value?: unknown;
}

/** What a plugin decided about one request: make one with `allow()`, `deny()` or `patched()`. */
export class Verdict {
  private constructor();
  readonly allowed: boolean;
  /** Why it was denied, shown to whoever made the request. */
  readonly message?: string;
  /** The HTTP status of a denial (400–599); 403 when absent. */
  readonly code?: number;
  /** Warnings shown to the client, allowed or not. */
  readonly warnings: readonly string[];
  /** From `mutate` only: the patch the API server applies to the object. */
  readonly patch?: readonly PatchOperation[];
  /** The same verdict with one more warning for the client. */
  warn(warning: string): Verdict;
  /** The same verdict with this patch (mutate only); an empty one is no change. Throws a TypeError for a malformed patch. */
  withPatch(operations: PatchOperation[]): Verdict;
}
/** The request may proceed unchanged. */
export function allow(): Verdict;
/** The request is refused with `message`; throws a TypeError without a message or with a code outside 400–599. */
export function deny(message: string, options?: { code?: number }): Verdict;
/**
 * Allows the request with its object changed into `changed` (which may be
 * `request.object`, changed in place): the patch from the object as sent.
 * An AdmissionError for a request without an object (a delete).
 */
export function patched<T extends KubeObject>(request: AdmissionRequest<T>, changed: T | KubeObject): Result<Verdict, AdmissionError>;
/** The AdmissionReview's `request` as JSON text, checked. */
export function parseRequest<T extends KubeObject = KubeObject>(json: string): Result<AdmissionRequest<T>, AdmissionError>;

/** What a review handler may return: a verdict, an error value, or a Result of one. */
export type Review = Verdict | Error | Result<Verdict, Error>;

export interface AdmissionHandlers<T extends KubeObject = KubeObject> {
  /** Whether the request may proceed; must not patch. Default: `allow()`. */
  validate?(request: AdmissionRequest<T>): Review;
  /** May change the object with `patched(request, changed)`; must be idempotent. Default: `allow()`. */
  mutate?(request: AdmissionRequest<T>): Review;
}

/** The contract's `admission` export; export it as `admission` and build with `--world controller-with-admission`. */
export interface AdmissionExport {
  validate(request: string): unknown;
  mutate(request: string): unknown;
}
export function exportAdmission<T extends KubeObject = KubeObject>(handlers: AdmissionHandlers<T>): AdmissionExport;

/** A parsed label selector (the Rust SDK's grammar): every requirement must hold. */
export class Selector {
  private constructor();
  static parse(text: string): Result<Selector, SelectorError>;
  readonly requirements: readonly { key: string; operator: 'exists' | 'does-not-exist' | 'in' | 'not-in'; values: readonly string[] }[];
  /** Whether these labels (absent: none) satisfy every requirement. */
  matches(labels?: Record<string, string> | null): boolean;
}

// === Config, events, logs, owners, finalizers ===

export function loadConfig<C = Record<string, unknown>>(check?: (raw: Record<string, unknown>) => C): Result<C, ConfigError>;
export function parseConfig<C = Record<string, unknown>>(json: string, check?: (raw: Record<string, unknown>) => C): Result<C, ConfigError>;
export function optionalString(raw: Record<string, unknown>, key: string): string | undefined;
export function optionalStringMap(raw: Record<string, unknown>, key: string): Record<string, string> | undefined;

export const EventType: { readonly Normal: 'Normal'; readonly Warning: 'Warning' };
export interface EventFields {
  type?: 'Normal' | 'Warning';
  reason: string;
  message: string;
}
export function emitEvent(regarding: KubeObject, event: EventFields): Result<undefined, ApiError>;
export namespace event {
  function emitEvent(regarding: KubeObject, event: EventFields): Result<undefined, ApiError>;
  function normal(regarding: KubeObject, reason: string, message: string): Result<undefined, ApiError>;
  function warning(regarding: KubeObject, reason: string, message: string): Result<undefined, ApiError>;
}

export type LogFields = Record<string, unknown>;
export namespace log {
  const LEVELS: readonly ['trace', 'debug', 'info', 'warn', 'error'];
  function write(level: 'trace' | 'debug' | 'info' | 'warn' | 'error', message: string, fields?: LogFields): void;
  function trace(message: string, fields?: LogFields): void;
  function debug(message: string, fields?: LogFields): void;
  function info(message: string, fields?: LogFields): void;
  function warn(message: string, fields?: LogFields): void;
  function error(message: string, fields?: LogFields): void;
}

export function ownerReference(owner: KubeObject, options?: { controller?: boolean }): Result<OwnerReference, OwnerError>;
export function controllerReference(owner: KubeObject): Result<OwnerReference, OwnerError>;
export function controllerOf(object: KubeObject): OwnerReference | undefined;
export function isControlledBy(child: KubeObject, owner: KubeObject): boolean;
export function setController<C extends KubeObject>(child: C, owner: KubeObject): Result<C, OwnerError>;
export namespace owner {
  export { ownerReference, controllerReference, controllerOf, isControlledBy, setController };
}

export namespace finalizer {
  function has(object: KubeObject, name: string): boolean;
  function add(object: KubeObject, name: string): boolean;
  function remove(object: KubeObject, name: string): boolean;
  function isDeleting(object: KubeObject): boolean;
}

export const CONTRACT: 'leasehold:controller@0.2.0';

export const ConfigMap: TypeMeta;
export const Secret: TypeMeta;
export const Namespace: TypeMeta;
export const Service: TypeMeta;
export const Pod: TypeMeta;
export const Event: TypeMeta;
export const Deployment: TypeMeta;
