// Type declarations of @leasehold/sdk/testing.

import type { KubeObject, ObjectRef, TypeMeta, Verdict } from './index.js';

export { done, requeueAfter, ConfigMap, Secret, Namespace, Service, Pod, Event, Deployment } from './index.js';
export { Verdict, allow, deny } from './index.js';

export interface Target extends TypeMeta {
  namespace?: string;
  name: string;
}

export interface ReconcileResult {
  reference: ObjectRef;
  /** `{done: true}` or `{requeueAfterMs}`, when the plugin succeeded. */
  action?: { done: true } | { requeueAfterMs: number };
  /** When it failed: its own error, or (`runtime`) a trap, timeout or memory overrun. */
  error?: { message: string; retryable: boolean; runtime?: true };
  /** The calls this reconcile made, e.g. `apply v1/ConfigMap default/settings -> ok`. */
  calls: string[];
  events: { kind: string; regarding: ObjectRef; type: 'Normal' | 'Warning'; reason: string; message: string }[];
  logs: { level: string; message: string; fields: Record<string, string> }[];
  /** The largest linear memory any reconcile of this harness has reached (the limit is 64 MiB). */
  memoryPeakBytes: number;
}

export class Harness {
  static load(path: string | URL, options?: { config?: object; leasehold?: string }): Promise<Harness>;
  /** What the plugin registered (kinds as `{apiVersion, kind}`). */
  readonly registration: {
    name: string;
    primary: TypeMeta;
    labelSelector?: string | null;
    namespace?: string | null;
    owns: TypeMeta[];
    watches: unknown[];
    resyncPeriodMs?: number | null;
    finalizer?: string | null;
  };
  insert<T extends KubeObject>(object: T): Promise<T>;
  get<T extends KubeObject = KubeObject>(target: Target): Promise<T | undefined>;
  delete(target: Target): Promise<boolean>;
  forbid(type: TypeMeta): Promise<void>;
  objects(): Promise<KubeObject[]>;
  reconcile(target: ObjectRef | KubeObject): Promise<ReconcileResult>;
  close(): void;
}

/** The `request` of an AdmissionReview about an object, as the API server sends it. */
export class ReviewRequest {
  private constructor();
  /** A request to create `object` (which needs its apiVersion and kind). */
  static create(object: KubeObject): ReviewRequest;
  /** A request to change `old` into `changed`. */
  static update(old: KubeObject, changed: KubeObject): ReviewRequest;
  /** A request to delete `old`. */
  static delete(old: KubeObject): ReviewRequest;
  /** Made by `username`, a member of `groups` (default: `kubernetes-admin` in `system:masters`). */
  user(username: string, groups?: string[]): ReviewRequest;
  /** Made with `--dry-run=server`. */
  dryRun(): ReviewRequest;
  toJSON(): Record<string, unknown>;
  /** The request as JSON text. */
  toString(): string;
}

export interface ReviewResult {
  /** What the plugin decided, when it could. */
  verdict?: Verdict;
  /** Why there is no verdict: the plugin's error, or (`runtime`) an exception out of the export, which in a component is a trap. */
  error?: { message: string; runtime?: true };
  /** The Kubernetes calls this review made; offline each fails, e.g. `get v1/ConfigMap default/a -> 0 Offline`. */
  calls: string[];
  logs: { level: string; message: string; fields: Record<string, string> }[];
}

export interface MutateResult<T extends KubeObject = KubeObject> extends ReviewResult {
  /** The request's object, patched when the verdict allows it with a patch; absent for a delete. */
  object?: T;
}

/**
 * A plugin's `admission` export, reviewed in this process on the module the
 * component was built from (`x.bundle.js` beside `x.wasm`), or on a
 * JavaScript module given by path; Kubernetes calls fail offline.
 */
export class Admission {
  static load(path: string | URL, options?: { config?: object }): Promise<Admission>;
  /** `request`: a ReviewRequest, or the AdmissionReview's `request` as JSON text or a value. */
  validate(request: ReviewRequest | string | object): Promise<ReviewResult>;
  /** As `validate`, and applies the verdict's patch to the request's object as the API server would. */
  mutate<T extends KubeObject = KubeObject>(request: ReviewRequest | string | object): Promise<MutateResult<T>>;
}
