import { hostCall } from './state.js';

export const get = (...args) => hostCall('get', args);
export const list = (...args) => hostCall('list', args);
export const create = (...args) => hostCall('create', args);
export const replace = (...args) => hostCall('replace', args);
export const apply = (...args) => hostCall('apply', args);
export const patch = (...args) => hostCall('patch', args);
const remove = (...args) => hostCall('delete', args);
export { remove as delete };
export const updateStatus = (...args) => hostCall('updateStatus', args);
export const emitEvent = (...args) => hostCall('emitEvent', args);
