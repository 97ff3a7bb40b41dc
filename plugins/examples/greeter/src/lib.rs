//! A `Greeting` custom resource: for each one the greeter keeps a ConfigMap
//! holding the greeting, owned by the Greeting so that it goes when the
//! Greeting does, and reports progress in the Greeting's status.
//!
//! It also checks Greetings before the API server stores them
//! ([`GreetingAdmission`]): one that greets nobody is denied, and one
//! without a salutation gets the default, so the stored object says what
//! the greeter will write.
//!
//! The CRD to install is `crd.json` beside this crate, generated from the
//! types below (a test fails when it drifts).

use k8s_openapi::api::core::v1::ConfigMap;
use kube_derive::CustomResource;
use leasehold_sdk::admission::Request;
use leasehold_sdk::prelude::*;
use leasehold_sdk::{event, owner};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The controller's name, also its field manager.
const NAME: &str = "greeter";

/// The salutation of a Greeting that names none; admission writes it into
/// the spec, and the reconcile falls back on it for Greetings stored
/// before admission was configured.
pub const DEFAULT_SALUTATION: &str = "Hello";

/// What a Greeting asks for.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "examples.leasehold.dev",
    version = "v1alpha1",
    kind = "Greeting",
    namespaced,
    status = "GreetingStatus",
    shortname = "greet",
    printcolumn = r#"{"name":"Ready","type":"boolean","jsonPath":".status.ready"}"#,
    crates(kube_core = "::kube_core")
)]
#[serde(rename_all = "camelCase")]
pub struct GreetingSpec {
    /// Whom to greet.
    pub name: String,
    /// How to greet, for example `Good morning`; `Hello` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salutation: Option<String>,
}

impl GreetingSpec {
    /// The greeting this spec asks for, for example `Hello, world!`.
    pub fn greeting(&self) -> String {
        let salutation = self.salutation.as_deref().unwrap_or(DEFAULT_SALUTATION);
        format!("{salutation}, {}!", self.name)
    }
}

/// What the greeter last did for a Greeting.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GreetingStatus {
    /// The ConfigMap holding the greeting.
    pub config_map: Option<String>,
    /// The `metadata.generation` this status describes.
    pub observed_generation: Option<i64>,
    /// Whether the ConfigMap matches the spec.
    pub ready: bool,
}

/// The greeter controller.
#[derive(Debug, Default)]
pub struct Greeter;

impl Reconciler for Greeter {
    type Object = Greeting;

    fn registration(&self) -> Registration<Greeting> {
        // Owning ConfigMaps: deleting or editing one reconciles its Greeting.
        Registration::new(NAME).owns::<ConfigMap>()
    }

    fn reconcile(&self, greeting: Greeting) -> Result<Action, reconciler::Error> {
        let namespace = greeting.namespace().unwrap_or_default();
        let child = format!("{}-greeting", greeting.name_any());

        let mut config_map = ConfigMap {
            data: Some([("greeting".to_string(), greeting.spec.greeting())].into()),
            ..Default::default()
        };
        owner::set_controller(&mut config_map, &greeting)?;
        Api::<ConfigMap>::namespaced(&namespace).apply(
            &child,
            &config_map,
            &ApplyParams::new(NAME).force(),
        )?;

        let status = GreetingStatus {
            config_map: Some(child),
            observed_generation: greeting.metadata.generation,
            ready: true,
        };
        if greeting.status.as_ref() != Some(&status) {
            let patch = serde_json::json!({ "status": status });
            Api::<Greeting>::namespaced(&namespace).patch_status(&greeting.name_any(), &patch)?;
            info!(
                "greeted",
                greeting = ObjectRef::from_object(&greeting),
                whom = greeting.spec.name
            );
            let _ = event::normal(
                &greeting,
                "Greeted",
                &format!("wrote the greeting for {}", greeting.spec.name),
            );
        }
        Ok(Action::Done)
    }
}

/// The greeter's admission: what the API server asks before it stores a
/// Greeting.
#[derive(Debug, Default)]
pub struct GreetingAdmission;

impl Admission for GreetingAdmission {
    type Object = Greeting;

    /// Denies a Greeting that greets nobody: the greeter could write
    /// nothing sensible for it.
    fn validate(&self, request: &Request<Greeting>) -> admission::Result<Verdict> {
        match request.object() {
            Some(greeting) if greeting.spec.name.trim().is_empty() => Ok(Verdict::deny(
                "spec.name must not be empty: whom should the greeter greet?",
            )),
            // A delete has no new object, and anything else is fine.
            _ => Ok(Verdict::allow()),
        }
    }

    /// Writes the default salutation into a Greeting that names none.
    fn mutate(&self, request: &Request<Greeting>) -> admission::Result<Verdict> {
        let Some(greeting) = request.object() else {
            return Ok(Verdict::allow());
        };
        if greeting.spec.salutation.is_some() {
            return Ok(Verdict::allow());
        }
        let mut defaulted = greeting.clone();
        defaulted.spec.salutation = Some(DEFAULT_SALUTATION.to_owned());
        Verdict::patched(request, &defaulted)
    }
}

leasehold_sdk::export_controller!(Greeter, admission: GreetingAdmission);

#[cfg(test)]
mod tests;
