// Module resolution hooks: `leasehold:controller/<interface>@0.2.0` is
// fake-wit/<interface>.js.
const PREFIX = 'leasehold:controller/';

export async function resolve(specifier, context, next) {
  if (specifier.startsWith(PREFIX)) {
    const name = specifier.slice(PREFIX.length).split('@')[0];
    return { url: new URL(`./fake-wit/${name}.js`, import.meta.url).href, shortCircuit: true };
  }
  return next(specifier, context);
}
