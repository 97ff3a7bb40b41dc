//! A `Greeting` custom resource: for each one the greeter keeps a ConfigMap
//! holding the greeting, owned by the Greeting so that it goes when the
//! Greeting does, and reports progress in the Greeting's status.
//!
//! The CRD to install is `crd.json` beside this crate, generated from the
//! types below (a test fails when it drifts).

use k8s_openapi::api::core::v1::ConfigMap;
use kube_derive::CustomResource;
use leasehold_sdk::prelude::*;
use leasehold_sdk::{event, owner};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The controller's name, also its field manager.
const NAME: &str = "greeter";

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
            data: Some(
                [(
                    "greeting".to_string(),
                    format!("Hello, {}!", greeting.spec.name),
                )]
                .into(),
            ),
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

leasehold_sdk::export_controller!(Greeter);

#[cfg(test)]
mod tests;
