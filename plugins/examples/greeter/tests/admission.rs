//! The greeter's admission, on its built component (leasehold-harness): what
//! the API server hears before it stores a Greeting.

use greeter::{Greeting, GreetingSpec};
use leasehold_harness::{Harness, ReviewRequest, build_component};

fn harness() -> Harness {
    Harness::load(build_component(env!("CARGO_MANIFEST_DIR")).unwrap()).unwrap()
}

fn greeting(whom: &str, salutation: Option<&str>) -> Greeting {
    let spec = GreetingSpec {
        name: whom.into(),
        salutation: salutation.map(str::to_owned),
    };
    let mut greeting = Greeting::new("hello", spec);
    greeting.metadata.namespace = Some("default".into());
    greeting
}

#[test]
fn the_greeter_exports_admission() {
    assert!(harness().admits());
}

#[test]
fn a_greeting_for_nobody_is_denied_with_the_question_it_leaves_open() {
    let harness = harness();
    for whom in ["", "  \t"] {
        let verdict = harness
            .validate(ReviewRequest::create(&greeting(whom, None)))
            .unwrap();

        assert!(!verdict.allowed, "{whom:?}");
        assert_eq!(
            verdict.message.as_deref(),
            Some("spec.name must not be empty: whom should the greeter greet?")
        );
    }
}

#[test]
fn an_update_that_empties_the_name_is_denied_too() {
    let old = greeting("world", None);
    let new = greeting("", None);

    let verdict = harness()
        .validate(ReviewRequest::update(&old, &new))
        .unwrap();

    assert!(!verdict.allowed);
}

#[test]
fn a_greeting_for_someone_is_allowed_and_so_is_deleting_one() {
    let harness = harness();
    let world = greeting("world", None);

    assert!(
        harness
            .validate(ReviewRequest::create(&world))
            .unwrap()
            .allowed
    );
    assert!(
        harness
            .validate(ReviewRequest::delete(&world))
            .unwrap()
            .allowed
    );
}

#[test]
fn a_greeting_without_a_salutation_is_stored_with_hello() {
    let reviewed = harness()
        .mutate(ReviewRequest::create(&greeting("world", None)))
        .unwrap();

    assert!(reviewed.verdict.allowed);
    let stored: Greeting = reviewed.object().unwrap();
    assert_eq!(stored.spec.salutation.as_deref(), Some("Hello"));
    assert_eq!(stored.spec.greeting(), "Hello, world!");
}

#[test]
fn a_given_salutation_is_kept_without_a_patch() {
    let reviewed = harness()
        .mutate(ReviewRequest::create(&greeting(
            "world",
            Some("Good morning"),
        )))
        .unwrap();

    assert_eq!(reviewed.verdict.patch, None);
    let stored: Greeting = reviewed.object().unwrap();
    assert_eq!(stored.spec.salutation.as_deref(), Some("Good morning"));
}
