// The harness client: a component that cannot be loaded is refused with the
// reason `leasehold plugin run` gave, and no process is left behind.

import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { Harness } from '../src/testing.js';

test('a harness that cannot start says why', async () => {
  // A stand-in for `leasehold` that fails as it would for a bad file.
  const dir = mkdtempSync(join(tmpdir(), 'leasehold-sdk-'));
  const fake = join(dir, 'leasehold');
  writeFileSync(fake, '#!/bin/sh\necho "error: cannot run $6: not a valid wasm component" >&2\nexit 1\n');
  chmodSync(fake, 0o755);
  await assert.rejects(
    Harness.load('broken.wasm', { leasehold: fake }),
    /cannot load broken.wasm into the harness: leasehold plugin run exited \(code 1\):\nerror: cannot run broken.wasm: not a valid wasm component/,
  );
});

test('answers are matched to commands in order', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'leasehold-sdk-'));
  const fake = join(dir, 'leasehold');
  // Answers each command line with its op, after the registration.
  writeFileSync(fake, `#!/usr/bin/env node
const rl = require('node:readline').createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const { op, name } = JSON.parse(line);
  const answer = op === 'registration' ? { name: 'fake', primary: {} } : { object: { op, name } };
  process.stdout.write(JSON.stringify({ ok: true, ...answer }) + '\\n');
});
`);
  chmodSync(fake, 0o755);
  const harness = await Harness.load('any.wasm', { leasehold: fake });
  assert.equal(harness.registration.name, 'fake');
  const [a, b] = await Promise.all([
    harness.get({ apiVersion: 'v1', kind: 'ConfigMap', name: 'a' }),
    harness.get({ apiVersion: 'v1', kind: 'ConfigMap', name: 'b' }),
  ]);
  assert.deepEqual([a.name, b.name], ['a', 'b']);
  harness.close();
});
