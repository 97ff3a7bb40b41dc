// What the fake imports record and answer; tests reset it.
export const state = {
  calls: [],
  logs: [],
  config: '{}',
  /** `(name, args) => value`; throw `{payload: apiError}` for an error. */
  answer: () => undefined,
};

export function reset() {
  state.calls = [];
  state.logs = [];
  state.config = '{}';
  state.answer = () => undefined;
}

export function hostCall(name, args) {
  state.calls.push([name, ...args]);
  return state.answer(name, args);
}
