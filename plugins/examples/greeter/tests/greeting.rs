//! The greeter's built component, run by the host's runtime against an
//! in-memory cluster (leasehold-harness).

use greeter::{Greeting, GreetingSpec, GreetingStatus};
use k8s_openapi::api::core::v1::ConfigMap;
use leasehold_harness::{Error, FakeCluster, Harness, Verb, build_component};
use leasehold_sdk::{Action, ObjectRef, owner};

fn greeting(namespace: &str, name: &str, whom: &str) -> Greeting {
    let spec = GreetingSpec {
        name: whom.into(),
        salutation: None,
    };
    let mut greeting = Greeting::new(name, spec);
    greeting.metadata.namespace = Some(namespace.into());
    greeting
}

/// A harness whose cluster holds the Greeting `default/hello` for "world".
fn greeter() -> (Harness, Greeting) {
    let component = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
    let cluster = FakeCluster::new();
    let hello = cluster.insert(greeting("default", "hello", "world"));
    let harness = Harness::load(component)
        .unwrap()
        .with_cluster(cluster)
        .unwrap();
    (harness, hello)
}

fn child(harness: &Harness) -> Option<ConfigMap> {
    harness
        .cluster()
        .get(&ObjectRef::namespaced("default", "hello-greeting"))
}

#[test]
fn a_greeting_gets_an_owned_configmap_and_a_ready_status() {
    let (harness, hello) = greeter();
    let reference = ObjectRef::from_object(&hello);

    assert_eq!(harness.reconcile(&reference).unwrap(), Action::Done);

    let child = child(&harness).unwrap();
    assert_eq!(child.data.as_ref().unwrap()["greeting"], "Hello, world!");
    assert!(owner::is_controlled_by(&child, &hello));
    let status = harness
        .cluster()
        .get::<Greeting>(&reference)
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        status,
        GreetingStatus {
            config_map: Some("hello-greeting".into()),
            observed_generation: Some(1),
            ready: true
        }
    );
    assert_eq!(harness.cluster().events()[0].reason, "Greeted");
    assert_eq!(harness.cluster().logs()[0].message, "greeted");
}

#[test]
fn a_greeting_with_a_salutation_is_written_with_it() {
    let (harness, hello) = greeter();
    let reference = ObjectRef::from_object(&hello);
    let mut formal = harness.cluster().get::<Greeting>(&reference).unwrap();
    formal.spec.salutation = Some("Good morning".into());
    harness.cluster().update(formal);

    harness.reconcile(&reference).unwrap();

    assert_eq!(
        child(&harness).unwrap().data.unwrap()["greeting"],
        "Good morning, world!"
    );
}

#[test]
fn reconciling_an_unchanged_greeting_only_reapplies_its_configmap() {
    let (harness, hello) = greeter();
    let reference = ObjectRef::from_object(&hello);
    harness.reconcile(&reference).unwrap();
    let before = harness.cluster().calls().len();

    harness.reconcile(&reference).unwrap();

    let verbs: Vec<Verb> = harness.cluster().calls()[before..]
        .iter()
        .map(|call| call.verb)
        .collect();
    assert_eq!(verbs, [Verb::Apply], "no status write, no event");
    assert_eq!(harness.cluster().events().len(), 1);
}

#[test]
fn a_changed_spec_rewrites_the_configmap_and_observes_the_new_generation() {
    let (harness, hello) = greeter();
    let reference = ObjectRef::from_object(&hello);
    harness.reconcile(&reference).unwrap();
    let mut changed = harness.cluster().get::<Greeting>(&reference).unwrap();
    changed.spec.name = "moon".into();
    harness.cluster().update(changed);

    harness.reconcile(&reference).unwrap();

    assert_eq!(
        child(&harness).unwrap().data.unwrap()["greeting"],
        "Hello, moon!"
    );
    let status = harness
        .cluster()
        .get::<Greeting>(&reference)
        .unwrap()
        .status;
    assert_eq!(status.unwrap().observed_generation, Some(2));
}

#[test]
fn deleting_a_greeting_garbage_collects_its_configmap() {
    let (harness, hello) = greeter();
    let reference = ObjectRef::from_object(&hello);
    harness.reconcile(&reference).unwrap();

    harness.cluster().delete::<Greeting>(&reference);

    assert!(child(&harness).is_none());
}

#[test]
fn a_forbidden_configmap_write_is_a_retryable_error_and_no_status() {
    let (harness, hello) = greeter();
    harness.cluster().forbid::<ConfigMap>();
    let reference = ObjectRef::from_object(&hello);

    let error = harness.reconcile(&reference).unwrap_err();

    let Error::Reconcile { message, retryable } = &error else {
        panic!("expected the plugin's own error, got {error}");
    };
    assert!(*retryable && message.contains("403"), "{message}");
    assert_eq!(
        harness
            .cluster()
            .get::<Greeting>(&reference)
            .unwrap()
            .status,
        None
    );
}
