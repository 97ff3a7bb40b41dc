//! The glue between the WIT exports and a [`Reconciler`]; used by
//! [`export_controller!`](crate::export_controller) and by
//! [`crate::testing`], so tests run the same path as a real plugin.

use std::time::Duration;

use crate::__private::bindings::exports::leasehold::controller::reconciler as wit;
use crate::api;
use crate::object::ObjectRef;
use crate::reconciler::{self, Action, Kind, Mapping, Reconciler, Registration};

/// The registration of `reconciler` as the contract spells it.
pub fn register<R: Reconciler>(reconciler: &R) -> wit::Registration {
    to_wit(reconciler.registration())
}

fn to_wit<K: crate::Object>(registration: Registration<K>) -> wit::Registration {
    wit::Registration {
        primary: kind(registration.primary()),
        name: registration.name,
        label_selector: registration.label_selector,
        namespace: registration.namespace,
        owns: registration.owns.into_iter().map(kind).collect(),
        watches: registration
            .watches
            .into_iter()
            .map(|watch| wit::Watch {
                kind: kind(watch.kind),
                label_selector: watch.label_selector,
                mapping: match watch.mapping {
                    Mapping::Labels { name, namespace } => {
                        wit::Mapping::Labels(wit::LabelMapping { name, namespace })
                    }
                    Mapping::AllPrimaries => wit::Mapping::AllPrimaries,
                },
            })
            .collect(),
        resync_period_ms: registration.resync_period.map(millis),
        finalizer: registration.finalizer,
    }
}

fn kind(kind: Kind) -> wit::GroupVersionKind {
    wit::GroupVersionKind {
        group: kind.group,
        version: kind.version,
        kind: kind.kind,
        plural: Some(kind.plural),
    }
}

/// Milliseconds, saturating: a delay past u64::MAX ms (585 million years)
/// means "never" either way.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// One `reconcile` call: decode the primary, then reconcile it (or report
/// it absent).
pub fn reconcile<R: Reconciler>(
    reconciler: &R,
    request: wit::Request,
) -> Result<wit::Action, wit::ReconcileError> {
    let reference = ObjectRef {
        namespace: request.reference.namespace,
        name: request.reference.name,
    };
    let result = match request.object {
        None => reconciler.absent(&reference),
        Some(json) => primary::<R>(&json).and_then(|object| reconciler.reconcile(object)),
    };
    finish(result)
}

/// One `cleanup` call; an object already gone has nothing left to release.
pub fn cleanup<R: Reconciler>(
    reconciler: &R,
    request: wit::Request,
) -> Result<wit::Action, wit::ReconcileError> {
    let result = match request.object {
        None => Ok(Action::Done),
        Some(json) => primary::<R>(&json).and_then(|object| reconciler.cleanup(object)),
    };
    finish(result)
}

fn primary<R: Reconciler>(json: &str) -> Result<R::Object, reconciler::Error> {
    // A primary the host cannot describe in our type will not decode on a
    // retry either.
    api::decode::<R::Object>(json).map_err(|error| reconciler::Error {
        retryable: false,
        ..error.into()
    })
}

fn finish(result: Result<Action, reconciler::Error>) -> Result<wit::Action, wit::ReconcileError> {
    match result {
        Ok(Action::Done) => Ok(wit::Action::Done),
        Ok(Action::RequeueAfter(delay)) => Ok(wit::Action::RequeueAfter(millis(delay))),
        Err(error) => Err(wit::ReconcileError {
            message: error.message,
            retryable: error.retryable,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};

    use super::*;

    #[test]
    fn a_registration_crosses_with_plural_and_milliseconds() {
        let registration = Registration::<ConfigMap>::new("mirror")
            .labels("a=b")
            .watches::<Namespace>(Mapping::AllPrimaries)
            .watches_matching::<ConfigMap>("copy", Mapping::labels("n").in_namespace_label("ns"))
            .resync_every(Duration::from_secs(90))
            .finalizer("x.dev/f");
        let wit = to_wit(registration);
        assert_eq!(wit.primary.plural.as_deref(), Some("configmaps"));
        assert_eq!(wit.primary.group, "");
        assert_eq!(wit.resync_period_ms, Some(90_000));
        assert!(matches!(wit.watches[0].mapping, wit::Mapping::AllPrimaries));
        assert!(matches!(
            &wit.watches[1].mapping,
            wit::Mapping::Labels(wit::LabelMapping { name, namespace: Some(ns) }) if name == "n" && ns == "ns"
        ));
    }

    #[test]
    fn an_endless_delay_saturates() {
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
