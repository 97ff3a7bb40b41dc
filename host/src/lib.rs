//! Leasehold: a highly available Kubernetes control plane whose controllers
//! are WebAssembly components.
//!
//! Every replica serves the [`api`]; replicas elect a leader through a Lease
//! ([`election`]); work that must run exactly once is a leader-only
//! [`election::roles::LeaderRole`], started on acquisition and stopped before the
//! Lease can pass to anyone else. [`replica::Replica`] wires it together.

pub mod admission;
pub mod api;
pub mod backoff;
pub mod body;
pub mod cli;
pub mod controllers;
pub mod election;
pub mod metrics;
pub mod oci;
pub mod placement;
pub mod plugin_cli;
pub mod plugins;
pub mod replica;
pub mod telemetry;

pub use cli::Cli;
/// The wasm runtime, a crate of its own so that plugin authors' test
/// harness compiles it without the control plane.
pub use leasehold_runtime as runtime;
