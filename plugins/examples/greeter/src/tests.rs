//! The CRD drift check; the greeter's behaviour is tested on its built
//! component in `tests/greeting.rs`.

use kube_core::CustomResourceExt;

use super::*;

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
