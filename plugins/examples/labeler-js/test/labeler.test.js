// The built labeler component on Leasehold's own runtime, against an
// in-memory cluster (`npm test` builds it first; `leasehold plugin test`
// runs this with LEASEHOLD naming its binary). LABELER_WASM names another
// build of it. Its admission half is reviewed offline by `Admission`, on
// the bundle the component was built from.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
  Admission, ConfigMap, Deployment, Harness, ReviewRequest, allow, deny, done,
} from '@leasehold/sdk/testing';

const component = process.env.LABELER_WASM ?? 'dist/labeler-js.wasm';
const config = { selector: 'leasehold.dev/labeler=on', labels: { tier: 'config' } };

function configMap(name, labels, data) {
  return { ...ConfigMap, metadata: { namespace: 'default', name, labels }, data };
}

let harness;
before(async () => {
  harness = await Harness.load(component, { config });
});
after(() => harness.close());

test('registers for ConfigMaps matching the configured selector', () => {
  assert.equal(harness.registration.name, 'labeler-js');
  assert.deepEqual(harness.registration.primary, { apiVersion: 'v1', kind: 'ConfigMap' });
  assert.equal(harness.registration.labelSelector, 'leasehold.dev/labeler=on');
});

test('a selected ConfigMap gets the labels, its key count and an Event', async () => {
  await harness.insert(configMap('selected', { 'leasehold.dev/labeler': 'on' }, { a: '1', b: '2' }));

  const result = await harness.reconcile({ namespace: 'default', name: 'selected' });

  assert.deepEqual(result.action, done());
  assert.deepEqual(result.calls, [
    'apply v1/ConfigMap default/selected -> ok',
    'emit-event v1/ConfigMap default/selected -> ok',
  ]);
  assert.deepEqual(result.events.map(({ reason, type }) => [reason, type]), [['Labelled', 'Normal']]);
  const labelled = await harness.get({ ...ConfigMap, namespace: 'default', name: 'selected' });
  assert.equal(labelled.metadata.labels.tier, 'config');
  assert.equal(labelled.metadata.annotations['leasehold.dev/keys'], '2');

  // Labelled already: the next reconcile changes nothing.
  const again = await harness.reconcile(labelled);
  assert.deepEqual(again.calls, []);
});

test('a forbidden apply is a retryable error, not a trap', async () => {
  await harness.insert(configMap('refused', { 'leasehold.dev/labeler': 'on' }, { a: '1' }));
  await harness.forbid({ apiVersion: 'v1', kind: 'Event' });
  await harness.forbid(ConfigMap);

  const result = await harness.reconcile({ namespace: 'default', name: 'refused' });

  assert.equal(result.action, undefined);
  assert.equal(result.error.retryable, true);
  assert.match(result.error.message, /^api error 403 Forbidden/);
  assert.deepEqual(result.calls, ['apply v1/ConfigMap default/refused -> 403 Forbidden']);
});

test('an unusable configuration is a permanent error', async () => {
  const broken = await Harness.load(component, { config: { labels: { tier: 7 } } });
  try {
    await broken.insert(configMap('any', { 'leasehold.dev/labeler': '' }));
    const result = await broken.reconcile({ namespace: 'default', name: 'any' });
    assert.deepEqual(result.error, {
      message: 'invalid plugin configuration: labels must map names to strings',
      retryable: false,
    });
  } finally {
    broken.close();
  }
});

test('mutate labels a selected ConfigMap as it is created, before any reconcile', async () => {
  const admission = await Admission.load(component, { config });
  const created = configMap('new', { 'leasehold.dev/labeler': 'on', owner: 'jane' }, { a: '1' });

  const { verdict, object, calls } = await admission.mutate(ReviewRequest.create(created));

  assert.equal(verdict.allowed, true);
  assert.deepEqual(verdict.patch, [{ op: 'add', path: '/metadata/labels/tier', value: 'config' }]);
  assert.deepEqual(object.metadata.labels, { 'leasehold.dev/labeler': 'on', owner: 'jane', tier: 'config' });
  assert.deepEqual(calls, [], 'a review reads nothing from the cluster');
  // Labelled already, or not selected: nothing to change.
  assert.deepEqual((await admission.mutate(ReviewRequest.create(object))).verdict, allow());
  const ignored = configMap('ignored', { 'leasehold.dev/labeler': 'off' });
  assert.deepEqual((await admission.mutate(ReviewRequest.create(ignored))).verdict, allow());
  assert.deepEqual((await admission.mutate(ReviewRequest.delete(created))).verdict, allow());
});

test('validate refuses a selected ConfigMap whose managed label has another value, naming it', async () => {
  const admission = await Admission.load(component, { config });
  const changed = configMap('changed', { 'leasehold.dev/labeler': 'on', tier: 'web' });

  const { verdict } = await admission.validate(ReviewRequest.update(configMap('changed', { 'leasehold.dev/labeler': 'on', tier: 'config' }), changed));

  assert.deepEqual(verdict, deny('label tier must be "config", not "web": labeler-js sets the labels of ConfigMaps matching leasehold.dev/labeler=on'));
  // mutate leaves that one for validate rather than overwrite it.
  assert.deepEqual((await admission.mutate(ReviewRequest.create(changed))).verdict, allow());
  const labelled = configMap('labelled', { 'leasehold.dev/labeler': 'on', tier: 'config' });
  assert.deepEqual((await admission.validate(ReviewRequest.create(labelled))).verdict, allow());
  const unselected = configMap('unselected', { tier: 'web' });
  assert.deepEqual((await admission.validate(ReviewRequest.create(unselected))).verdict, allow());
});

test('a review it cannot decide is an error naming the cause, for the failure policy', async () => {
  const broken = await Admission.load(component, { config: { selector: 'tier in (a', labels: { tier: 'config' } } });
  const request = ReviewRequest.create(configMap('any', { tier: 'a' }));
  assert.deepEqual((await broken.mutate(request)).error, { message: 'unbalanced parentheses in selector "tier in (a"' });

  const admission = await Admission.load(component, { config });
  const deployment = ReviewRequest.create({ ...Deployment, metadata: { namespace: 'default', name: 'web' } });
  assert.deepEqual((await admission.validate(deployment)).error, {
    message: "labeler-js reviews ConfigMaps, not apps/v1/Deployment: its Plugin's admission rules must match only configmaps",
  });
});
