// Type declarations of @leasehold/sdk/testing.

import type { KubeObject, ObjectRef, TypeMeta } from './index.js';

export { done, requeueAfter, ConfigMap, Secret, Namespace, Service, Pod, Event, Deployment } from './index.js';

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
