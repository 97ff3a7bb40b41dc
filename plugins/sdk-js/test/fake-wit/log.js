import { state } from './state.js';

export function log(level, message, fields) {
  state.logs.push({ level, message, fields });
}
