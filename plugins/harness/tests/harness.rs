//! What the harness does with a plugin that misbehaves, using the host's
//! misbehaving fixture: every failure is a value the test can assert on,
//! and the next reconcile (or review) starts fresh.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use leasehold_harness::{Error, FakeCluster, Harness, ReviewRequest, Verb, build_component};
use leasehold_runtime::{self as runtime, Limits};
use leasehold_sdk::{Action, ObjectRef};
use serde_json::json;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/misbehaving"
);
const SELECTOR: &str = "leasehold.dev/misbehave=harness";

/// A harness over the misbehaving fixture with one ConfigMap per mode.
fn misbehaving(modes: &[&str]) -> Harness {
    let cluster = FakeCluster::new().with_config(&json!({ "selector": SELECTOR }));
    for mode in modes {
        cluster.insert::<ConfigMap>(
            serde_json::from_value(json!({
                "metadata": {
                    "namespace": "default",
                    "name": mode,
                    "labels": { "leasehold.dev/misbehave": "harness" },
                },
                "data": { "mode": mode },
            }))
            .unwrap(),
        );
    }
    Harness::load(build_component(FIXTURE).unwrap())
        .unwrap()
        .with_cluster(cluster)
        .unwrap()
}

fn object(name: &str) -> ObjectRef {
    ObjectRef::namespaced("default", name)
}

#[test]
fn the_registration_follows_the_clusters_configuration() {
    let harness = misbehaving(&[]);

    assert_eq!(
        harness.registration().label_selector.as_deref(),
        Some(SELECTOR)
    );
}

#[test]
fn a_reconcile_that_works_writes_to_the_cluster() {
    let harness = misbehaving(&["ok"]);

    assert_eq!(harness.reconcile(&object("ok")).unwrap(), Action::Done);

    assert!(
        harness
            .cluster()
            .get::<ConfigMap>(&object("ok-handled"))
            .is_some()
    );
}

#[test]
fn a_trap_fails_that_reconcile_only_and_quotes_the_panic() {
    let harness = misbehaving(&["trap", "ok"]);

    let error = harness.reconcile(&object("trap")).unwrap_err();

    let Error::Runtime(runtime::Error::Trap { last_words, .. }) = &error else {
        panic!("expected a trap, got {error}");
    };
    assert!(last_words.contains("panicked at"), "{last_words}");
    assert!(error.to_string().contains("asked to trap"), "{error}");
    assert_eq!(harness.reconcile(&object("ok")).unwrap(), Action::Done);
}

#[test]
fn a_plugin_that_never_returns_is_stopped_by_its_timeout() {
    let harness = misbehaving(&["loop"]).with_limits(Limits {
        timeout: Duration::from_millis(100),
        ..Limits::default()
    });

    let error = harness.reconcile(&object("loop")).unwrap_err();

    assert!(
        matches!(error, Error::Runtime(runtime::Error::Trap { .. })),
        "{error}"
    );
}

#[test]
fn a_plugin_that_allocates_without_bound_is_stopped_by_its_memory_limit() {
    let harness = misbehaving(&["allocate"]).with_limits(Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    });

    let error = harness.reconcile(&object("allocate")).unwrap_err();

    assert!(
        matches!(error, Error::Runtime(runtime::Error::Trap { .. })),
        "{error}"
    );
    // It grew to the limit, not past it.
    let peak = harness.memory_peak();
    assert!(peak > 8 << 20 && peak <= 16 << 20, "{peak}");
}

#[test]
fn the_memory_peak_is_what_the_largest_reconcile_used() {
    let harness = misbehaving(&["ok"]);
    assert_eq!(harness.memory_peak(), 0, "nothing reconciled yet");

    harness.reconcile(&object("ok")).unwrap();

    let peak = harness.memory_peak();
    assert!(peak > 0 && peak < 4 << 20, "{peak}");
}

#[test]
fn an_object_that_is_not_json_is_refused_as_a_bad_request() {
    let harness = misbehaving(&["malformed"]);

    let error = harness.reconcile(&object("malformed")).unwrap_err();

    assert!(
        matches!(
            error,
            Error::Reconcile {
                retryable: false,
                ..
            }
        ),
        "{error}"
    );
    let create = &harness.cluster().calls()[0];
    assert_eq!(create.verb, Verb::Create);
    assert_eq!(create.error.as_ref().unwrap().code, 400);
}

#[test]
fn forbidden_calls_reach_the_plugin_as_403_values() {
    let harness = misbehaving(&["forbidden"]);
    harness
        .cluster()
        .forbid::<k8s_openapi::api::core::v1::Secret>();

    let error = harness.reconcile(&object("forbidden")).unwrap_err();

    let Error::Reconcile { message, .. } = &error else {
        panic!("expected the plugin's own error, got {error}");
    };
    assert!(message.contains("403"), "{message}");
    assert_eq!(
        harness.cluster().calls()[0].to_string(),
        "list v1/Secret default/* -> 403 Forbidden"
    );
}

#[test]
fn an_unselected_object_reaches_the_plugin_as_absent() {
    let harness = misbehaving(&[]);
    harness.cluster().insert::<ConfigMap>(
        serde_json::from_value(json!({
            "metadata": { "namespace": "default", "name": "unlabelled" },
            "data": { "mode": "trap" },
        }))
        .unwrap(),
    );

    assert_eq!(
        harness.reconcile(&object("unlabelled")).unwrap(),
        Action::Done,
        "the plugin never sees the object, so it cannot trap on it"
    );
}

#[test]
fn every_stored_primary_is_reconciled_in_order() {
    let harness = misbehaving(&["noop", "ok"]);

    let outcomes: Vec<String> = harness
        .reconcile_all()
        .into_iter()
        .map(|(reference, outcome)| format!("{reference}: {}", outcome.is_ok()))
        .collect();

    assert_eq!(outcomes, ["default/noop: true", "default/ok: true"]);
}

#[test]
fn bytes_that_are_not_a_component_are_refused_on_load() {
    let error = Harness::from_bytes(b"not wasm").unwrap_err();

    assert!(
        matches!(error, Error::Runtime(runtime::Error::Compile(_))),
        "{error}"
    );
}

#[test]
fn a_missing_component_file_is_named() {
    let error = Harness::load("/nonexistent/plugin.wasm").unwrap_err();

    assert!(matches!(error, Error::Read { .. }), "{error}");
    assert!(error.to_string().contains("/nonexistent/plugin.wasm"));
}

#[test]
fn a_plugin_without_admission_is_told_how_to_export_it() {
    let mirror = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/configmap-mirror");
    let harness = Harness::load(build_component(mirror).unwrap()).unwrap();
    let request = ReviewRequest::create(&ConfigMap::default());

    let error = harness.validate(&request).unwrap_err();

    assert!(!harness.admits());
    assert!(
        matches!(error, Error::Runtime(runtime::Error::NoAdmission)),
        "{error}"
    );
    assert!(
        error.to_string().contains("the SDK's admission support"),
        "{error}"
    );
}

// === admission ===

/// A request to create ConfigMap `default/<mode>` whose `data.admission`
/// is `mode`.
fn review_of(mode: &str) -> ReviewRequest {
    let object: ConfigMap = serde_json::from_value(json!({
        "metadata": { "namespace": "default", "name": mode },
        "data": { "admission": mode },
    }))
    .unwrap();
    ReviewRequest::create(&object)
}

#[test]
fn a_plugin_with_admission_says_so() {
    assert!(misbehaving(&[]).admits());
}

#[test]
fn an_allowing_review_changes_nothing() {
    let harness = misbehaving(&[]);

    let verdict = harness.validate(review_of("allow")).unwrap();
    let reviewed = harness.mutate(review_of("allow")).unwrap();

    assert!(verdict.allowed && verdict.warnings.is_empty());
    assert_eq!(reviewed.verdict, verdict);
    let unchanged: ConfigMap = reviewed.object().unwrap();
    assert_eq!(unchanged.metadata.labels, None);
}

#[test]
fn a_denial_reaches_the_test_with_its_message() {
    let verdict = misbehaving(&[]).validate(review_of("deny")).unwrap();

    assert!(!verdict.allowed);
    assert_eq!(verdict.message.as_deref(), Some("misbehaving denies deny"));
}

#[test]
fn a_warning_reaches_the_test_with_an_allowed_verdict() {
    let verdict = misbehaving(&[]).validate(review_of("warn")).unwrap();

    assert!(verdict.allowed);
    assert_eq!(verdict.warnings, ["misbehaving warns"]);
}

#[test]
fn a_mutation_is_applied_to_the_object_under_review() {
    let reviewed = misbehaving(&[]).mutate(review_of("label")).unwrap();

    let labelled: ConfigMap = reviewed.object().unwrap();
    assert_eq!(
        labelled.metadata.labels.unwrap()["leasehold.dev/mutated"],
        "true"
    );
    assert_eq!(
        labelled.data.unwrap()["admission"],
        "label",
        "the rest is kept"
    );
}

#[test]
fn a_plugin_that_cannot_decide_is_an_error_with_its_message() {
    let error = misbehaving(&[]).validate(review_of("error")).unwrap_err();

    let Error::Undecided { message } = &error else {
        panic!("expected the plugin's own error, got {error}");
    };
    assert_eq!(message, "misbehaving cannot decide about error");
}

#[test]
fn a_patch_that_is_not_json_is_refused_with_the_reason() {
    let harness = misbehaving(&[]);

    let error = harness.mutate(review_of("bad-patch")).unwrap_err();

    assert!(matches!(error, Error::Patch { .. }), "{error}");
    assert!(error.to_string().contains("not a JSON patch"), "{error}");
    assert!(harness.validate(review_of("bad-patch")).unwrap().allowed);
}

#[test]
fn a_review_that_traps_quotes_the_panic_and_the_next_review_starts_fresh() {
    let harness = misbehaving(&[]);

    let error = harness.mutate(review_of("trap")).unwrap_err();

    assert!(
        matches!(error, Error::Runtime(runtime::Error::Trap { .. })),
        "{error}"
    );
    assert!(
        error.to_string().contains("asked to trap in admission"),
        "{error}"
    );
    assert!(harness.validate(review_of("allow")).unwrap().allowed);
}

#[test]
fn a_review_that_never_returns_is_stopped_by_its_timeout() {
    let harness = misbehaving(&[]).with_limits(Limits {
        timeout: Duration::from_millis(100),
        ..Limits::default()
    });

    let error = harness.validate(review_of("loop")).unwrap_err();

    assert!(
        matches!(error, Error::Runtime(runtime::Error::Trap { .. })),
        "{error}"
    );
}

#[test]
fn a_request_the_plugin_cannot_decode_is_its_error() {
    let error = misbehaving(&[]).validate("{}").unwrap_err();

    let Error::Undecided { message } = &error else {
        panic!("expected the plugin's own error, got {error}");
    };
    assert!(message.contains("missing field"), "{message}");
}

#[test]
fn a_workspace_that_declares_a_plugin_profile_gets_its_plugins_built_in_it() {
    // This repository's root Cargo.toml declares [profile.plugin].
    let component = build_component(FIXTURE).unwrap();
    assert!(
        component
            .parent()
            .unwrap()
            .ends_with("wasm32-wasip2/plugin"),
        "{}",
        component.display()
    );
}
