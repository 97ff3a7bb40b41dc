//! The mirror against the SDK's in-memory cluster.

use leasehold_sdk::testing::FakeCluster;
use serde_json::json;

use super::*;

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

/// A cluster with the source `default/settings`, two target namespaces and
/// one that is not a target.
fn cluster() -> (FakeCluster, ObjectRef) {
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
    (cluster, ObjectRef::from_object(&source))
}

fn copy(cluster: &FakeCluster, namespace: &str) -> Option<ConfigMap> {
    cluster.get(&ObjectRef::namespaced(namespace, "settings"))
}

#[test]
fn copies_go_to_every_selected_namespace_but_the_sources_own() {
    let (cluster, source) = cluster();
    assert_eq!(cluster.reconcile(&Mirror, &source).unwrap(), Action::Done);

    for namespace in ["team-a", "team-b"] {
        let copy = copy(&cluster, namespace).unwrap();
        assert_eq!(copy.data.as_ref().unwrap()["mode"], "fast");
        assert_eq!(copy.labels()[SOURCE_NAME], "settings");
        assert_eq!(copy.labels()[SOURCE_NAMESPACE], "default");
        assert!(!copy.labels().contains_key("leasehold.dev/mirror"));
    }
    assert!(copy(&cluster, "private").is_none());
    assert_eq!(cluster.events()[0].reason, "Mirrored");
}

#[test]
fn a_changed_source_updates_its_copies_and_drops_removed_keys() {
    let (cluster, source) = cluster();
    cluster.reconcile(&Mirror, &source).unwrap();
    let mut changed: ConfigMap = cluster.get(&source).unwrap();
    changed.data = Some([("size".to_string(), "large".to_string())].into());
    let _installed = cluster.install();
    Api::<ConfigMap>::namespaced("default")
        .replace("settings", &changed)
        .unwrap();
    drop(_installed);

    cluster.reconcile(&Mirror, &source).unwrap();

    let data = copy(&cluster, "team-a").unwrap().data.unwrap();
    assert_eq!(data, [("size".to_string(), "large".to_string())].into());
}

#[test]
fn a_namespace_leaving_the_selector_loses_its_copy() {
    let (cluster, source) = cluster();
    cluster.reconcile(&Mirror, &source).unwrap();
    let mut team_b: Namespace = cluster.get(&ObjectRef::cluster("team-b")).unwrap();
    team_b.labels_mut().clear();
    let _installed = cluster.install();
    Api::<Namespace>::all().replace("team-b", &team_b).unwrap();
    drop(_installed);

    cluster.reconcile(&Mirror, &source).unwrap();

    assert!(copy(&cluster, "team-a").is_some());
    assert!(copy(&cluster, "team-b").is_none());
}

#[test]
fn deleting_the_source_deletes_its_copies_before_it_goes() {
    let (cluster, source) = cluster();
    cluster.reconcile(&Mirror, &source).unwrap();
    let guarded: ConfigMap = cluster.get(&source).unwrap();
    assert!(finalizer::has(&guarded, FINALIZER));

    cluster.delete::<ConfigMap>(&source);
    assert!(
        cluster.get::<ConfigMap>(&source).is_some(),
        "the finalizer holds the source"
    );
    cluster.reconcile(&Mirror, &source).unwrap();

    assert!(cluster.get::<ConfigMap>(&source).is_none());
    assert!(copy(&cluster, "team-a").is_none());
    assert!(copy(&cluster, "team-b").is_none());
}

#[test]
fn unlabelling_the_source_deletes_its_copies_and_releases_it() {
    let (cluster, source) = cluster();
    cluster.reconcile(&Mirror, &source).unwrap();
    let mut unlabelled: ConfigMap = cluster.get(&source).unwrap();
    unlabelled.labels_mut().clear();
    let _installed = cluster.install();
    Api::<ConfigMap>::namespaced("default")
        .replace("settings", &unlabelled)
        .unwrap();
    drop(_installed);

    cluster.reconcile(&Mirror, &source).unwrap();

    assert!(copy(&cluster, "team-a").is_none());
    assert!(!finalizer::has(
        &cluster.get::<ConfigMap>(&source).unwrap(),
        FINALIZER
    ));
}

#[test]
fn a_foreign_configmap_of_the_same_name_is_left_alone() {
    let (cluster, source) = cluster();
    cluster.insert(config_map(
        "team-a",
        "settings",
        json!({}),
        json!({ "owner": "team-a" }),
    ));

    let error = cluster.reconcile(&Mirror, &source).unwrap_err();

    assert!(error.retryable);
    assert_eq!(
        copy(&cluster, "team-a").unwrap().data.unwrap()["owner"],
        "team-a"
    );
    assert!(
        copy(&cluster, "team-b").is_some(),
        "one refusal does not stop the other copies"
    );
    assert!(
        cluster
            .events()
            .iter()
            .any(|event| event.reason == "CopyFailed")
    );
}

#[test]
fn missing_rbac_on_namespaces_is_a_retryable_error_not_a_panic() {
    let (cluster, source) = cluster();
    cluster.forbid::<Namespace>();

    let error = cluster.reconcile(&Mirror, &source).unwrap_err();

    assert!(error.retryable);
    assert!(error.message.contains("403"), "{}", error.message);
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

    let error = cluster
        .reconcile(&Mirror, &ObjectRef::from_object(&source))
        .unwrap_err();

    assert!(!error.retryable);
    assert!(
        error.message.contains("namespaceSelector"),
        "{}",
        error.message
    );
}
