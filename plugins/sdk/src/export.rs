//! The glue between the WIT exports and a [`Reconciler`] (and an
//! [`Admission`]); used by [`export_controller!`](crate::export_controller)
//! and by [`crate::testing`], so tests run the same path as a real plugin.

use std::time::Duration;

use crate::__private::admission_bindings::exports::leasehold::controller::admission as wit_admission;
use crate::__private::bindings::exports::leasehold::controller::reconciler as wit;
use crate::admission::{self, Admission, Verdict};
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

// === admission ===

/// Which question the API server asks about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Review {
    /// `validate`: allow or deny, change nothing.
    Validate,
    /// `mutate`: may also answer a patch.
    Mutate,
}

/// One `validate` call, as the contract spells its answer.
pub fn validate<A: Admission>(
    admission: &A,
    request: String,
) -> Result<wit_admission::Verdict, String> {
    answer(decide(admission, request, Review::Validate))
}

/// One `mutate` call, as the contract spells its answer.
pub fn mutate<A: Admission>(
    admission: &A,
    request: String,
) -> Result<wit_admission::Verdict, String> {
    answer(decide(admission, request, Review::Mutate))
}

/// Decodes the request and asks the plugin; a request that does not decode
/// and a validate that answers a patch are errors the plugin author must
/// hear about, not verdicts.
pub(crate) fn decide<A: Admission>(
    admission: &A,
    request: String,
    review: Review,
) -> admission::Result<Verdict> {
    let request = admission::Request::<A::Object>::from_owned(request)?;
    match review {
        Review::Mutate => admission.mutate(&request),
        Review::Validate => {
            let verdict = admission.validate(&request)?;
            if verdict.patch.is_some() {
                return Err(admission::Error::new(
                    "validate answered a patch, but only mutate may change the object: \
                     return the patch from mutate",
                ));
            }
            Ok(verdict)
        }
    }
}

fn answer(decided: admission::Result<Verdict>) -> Result<wit_admission::Verdict, String> {
    let verdict = decided.map_err(|error| error.message)?;
    let patch = verdict
        .patch
        .map(|patch| serde_json::to_string(&patch))
        .transpose()
        .map_err(|error| format!("cannot encode the verdict's patch as json: {error}"))?;
    Ok(wit_admission::Verdict {
        allowed: verdict.allowed,
        message: verdict.message,
        code: verdict.code,
        warnings: verdict.warnings,
        patch,
    })
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

    /// Denies ConfigMaps without data; mutate labels them, and validate
    /// (wrongly) answers a patch for ConfigMaps named `patch-in-validate`.
    #[derive(Default)]
    struct Check;

    impl Admission for Check {
        type Object = ConfigMap;

        fn validate(&self, request: &admission::Request<ConfigMap>) -> admission::Result<Verdict> {
            let object = request.object().unwrap();
            if request.name() == "patch-in-validate" {
                return Ok(Verdict::allow().with_patch(json_patch::diff(
                    &serde_json::json!({}),
                    &serde_json::json!({ "a": 1 }),
                )));
            }
            Ok(match &object.data {
                Some(_) => Verdict::allow(),
                None => Verdict::deny("a ConfigMap needs data")
                    .with_code(422)
                    .warn("see the docs"),
            })
        }

        fn mutate(&self, request: &admission::Request<ConfigMap>) -> admission::Result<Verdict> {
            let mut object = request.object().unwrap().clone();
            object
                .metadata
                .labels
                .get_or_insert_default()
                .insert("checked".into(), "yes".into());
            Verdict::patched(request, &object)
        }
    }

    fn request(name: &str, object: serde_json::Value) -> String {
        serde_json::json!({
            "uid": "1", "operation": "CREATE", "userInfo": {}, "name": name, "namespace": "a",
            "kind": { "group": "", "version": "v1", "kind": "ConfigMap" },
            "resource": { "group": "", "version": "v1", "resource": "configmaps" },
            "object": object,
        })
        .to_string()
    }

    #[test]
    fn a_denial_crosses_with_its_message_code_and_warnings() {
        let verdict = validate(&Check, request("x", serde_json::json!({}))).unwrap();
        assert!(!verdict.allowed);
        assert_eq!(verdict.message.as_deref(), Some("a ConfigMap needs data"));
        assert_eq!(verdict.code, Some(422));
        assert_eq!(verdict.warnings, ["see the docs"]);
        assert_eq!(verdict.patch, None);
    }

    #[test]
    fn a_mutation_crosses_as_json_patch_text() {
        let verdict = mutate(&Check, request("x", serde_json::json!({}))).unwrap();
        assert!(verdict.allowed);
        assert_eq!(
            verdict.patch.as_deref(),
            Some(r#"[{"op":"add","path":"/metadata","value":{"labels":{"checked":"yes"}}}]"#)
        );
    }

    #[test]
    fn a_request_that_does_not_decode_is_the_exports_error() {
        let error = validate(&Check, "{".into()).unwrap_err();
        assert!(
            error.starts_with("the admission request is not JSON: "),
            "{error}"
        );
    }

    #[test]
    fn a_patch_from_validate_is_an_error_that_says_where_it_belongs() {
        let error =
            validate(&Check, request("patch-in-validate", serde_json::json!({}))).unwrap_err();
        assert!(
            error.contains("only mutate may change the object"),
            "{error}"
        );
    }
}
