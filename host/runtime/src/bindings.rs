//! Rust bindings of the `leasehold:controller` contract, generated from
//! `wit/`: the current version and the one before it, which the host links
//! side by side (see [`super::previous`]).

/// `leasehold:controller@0.2.0` (`wit/controller.wit`), the world with
/// every export; a component may leave out `admission`, so its exports are
/// looked up one interface at a time rather than through the world.
pub mod current {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "controller-with-admission",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// `leasehold:controller@0.1.0` (`wit/v0.1/controller.wit`, frozen). Its
/// `types` are the current ones (the records are identical), so errors and
/// object references need no conversion.
pub mod previous {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.1",
        world: "controller",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "leasehold:controller/types": super::current::leasehold::controller::types,
        },
    });
}
