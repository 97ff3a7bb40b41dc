#!/usr/bin/env node
/**
 * `leasehold-js build ENTRY --out FILE`: a plugin module and everything it
 * imports (the SDK included) bundled into one ES module with rolldown, then
 * made a component with componentize-js for the SDK's contract.
 *
 * componentize-js takes one module and binds only the contract's
 * `leasehold:controller/...` imports, so those stay external and
 * everything else is inlined. `@leasehold/sdk` always resolves to the SDK
 * this command belongs to: the bundle and the WIT it is built against
 * cannot disagree.
 *
 * The two tools are the plugin's devDependencies; `--tools DIR` names
 * another node_modules that holds them (the repository's build does).
 */

import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const SDK_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const WORLDS = ['controller', 'controller-with-admission'];
/** componentize-js's `http` (fetch) and `fetch-event` (an incoming handler): outbound HTTP from JavaScript is not supported yet. */
const DISABLED_FEATURES = ['http', 'fetch-event'];

function usage(message) {
  if (message) console.error(`leasehold-js: ${message}`);
  console.error('usage: leasehold-js build ENTRY.js --out FILE.wasm [--world controller|controller-with-admission] [--tools NODE_MODULES]');
  process.exit(2);
}

/** The entry file of `name` in the first node_modules, walking up from each of `dirs`. */
function findPackage(name, dirs) {
  for (const start of dirs) {
    for (let dir = resolve(start); ; dir = dirname(dir)) {
      const base = dir.endsWith('node_modules') ? dir : join(dir, 'node_modules');
      const manifest = join(base, name, 'package.json');
      if (existsSync(manifest)) {
        const pkg = JSON.parse(readFileSync(manifest, 'utf8'));
        const root = pkg.exports?.['.'] ?? pkg.exports;
        const entry = typeof root === 'string' ? root : root?.import ?? root?.default ?? pkg.main;
        return pathToFileURL(join(base, name, entry)).href;
      }
      if (dirname(dir) === dir) break;
    }
  }
  return undefined;
}

async function build(entry, { out, world, tools }) {
  const dirs = [tools, process.cwd(), dirname(resolve(entry)), SDK_DIR].filter(Boolean);
  const rolldownUrl = findPackage('rolldown', dirs);
  const componentizeUrl = findPackage('@bytecodealliance/componentize-js', dirs);
  if (!rolldownUrl || !componentizeUrl) {
    usage('rolldown and @bytecodealliance/componentize-js are needed: npm install (they are the plugin\'s devDependencies)');
  }
  const { rolldown } = await import(rolldownUrl);
  const { componentize } = await import(componentizeUrl);

  const started = performance.now();
  const bundle = await rolldown({
    input: resolve(entry),
    external: [/^leasehold:controller\//],
    platform: 'neutral',
    resolve: { alias: { '@leasehold/sdk': join(SDK_DIR, 'src/index.js') } },
    logLevel: 'warn',
    // An import nothing resolves would be left to componentize-js, whose
    // snapshot then fails without naming the package: stop here instead.
    onLog(level, log, handle) {
      handle(log.code === 'UNRESOLVED_IMPORT' ? 'error' : level, log);
    },
  });
  const { output } = await bundle.generate({ format: 'esm', codeSplitting: false });
  await bundle.close();
  const bundled = resolve(out.replace(/\.wasm$/, '') + '.bundle.js');
  mkdirSync(dirname(bundled), { recursive: true });
  writeFileSync(bundled, output[0].code);

  const { component } = await componentize({
    sourcePath: bundled,
    witPath: join(SDK_DIR, 'wit'),
    worldName: world,
    disableFeatures: DISABLED_FEATURES,
  });
  // Written beside and renamed, so an interrupted build leaves no half file.
  writeFileSync(`${out}.tmp`, component);
  renameSync(`${out}.tmp`, out);
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  console.log(`component: ${resolve(out)} (${statSync(out).size} bytes, ${seconds} s)`);
}

const [command, ...rest] = process.argv.slice(2);
if (command !== 'build') usage(command ? `unknown command ${command}` : undefined);
let parsed;
try {
  parsed = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      out: { type: 'string' },
      world: { type: 'string', default: 'controller' },
      tools: { type: 'string' },
    },
  });
} catch (error) {
  usage(error.message);
}
const { positionals, values } = parsed;
if (positionals.length !== 1) usage('one ENTRY module is needed');
if (!values.out) usage('--out FILE.wasm is needed');
if (!WORLDS.includes(values.world)) usage(`--world must be one of ${WORLDS.join(', ')}`);
await build(positionals[0], values).catch((error) => {
  console.error(`leasehold-js: cannot build ${positionals[0]}: ${error.message ?? error}`);
  process.exit(1);
});
