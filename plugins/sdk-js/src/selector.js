/**
 * Kubernetes label selectors, parsed and matched locally: for an object a
 * plugin already holds, such as the one under admission review (the API
 * server sends a review for whatever the Plugin's admission rules match,
 * not only what the registration's selector selects).
 *
 * ```js
 * const selector = Selector.parse('team in (a,b),!legacy');
 * if (!selector.ok) return selector.error;   // a SelectorError
 * selector.value.matches({ team: 'a' });     // true
 * ```
 *
 * The grammar is the Rust SDK's (`leasehold_sdk::selector`): `key`,
 * `!key`, `key=value` (or `==`), `key!=value`, `key in (a,b)`,
 * `key notin (a,b)`, joined by commas; the empty selector matches
 * everything.
 *
 * @module
 */

import { SelectorError } from './errors.js';
import { err, ok } from './result.js';

/** A parsed label selector: every requirement must hold. */
export class Selector {
  /** @private use `Selector.parse` */
  constructor(requirements) {
    this.requirements = Object.freeze(requirements);
    Object.freeze(this);
  }

  /** The selector `text`, or a `SelectorError` saying which requirement is malformed. */
  static parse(text) {
    if (typeof text !== 'string') return err(new SelectorError(`a label selector is text, not ${typeof text}`));
    try {
      const requirements = splitTopLevel(text)
        .map((part) => part.trim())
        .filter((part) => part !== '')
        .map(requirement);
      return ok(new Selector(requirements));
    } catch (error) {
      if (error instanceof SelectorError) return err(error);
      throw error;
    }
  }

  /** Whether `labels` (an object of label names to values; absent is none) satisfy every requirement. */
  matches(labels = {}) {
    const has = (key) => Object.hasOwn(labels ?? {}, key);
    return this.requirements.every(({ key, operator, values }) => {
      switch (operator) {
        case 'exists': return has(key);
        case 'does-not-exist': return !has(key);
        case 'in': return has(key) && values.includes(labels[key]);
        case 'not-in': return !has(key) || !values.includes(labels[key]);
        default: throw new Error(`unknown operator ${operator}`);
      }
    });
  }
}

/** Splits on the commas that separate requirements, not those inside a set. */
function splitTopLevel(text) {
  const parts = [];
  let depth = 0;
  let start = 0;
  for (let index = 0; index < text.length; index += 1) {
    const character = text[index];
    if (character === '(') depth += 1;
    if (character === ')') depth -= 1;
    if (depth < 0) break;
    if (character === ',' && depth === 0) {
      parts.push(text.slice(start, index));
      start = index + 1;
    }
  }
  if (depth !== 0) throw new SelectorError(`unbalanced parentheses in selector ${JSON.stringify(text)}`);
  parts.push(text.slice(start));
  return parts;
}

/** One requirement as `{key, operator, values}`; `key=value` is `in` one value, `key!=value` `not-in` one. */
function requirement(text) {
  const key = (name) => {
    const trimmed = name.trim();
    if (trimmed === '' || /\s/.test(trimmed)) {
      throw new SelectorError(`requirement ${JSON.stringify(text)} has no label key`);
    }
    return trimmed;
  };
  const open = text.indexOf('(');
  if (open >= 0) {
    const badSet = () => new SelectorError(`requirement ${JSON.stringify(text)} is not \`key in (values)\` or \`key notin (values)\``);
    if (!text.endsWith(')')) throw badSet();
    const values = text.slice(open + 1, -1).split(',').map((value) => value.trim()).filter((value) => value !== '');
    const head = text.slice(0, open).trim();
    if (head.endsWith('notin')) return { key: key(head.slice(0, -'notin'.length)), operator: 'not-in', values };
    // `key in` needs a space before `in`, or keys such as `domain=login` would lose their last letters.
    if (/\sin$/.test(head)) return { key: key(head.slice(0, -'in'.length)), operator: 'in', values };
    throw badSet();
  }
  const notEquals = text.indexOf('!=');
  if (notEquals >= 0) {
    return { key: key(text.slice(0, notEquals)), operator: 'not-in', values: [text.slice(notEquals + 2).trim()] };
  }
  const equals = text.indexOf('=');
  if (equals >= 0) {
    const value = text.slice(text.startsWith('==', equals) ? equals + 2 : equals + 1);
    return { key: key(text.slice(0, equals)), operator: 'in', values: [value.trim()] };
  }
  if (text.startsWith('!')) return { key: key(text.slice(1)), operator: 'does-not-exist', values: [] };
  return { key: key(text), operator: 'exists', values: [] };
}
