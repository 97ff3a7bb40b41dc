//! Finalizers on primaries, so a plugin's `cleanup` runs before deletion.
//!
//! Writes are JSON patches guarded by a `test` of the current finalizer
//! list, so a concurrent change makes the patch fail and the reconcile
//! retry, instead of overwriting someone else's finalizer.
//!
//! Why not kube-runtime's `finalizer()`: its patches are these, but it
//! removes the finalizer whenever cleanup returns `Ok`, and the plugin
//! contract lets a cleanup return `requeue-after` to say "not finished,
//! call me again", which must keep the finalizer. Mapping that to an error
//! would count an unfinished cleanup as a failure, with backoff, on the
//! Plugin's status.

use kube::api::{DynamicObject, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// Where a primary stands with respect to the plugin's finalizer.
#[derive(Debug, PartialEq, Eq)]
pub enum Standing {
    /// Live, without the finalizer: add it before reconciling.
    Missing,
    /// Live, with the finalizer: reconcile.
    Present,
    /// Being deleted and still carrying the finalizer: call cleanup.
    Cleanup,
    /// Being deleted, finalizer already removed: nothing to do.
    Released,
}

pub fn standing(object: &DynamicObject, finalizer: &str) -> Standing {
    let present = object.finalizers().iter().any(|f| f == finalizer);
    match (object.metadata.deletion_timestamp.is_some(), present) {
        (false, false) => Standing::Missing,
        (false, true) => Standing::Present,
        (true, true) => Standing::Cleanup,
        (true, false) => Standing::Released,
    }
}

pub async fn add(
    api: &Api<DynamicObject>,
    object: &DynamicObject,
    finalizer: &str,
) -> kube::Result<()> {
    let patch = if object.finalizers().is_empty() {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]},
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": object.finalizers()},
            {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer},
        ])
    };
    patch_finalizers(api, object, patch).await
}

pub async fn remove(
    api: &Api<DynamicObject>,
    object: &DynamicObject,
    finalizer: &str,
) -> kube::Result<()> {
    let Some(index) = object.finalizers().iter().position(|f| f == finalizer) else {
        return Ok(());
    };
    let patch = json!([
        {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": finalizer},
        {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
    ]);
    patch_finalizers(api, object, patch).await
}

async fn patch_finalizers(
    api: &Api<DynamicObject>,
    object: &DynamicObject,
    patch: serde_json::Value,
) -> kube::Result<()> {
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
    api.patch(
        &object.name_any(),
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::*;

    fn object(finalizers: &[&str], deleting: bool) -> DynamicObject {
        DynamicObject {
            types: None,
            metadata: ObjectMeta {
                finalizers: Some(finalizers.iter().map(|f| (*f).to_owned()).collect()),
                deletion_timestamp: deleting.then_some({
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                    )
                }),
                ..ObjectMeta::default()
            },
            data: json!({}),
        }
    }

    #[test]
    fn finalizer_state_follows_deletion_and_presence() {
        assert_eq!(standing(&object(&[], false), "f"), Standing::Missing);
        assert_eq!(
            standing(&object(&["other", "f"], false), "f"),
            Standing::Present
        );
        assert_eq!(standing(&object(&["f"], true), "f"), Standing::Cleanup);
        assert_eq!(standing(&object(&["other"], true), "f"), Standing::Released);
    }
}
