// The built labeler component on Leasehold's own runtime, against an
// in-memory cluster (`npm test` builds it first; `leasehold plugin test`
// runs this with LEASEHOLD naming its binary). LABELER_WASM names another
// build of it.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { ConfigMap, Harness, done } from '@leasehold/sdk/testing';

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
