//! Rust bindings of the `leasehold:controller` world, generated from `wit/`.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "controller",
    imports: { default: async | trappable },
    exports: { default: async },
});
