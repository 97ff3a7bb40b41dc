//! The mirror's built component, run by the host's runtime against an
//! in-memory cluster (leasehold-harness).

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use leasehold_harness::{Error, FakeCluster, Harness, Verb, build_component};
use leasehold_sdk::{Action, ObjectRef, finalizer};
use serde_json::json;

const SOURCE_NAME: &str = "mirror.leasehold.dev/source-name";
const SOURCE_NAMESPACE: &str = "mirror.leasehold.dev/source-namespace";
const FINALIZER: &str = "mirror.leasehold.dev/copies";

fn namespace(name: &str, labels: serde_json::Value) -> Namespace {
    serde_json::from_value(json!({ "metadata": { "name": name, "labels": labels } })).unwrap()
}

fn config_map(
    namespace: &str,
    name: &str,
    labels: serde_json::Value,
    data: serde_json::Value,
) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": { "namespace": namespace, "name": name, "labels": labels },
        "data": data,
    }))
    .unwrap()
}

fn harness(cluster: FakeCluster) -> Harness {
    let component = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
    Harness::load(component)
        .unwrap()
        .with_cluster(cluster)
        .unwrap()
}

/// The source `default/settings`, two target namespaces and one that is
/// not a target.
fn mirror() -> (Harness, ObjectRef) {
    let cluster = FakeCluster::new().with_config(&json!({ "namespaceSelector": "mirror=yes" }));
    cluster.insert(namespace("default", json!({ "mirror": "yes" })));
    cluster.insert(namespace("team-a", json!({ "mirror": "yes" })));
    cluster.insert(namespace("team-b", json!({ "mirror": "yes" })));
    cluster.insert(namespace("private", json!({})));
    let source = cluster.insert(config_map(
        "default",
        "settings",
        json!({ "leasehold.dev/mirror": "true" }),
        json!({ "mode": "fast" }),
    ));
    (harness(cluster), ObjectRef::from_object(&source))
}

fn copy(harness: &Harness, namespace: &str) -> Option<ConfigMap> {
    harness
        .cluster()
        .get(&ObjectRef::namespaced(namespace, "settings"))
}

#[test]
fn the_component_registers_labelled_configmaps_with_a_finalizer() {
    let (harness, _) = mirror();
    let registration = harness.registration();

    assert_eq!(registration.name, "configmap-mirror");
    assert_eq!(registration.primary.kind, "ConfigMap");
    assert_eq!(
        registration.label_selector.as_deref(),
        Some("leasehold.dev/mirror=true")
    );
    assert_eq!(registration.finalizer.as_deref(), Some(FINALIZER));
    assert!(harness.digest().starts_with("sha256:"));
}

#[test]
fn copies_go_to_every_selected_namespace_but_the_sources_own() {
    let (harness, source) = mirror();

    assert_eq!(harness.reconcile(&source).unwrap(), Action::Done);

    for namespace in ["team-a", "team-b"] {
        let copy = copy(&harness, namespace).unwrap();
        assert_eq!(copy.data.as_ref().unwrap()["mode"], "fast");
        let labels = copy.metadata.labels.unwrap();
        assert_eq!(labels[SOURCE_NAME], "settings");
        assert_eq!(labels[SOURCE_NAMESPACE], "default");
        assert!(!labels.contains_key("leasehold.dev/mirror"));
    }
    assert!(copy(&harness, "private").is_none());
    assert_eq!(harness.cluster().events()[0].reason, "Mirrored");
}

#[test]
fn the_first_reconcile_makes_exactly_these_calls() {
    let (harness, source) = mirror();

    harness.reconcile(&source).unwrap();

    let calls: Vec<String> = harness
        .cluster()
        .calls()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        calls,
        [
            "list v1/Namespace * -> ok",
            "list v1/ConfigMap * -> ok",
            "create v1/ConfigMap team-a/settings -> ok",
            "create v1/ConfigMap team-b/settings -> ok",
            "emit-event v1/ConfigMap default/settings -> ok",
        ]
    );
}

#[test]
fn an_unchanged_source_is_left_alone_on_the_next_reconcile() {
    let (harness, source) = mirror();
    harness.reconcile(&source).unwrap();
    let before = harness.cluster().calls().len();

    harness.reconcile(&source).unwrap();

    let writes: Vec<_> = harness.cluster().calls()[before..]
        .iter()
        .filter(|call| !matches!(call.verb, Verb::Get | Verb::List))
        .cloned()
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
}

#[test]
fn a_changed_source_updates_its_copies_and_drops_removed_keys() {
    let (harness, source) = mirror();
    harness.reconcile(&source).unwrap();
    let mut changed: ConfigMap = harness.cluster().get(&source).unwrap();
    changed.data = Some([("size".to_string(), "large".to_string())].into());
    harness.cluster().update(changed);

    harness.reconcile(&source).unwrap();

    let data = copy(&harness, "team-a").unwrap().data.unwrap();
    assert_eq!(data, [("size".to_string(), "large".to_string())].into());
}

#[test]
fn a_namespace_leaving_the_selector_loses_its_copy() {
    let (harness, source) = mirror();
    harness.reconcile(&source).unwrap();
    let mut team_b: Namespace = harness
        .cluster()
        .get(&ObjectRef::cluster("team-b"))
        .unwrap();
    team_b.metadata.labels = None;
    harness.cluster().update(team_b);

    harness.reconcile(&source).unwrap();

    assert!(copy(&harness, "team-a").is_some());
    assert!(copy(&harness, "team-b").is_none());
}

#[test]
fn deleting_the_source_deletes_its_copies_before_it_goes() {
    let (harness, source) = mirror();
    harness.reconcile(&source).unwrap();
    let held: ConfigMap = harness.cluster().get(&source).unwrap();
    assert!(finalizer::has(&held, FINALIZER));

    harness.cluster().delete::<ConfigMap>(&source);
    assert!(
        harness.cluster().get::<ConfigMap>(&source).is_some(),
        "the finalizer holds the source"
    );
    harness.reconcile(&source).unwrap();

    assert!(harness.cluster().get::<ConfigMap>(&source).is_none());
    assert!(copy(&harness, "team-a").is_none());
    assert!(copy(&harness, "team-b").is_none());
}

#[test]
fn unlabelling_the_source_deletes_its_copies_and_releases_it() {
    let (harness, source) = mirror();
    harness.reconcile(&source).unwrap();
    let mut unlabelled: ConfigMap = harness.cluster().get(&source).unwrap();
    unlabelled.metadata.labels = None;
    harness.cluster().update(unlabelled);

    harness.reconcile(&source).unwrap();

    assert!(copy(&harness, "team-a").is_none());
    let released: ConfigMap = harness.cluster().get(&source).unwrap();
    assert!(!finalizer::has(&released, FINALIZER));
}

#[test]
fn a_foreign_configmap_of_the_same_name_is_left_alone() {
    let (harness, source) = mirror();
    harness.cluster().insert(config_map(
        "team-a",
        "settings",
        json!({}),
        json!({ "owner": "team-a" }),
    ));

    let error = harness.reconcile(&source).unwrap_err();

    assert!(
        matches!(
            error,
            Error::Reconcile {
                retryable: true,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(
        copy(&harness, "team-a").unwrap().data.unwrap()["owner"],
        "team-a"
    );
    assert!(
        copy(&harness, "team-b").is_some(),
        "one refusal does not stop the other copies"
    );
    assert!(
        harness
            .cluster()
            .events()
            .iter()
            .any(|event| event.reason == "CopyFailed")
    );
}

#[test]
fn missing_rbac_on_namespaces_is_a_retryable_error_not_a_trap() {
    let (harness, source) = mirror();
    harness.cluster().forbid::<Namespace>();

    let error = harness.reconcile(&source).unwrap_err();

    let Error::Reconcile { message, retryable } = &error else {
        panic!("expected the plugin's own error, got {error}");
    };
    assert!(*retryable);
    assert!(message.contains("403"), "{message}");
    assert_eq!(
        harness.cluster().calls()[0].error.as_ref().unwrap().reason,
        "Forbidden"
    );
}

#[test]
fn missing_configuration_is_a_permanent_error() {
    let cluster = FakeCluster::new();
    let source = cluster.insert(config_map(
        "default",
        "settings",
        json!({ "leasehold.dev/mirror": "true" }),
        json!({}),
    ));
    let harness = harness(cluster);

    let error = harness
        .reconcile(&ObjectRef::from_object(&source))
        .unwrap_err();

    let Error::Reconcile { message, retryable } = &error else {
        panic!("expected the plugin's own error, got {error}");
    };
    assert!(!retryable);
    assert!(message.contains("namespaceSelector"), "{message}");
}
