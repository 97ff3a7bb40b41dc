//! Mirrors ConfigMaps labelled `leasehold.dev/mirror=true` into every
//! namespace that the configured selector matches, and keeps the copies in
//! sync.
//!
//! Configuration: `{"namespaceSelector": "leasehold.dev/mirror-target=true"}`.
//!
//! A copy lives in another namespace than its source, where an owner
//! reference may not point, so copies name their source in labels instead
//! and a finalizer lets the mirror delete them before the source goes.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use leasehold_sdk::prelude::*;
use leasehold_sdk::{event, finalizer};
use serde::Deserialize;

/// The controller's name, also its field manager.
const NAME: &str = "configmap-mirror";
/// Sources carry this label.
const SOURCE_SELECTOR: &str = "leasehold.dev/mirror=true";
/// On a copy: the source's name and namespace.
const SOURCE_NAME: &str = "mirror.leasehold.dev/source-name";
const SOURCE_NAMESPACE: &str = "mirror.leasehold.dev/source-namespace";
const FINALIZER: &str = "mirror.leasehold.dev/copies";

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Config {
    /// Namespaces matching this label selector receive copies.
    namespace_selector: String,
}

/// The mirror controller.
#[derive(Debug, Default)]
pub struct Mirror;

impl Reconciler for Mirror {
    type Object = ConfigMap;

    fn registration(&self) -> Registration<ConfigMap> {
        Registration::new(NAME)
            .labels(SOURCE_SELECTOR)
            // A new or relabelled namespace may need copies of every source.
            .watches::<Namespace>(Mapping::AllPrimaries)
            // A copy edited or deleted by hand is put back.
            .watches_matching::<ConfigMap>(
                SOURCE_NAME,
                Mapping::labels(SOURCE_NAME).in_namespace_label(SOURCE_NAMESPACE),
            )
            .finalizer(FINALIZER)
    }

    fn reconcile(&self, source: ConfigMap) -> Result<Action, reconciler::Error> {
        let config: Config = leasehold_sdk::config()?;
        let home = source.namespace().unwrap_or_default();
        let targets: BTreeSet<String> = Api::<Namespace>::all()
            .list(&ListParams::default().labels(&config.namespace_selector))?
            .iter()
            .filter(|namespace| !finalizer::is_deleting(*namespace))
            .map(ResourceExt::name_any)
            .filter(|namespace| *namespace != home)
            .collect();
        let copies: BTreeMap<String, ConfigMap> = copies_of(&ObjectRef::from_object(&source))?
            .into_iter()
            .map(|copy| (copy.namespace().unwrap_or_default(), copy))
            .collect();

        let (mut changed, mut failed) = (0, 0);
        for namespace in &targets {
            let api = Api::<ConfigMap>::namespaced(namespace);
            let outcome = match copies.get(namespace) {
                Some(copy)
                    if copy.data == source.data && copy.binary_data == source.binary_data =>
                {
                    continue;
                }
                // The whole copy is the mirror's, so it is replaced (with its
                // resourceVersion, so a concurrent edit retries) rather than
                // applied: apply would keep keys that `create` wrote.
                Some(copy) => {
                    let updated = ConfigMap {
                        data: source.data.clone(),
                        binary_data: source.binary_data.clone(),
                        ..copy.clone()
                    };
                    api.replace(&copy.name_any(), &updated).map(drop)
                }
                // `create`, not `apply`: a ConfigMap of that name that is not
                // a copy belongs to someone else and must not be overwritten.
                None => api.create(&copy_of(&source)).map(drop),
            };
            match outcome {
                Ok(()) => changed += 1,
                Err(error) => {
                    failed += 1;
                    warn!("cannot write copy", namespace = namespace, error = error);
                    let _ = event::warning(
                        &source,
                        "CopyFailed",
                        &format!("namespace {namespace}: {error}"),
                    );
                }
            }
        }
        for (namespace, copy) in &copies {
            if !targets.contains(namespace) {
                Api::<ConfigMap>::namespaced(namespace).delete(&copy.name_any())?;
                changed += 1;
            }
        }
        if changed > 0 {
            info!(
                "mirrored",
                source = ObjectRef::from_object(&source),
                namespaces = targets.len(),
                changed = changed
            );
            let _ = event::normal(
                &source,
                "Mirrored",
                &format!("copied into {} namespaces", targets.len()),
            );
        }
        if failed > 0 {
            return Err(reconciler::Error::retryable(format!(
                "{failed} of {} copies failed",
                targets.len()
            )));
        }
        Ok(Action::Done)
    }

    fn cleanup(&self, source: ConfigMap) -> Result<Action, reconciler::Error> {
        delete_copies(&ObjectRef::from_object(&source))?;
        Ok(Action::Done)
    }

    fn absent(&self, source: &ObjectRef) -> Result<Action, reconciler::Error> {
        delete_copies(source)?;
        // The source may still exist without its label: release it, since
        // the host only finalizes objects the mirror still selects.
        let api = Api::<ConfigMap>::namespaced(source.namespace.as_deref().unwrap_or_default());
        if let Some(mut unlabelled) = api.get(&source.name)?
            && finalizer::remove(&mut unlabelled, FINALIZER)
        {
            api.replace(&source.name, &unlabelled)?;
        }
        Ok(Action::Done)
    }
}

/// The copy of `source` to keep in another namespace: its data, and labels
/// naming it (not its own labels, or the copy would be mirrored in turn).
fn copy_of(source: &ConfigMap) -> ConfigMap {
    let mut copy = ConfigMap {
        data: source.data.clone(),
        binary_data: source.binary_data.clone(),
        ..Default::default()
    };
    copy.metadata.name = source.metadata.name.clone();
    copy.labels_mut()
        .insert(SOURCE_NAME.into(), source.name_any());
    copy.labels_mut().insert(
        SOURCE_NAMESPACE.into(),
        source.namespace().unwrap_or_default(),
    );
    copy
}

fn copies_of(source: &ObjectRef) -> Result<Vec<ConfigMap>, leasehold_sdk::api::Error> {
    let namespace = source.namespace.as_deref().unwrap_or_default();
    let selector = format!(
        "{SOURCE_NAME}={},{SOURCE_NAMESPACE}={namespace}",
        source.name
    );
    Api::<ConfigMap>::all().list(&ListParams::default().labels(&selector))
}

fn delete_copies(source: &ObjectRef) -> Result<(), leasehold_sdk::api::Error> {
    for copy in copies_of(source)? {
        Api::<ConfigMap>::namespaced(&copy.namespace().unwrap_or_default())
            .delete(&copy.name_any())?;
    }
    Ok(())
}

leasehold_sdk::export_controller!(Mirror);
