import { state } from './state.js';

export function getConfig() {
  return state.config;
}
