//! The greeter against the SDK's in-memory cluster.

use kube_core::CustomResourceExt;
use leasehold_sdk::testing::FakeCluster;

use super::*;

fn greeting(namespace: &str, name: &str, whom: &str) -> Greeting {
    let mut greeting = Greeting::new(name, GreetingSpec { name: whom.into() });
    greeting.metadata.namespace = Some(namespace.into());
    greeting
}

#[test]
fn a_greeting_gets_an_owned_configmap_and_a_ready_status() {
    let cluster = FakeCluster::new();
    let greeting = cluster.insert(greeting("default", "hello", "world"));
    let reference = ObjectRef::from_object(&greeting);

    assert_eq!(
        cluster.reconcile(&Greeter, &reference).unwrap(),
        Action::Done
    );

    let child: ConfigMap = cluster
        .get(&ObjectRef::namespaced("default", "hello-greeting"))
        .unwrap();
    assert_eq!(child.data.as_ref().unwrap()["greeting"], "Hello, world!");
    assert!(owner::is_controlled_by(&child, &greeting));
    let status = cluster.get::<Greeting>(&reference).unwrap().status.unwrap();
    assert_eq!(
        status,
        GreetingStatus {
            config_map: Some("hello-greeting".into()),
            observed_generation: Some(1),
            ready: true
        }
    );
    assert_eq!(cluster.events()[0].reason, "Greeted");
}

#[test]
fn reconciling_an_unchanged_greeting_writes_no_status_and_no_event() {
    let cluster = FakeCluster::new();
    let reference = ObjectRef::from_object(&cluster.insert(greeting("default", "hello", "world")));
    cluster.reconcile(&Greeter, &reference).unwrap();
    let before = cluster
        .get::<Greeting>(&reference)
        .unwrap()
        .metadata
        .resource_version;

    cluster.reconcile(&Greeter, &reference).unwrap();

    assert_eq!(
        cluster
            .get::<Greeting>(&reference)
            .unwrap()
            .metadata
            .resource_version,
        before
    );
    assert_eq!(cluster.events().len(), 1);
}

#[test]
fn a_changed_spec_rewrites_the_configmap_and_observes_the_new_generation() {
    let cluster = FakeCluster::new();
    let reference = ObjectRef::from_object(&cluster.insert(greeting("default", "hello", "world")));
    cluster.reconcile(&Greeter, &reference).unwrap();
    let mut changed = cluster.get::<Greeting>(&reference).unwrap();
    changed.spec.name = "moon".into();
    let installed = cluster.install();
    Api::<Greeting>::namespaced("default")
        .replace("hello", &changed)
        .unwrap();
    drop(installed);

    cluster.reconcile(&Greeter, &reference).unwrap();

    let child: ConfigMap = cluster
        .get(&ObjectRef::namespaced("default", "hello-greeting"))
        .unwrap();
    assert_eq!(child.data.unwrap()["greeting"], "Hello, moon!");
    assert_eq!(
        cluster
            .get::<Greeting>(&reference)
            .unwrap()
            .status
            .unwrap()
            .observed_generation,
        Some(2)
    );
}

#[test]
fn deleting_a_greeting_garbage_collects_its_configmap() {
    let cluster = FakeCluster::new();
    let reference = ObjectRef::from_object(&cluster.insert(greeting("default", "hello", "world")));
    cluster.reconcile(&Greeter, &reference).unwrap();

    cluster.delete::<Greeting>(&reference);

    assert!(
        cluster
            .get::<ConfigMap>(&ObjectRef::namespaced("default", "hello-greeting"))
            .is_none()
    );
    assert_eq!(
        cluster.reconcile(&Greeter, &reference).unwrap(),
        Action::Done
    );
}

#[test]
fn a_forbidden_configmap_write_is_a_retryable_error() {
    let cluster = FakeCluster::new();
    cluster.forbid::<ConfigMap>();
    let reference = ObjectRef::from_object(&cluster.insert(greeting("default", "hello", "world")));

    let error = cluster.reconcile(&Greeter, &reference).unwrap_err();

    assert!(
        error.retryable && error.message.contains("403"),
        "{error:?}"
    );
    assert_eq!(cluster.get::<Greeting>(&reference).unwrap().status, None);
}

#[test]
fn the_committed_crd_matches_the_rust_types() {
    // Regenerate with: UPDATE_CRD=1 cargo test -p greeter
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crd.json");
    let generated = serde_json::to_string_pretty(&Greeting::crd()).unwrap() + "\n";
    if std::env::var_os("UPDATE_CRD").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "crd.json is stale: run UPDATE_CRD=1 cargo test -p greeter"
    );
}
