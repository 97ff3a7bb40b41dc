// Label selectors matched locally, with the Rust SDK's grammar.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Selector, SelectorError } from '../src/index.js';

const matches = (text, labels) => Selector.parse(text).unwrap().matches(labels);

test('every requirement form matches as the API server would', () => {
  const labels = { team: 'a', tier: 'web', 'leasehold.dev/labeler': 'on' };
  const cases = [
    ['', true],
    ['team', true],
    ['!team', false],
    ['!legacy', true],
    ['team=a', true],
    ['team==a', true],
    ['team=b', false],
    ['team!=b', true],
    ['legacy!=b', true],
    ['team in (a, b)', true],
    ['team in (b,c)', false],
    ['legacy in (a)', false],
    ['team notin (b,c)', true],
    ['legacy notin (a)', true],
    ['team notin (a)', false],
    ['leasehold.dev/labeler=on, tier in (web,api)', true],
    ['leasehold.dev/labeler=on,!tier', false],
    [' team = a ', true],
  ];
  for (const [text, expected] of cases) assert.equal(matches(text, labels), expected, text);
  assert.equal(matches('team', undefined), false, 'an object without labels has none');
  assert.equal(matches('!team', undefined), true);
  assert.equal(matches('toString', {}), false, 'only the object\'s own labels count');
});

test('a malformed selector is a SelectorError value naming the requirement', () => {
  const cases = [
    ['=a', 'requirement "=a" has no label key'],
    ['!', 'requirement "!" has no label key'],
    ['team in (a', 'unbalanced parentheses in selector "team in (a"'],
    ['team in a)', 'unbalanced parentheses in selector "team in a)"'],
    ['teamin (a)', 'requirement "teamin (a)" is not `key in (values)` or `key notin (values)`'],
    ['team in (a) x', 'requirement "team in (a) x" is not `key in (values)` or `key notin (values)`'],
    ['my team=a', 'requirement "my team=a" has no label key'],
  ];
  for (const [text, message] of cases) {
    const parsed = Selector.parse(text);
    assert.equal(parsed.ok, false, text);
    assert.ok(parsed.error instanceof SelectorError, text);
    assert.equal(parsed.error.message, message);
  }
  assert.equal(Selector.parse(7).error.message, 'a label selector is text, not number');
});
