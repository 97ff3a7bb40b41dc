//! Write [Leasehold] controller plugins in Rust.
//!
//! A plugin is a WebAssembly component that implements the
//! `leasehold:controller` WIT contract. This crate hides that contract: a
//! plugin author implements [`Reconciler`] for a typed Kubernetes object,
//! exports it with [`export_controller!`], and talks to the cluster through
//! [`Api`], a typed client in the spirit of kube's.
//!
//! ```no_run
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use leasehold_sdk::prelude::*;
//!
//! #[derive(Default)]
//! struct Greeter;
//!
//! impl Reconciler for Greeter {
//!     type Object = ConfigMap;
//!
//!     fn registration(&self) -> Registration<ConfigMap> {
//!         Registration::new("greeter").labels("example.dev/greet=true")
//!     }
//!
//!     fn reconcile(&self, object: ConfigMap) -> Result<Action, reconciler::Error> {
//!         let namespace = object.namespace().unwrap_or_default();
//!         let greeting = serde_json::json!({ "data": { "greeting": format!("hello, {}", object.name_any()) } });
//!         Api::<ConfigMap>::namespaced(&namespace)
//!             .apply(&object.name_any(), &greeting, &ApplyParams::new("greeter"))?;
//!         info!("greeted", name = object.name_any());
//!         Ok(Action::Done)
//!     }
//! }
//!
//! leasehold_sdk::export_controller!(Greeter);
//! ```
//!
//! Build it with `leasehold plugin build` (`cargo build --target
//! wasm32-wasip2`, in the workspace's `plugin` profile when it declares
//! one, else `release`) from a crate with `crate-type = ["cdylib"]`; the
//! `.wasm` is the component.
//!
//! A plugin may also check requests to the API server before they are
//! stored: implement [`admission::Admission`] and export it beside the
//! reconciler with `export_controller!(Greeter, admission: GreetingCheck)`.
//!
//! What the crate offers, one module per concept:
//!
//! - [`api`]: the typed client (patches and paginated lists included);
//!   errors are values, a 403 included.
//! - [`reconciler`]: the [`Reconciler`] trait, [`Registration`], [`Action`].
//! - [`admission`]: the [`Admission`] trait, its typed [`Request`] and the
//!   [`Verdict`] (allow, deny, warn, patch).
//! - [`owner`], [`finalizer`]: owner references and finalizers on objects.
//! - [`event`]: Kubernetes Events; [`log`](mod@log): structured logging
//!   macros ([`info!`] and friends).
//! - [`config()`]: the plugin's configuration as a type of its own.
//! - [`selector`]: label selectors, parsed and matched locally.
//! - `http` (feature `http`): outbound HTTP to the hosts the Plugin allows.
//! - [`testing`]: an in-memory cluster to unit-test a reconciler (and an
//!   admission) natively; the `leasehold-harness` crate runs the built
//!   component against it on the host's own runtime.
//!
//! [Leasehold]: https://github.com/leasehold-dev/leasehold
//! [`Admission`]: admission::Admission
//! [`Request`]: admission::Request
//! [`Verdict`]: admission::Verdict

pub mod admission;
pub mod api;
pub mod config;
pub mod event;
mod export;
pub mod finalizer;
mod host;
#[cfg(feature = "http")]
pub mod http;
pub mod log;
mod object;
pub mod owner;
pub mod reconciler;
pub mod selector;
pub mod testing;

pub use api::Api;
pub use object::{Object, ObjectRef, TypeMeta};
pub use reconciler::{Action, Mapping, Reconciler, Registration};

/// Re-exported so plugins use the same versions the SDK does.
pub use json_patch;
/// Re-exported so plugins use the same versions the SDK does.
pub use k8s_openapi;
/// Re-exported so plugins use the same versions the SDK does.
pub use kube_core;
/// Re-exported so plugins use the same versions the SDK does.
pub use serde_json;

/// Reads the plugin's configuration as `T`.
///
/// Empty configuration reads as `{}`; a configuration that does not fit `T`
/// is a permanent [`config::Error`], since a person must fix the Plugin.
///
/// ```no_run
/// #[derive(serde::Deserialize)]
/// struct Config { namespace_selector: String }
///
/// # fn example() -> Result<(), leasehold_sdk::config::Error> {
/// let config: Config = leasehold_sdk::config()?;
/// # Ok(()) }
/// ```
pub fn config<T: serde::de::DeserializeOwned>() -> Result<T, config::Error> {
    config::load()
}

/// The message of an error and of its sources, so the host's log shows the
/// cause and not only the outermost context.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// What most plugins need, in one `use`.
///
/// ```
/// use leasehold_sdk::prelude::*;
/// let params = ListParams::default().labels("a=b");
/// # let _ = params;
/// ```
pub mod prelude {
    pub use crate::admission::{self, Admission, Verdict};
    pub use crate::api::{Api, ApplyParams, ListParams, Patch};
    pub use crate::reconciler::{self, Action, Mapping, Reconciler, Registration};
    pub use crate::{Object, ObjectRef, debug, error, info, trace, warn};
    pub use kube_core::{Resource, ResourceExt};
}

/// Exports a [`Reconciler`] as the component's `reconciler` interface
/// (world `controller`), and with `admission:` an
/// [`Admission`](admission::Admission) as its `admission` interface too
/// (world `controller-with-admission`).
///
/// The types must implement `Default`; each call creates a fresh value, as
/// the host may run each call in a fresh instance anyway. Use it once, in
/// the plugin's `lib.rs`.
///
/// ```no_run
/// # use k8s_openapi::api::core::v1::ConfigMap;
/// # use leasehold_sdk::prelude::*;
/// #[derive(Default)]
/// struct Noop;
/// # impl Reconciler for Noop {
/// #     type Object = ConfigMap;
/// #     fn registration(&self) -> Registration<ConfigMap> { Registration::new("noop") }
/// #     fn reconcile(&self, _: ConfigMap) -> Result<Action, reconciler::Error> { Ok(Action::Done) }
/// # }
/// leasehold_sdk::export_controller!(Noop);
/// ```
///
/// With admission:
///
/// ```no_run
/// # use k8s_openapi::api::core::v1::ConfigMap;
/// # use leasehold_sdk::prelude::*;
/// # #[derive(Default)]
/// # struct Noop;
/// # impl Reconciler for Noop {
/// #     type Object = ConfigMap;
/// #     fn registration(&self) -> Registration<ConfigMap> { Registration::new("noop") }
/// #     fn reconcile(&self, _: ConfigMap) -> Result<Action, reconciler::Error> { Ok(Action::Done) }
/// # }
/// #[derive(Default)]
/// struct AllowAll;
///
/// impl Admission for AllowAll {
///     type Object = ConfigMap;
/// }
///
/// leasehold_sdk::export_controller!(Noop, admission: AllowAll);
/// ```
#[macro_export]
macro_rules! export_controller {
    ($reconciler:ty, admission: $admission:ty $(,)?) => {
        $crate::export_controller!($reconciler);

        // Checked on every target, so that a plugin's native `cargo test`
        // already says when the type cannot be exported.
        const _: fn() = || {
            fn exportable<A: $crate::admission::Admission + ::core::default::Default>() {}
            exportable::<$admission>();
        };

        // The reconciler's export above carries the `controller` world; this
        // one adds the `admission` interface, and wit-component joins the two
        // into the contract's `controller-with-admission`.
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        const _: () = {
            struct LeaseholdAdmission;

            impl $crate::__private::AdmissionGuest for LeaseholdAdmission {
                fn validate(
                    request: ::std::string::String,
                ) -> ::core::result::Result<$crate::__private::Verdict, ::std::string::String> {
                    $crate::__private::validate(&<$admission as ::core::default::Default>::default(), request)
                }

                fn mutate(
                    request: ::std::string::String,
                ) -> ::core::result::Result<$crate::__private::Verdict, ::std::string::String> {
                    $crate::__private::mutate(&<$admission as ::core::default::Default>::default(), request)
                }
            }

            $crate::__private::export_admission!(LeaseholdAdmission with_types_in $crate::__private::admission_bindings);
        };
    };
    ($reconciler:ty) => {
        // The generated exports are `unsafe` ABI glue; the SDK keeps its
        // soundness to wit-bindgen's generated code and its own tests.
        // Only a wasm build exports anything: native builds (the plugin's
        // own tests, `cargo build --workspace`) cannot link export names
        // such as `leasehold:controller/reconciler@0.1.0#reconcile`.
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        const _: () = {
            struct LeaseholdController;

            impl $crate::__private::Guest for LeaseholdController {
                fn register() -> $crate::__private::Registration {
                    $crate::__private::register(&<$reconciler as ::core::default::Default>::default())
                }

                fn reconcile(
                    request: $crate::__private::Request,
                ) -> ::core::result::Result<$crate::__private::Action, $crate::__private::ReconcileError> {
                    $crate::__private::reconcile(&<$reconciler as ::core::default::Default>::default(), request)
                }

                fn cleanup(
                    request: $crate::__private::Request,
                ) -> ::core::result::Result<$crate::__private::Action, $crate::__private::ReconcileError> {
                    $crate::__private::cleanup(&<$reconciler as ::core::default::Default>::default(), request)
                }
            }

            $crate::__private::export!(LeaseholdController with_types_in $crate::__private::bindings);
        };
    };
}

/// Not public API: what [`export_controller!`] expands to.
#[doc(hidden)]
pub mod __private {
    pub use crate::export::{cleanup, mutate, reconcile, register, validate};
    pub use admission_bindings::export as export_admission;
    pub use admission_bindings::exports::leasehold::controller::admission::{
        Guest as AdmissionGuest, Verdict,
    };
    pub use bindings::export;
    pub use bindings::exports::leasehold::controller::reconciler::{
        Action, Guest, ReconcileError, Registration, Request,
    };

    /// The bindings wit-bindgen generates from `wit/`, the contract.
    #[allow(unsafe_code, missing_docs, missing_debug_implementations, clippy::all)]
    pub mod bindings {
        wit_bindgen::generate!({
            world: "controller",
            path: "../../wit",
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "::leasehold_sdk::__private::bindings",
        });
    }

    /// The `admission` export alone, for `export_controller!(R, admission:
    /// A)`: wit-bindgen gives every exported interface a macro at the
    /// crate's root, so a second set of bindings for the contract's
    /// `controller-with-admission` world would define the reconciler's
    /// twice in this crate. This world adds only `admission`; the
    /// component's type is the union of the worlds its exports name, so a
    /// plugin that exports both is exactly `controller-with-admission`,
    /// and one that does not stays `controller`.
    #[allow(unsafe_code, missing_docs, missing_debug_implementations, clippy::all)]
    pub mod admission_bindings {
        wit_bindgen::generate!({
            inline: "
                package leasehold-sdk:admission;

                world admission {
                    export leasehold:controller/admission@0.2.0;
                }
            ",
            path: "../../wit",
            world: "leasehold-sdk:admission/admission",
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "::leasehold_sdk::__private::admission_bindings",
        });
    }
}
