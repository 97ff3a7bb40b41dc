// Module resolution hooks for `Admission.load` (@leasehold/sdk/testing),
// registered with `module.register`: the contract's imports
// (`leasehold:controller/<interface>@<version>`), which only a component
// has, are answered by offline-host.js.
const PREFIX = 'leasehold:controller/';

export async function resolve(specifier, context, next) {
  if (specifier.startsWith(PREFIX)) {
    return { url: new URL('./offline-host.js', import.meta.url).href, shortCircuit: true };
  }
  return next(specifier, context);
}
