// `node --import ./test/fake-host.js`: the contract's imports
// (`leasehold:controller/...`), which only a component has, answered by the
// fakes in fake-wit/, so the SDK's own modules run under Node's test runner.
import { register } from 'node:module';

register('./hooks.js', import.meta.url);
