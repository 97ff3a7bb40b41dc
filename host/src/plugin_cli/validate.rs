//! `leasehold plugin validate`: load a component exactly as a replica
//! would, then ask it what it reconciles.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Error, Result, read};
use crate::controllers::bridge::KubeBridge;
use crate::controllers::throttle::Unaccounted;
use crate::election::LeaderGuard;
use crate::election::fence::Fence;
use crate::plugins::{Budget, ServiceAccount};
use crate::runtime::{
    Compiler, Contract, GroupVersionKind, HostContext, Limits, Mapping, Registration, Runtime,
};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// The component (`.wasm`) to check.
    file: PathBuf,
}

/// A component the host accepts.
#[derive(Debug)]
pub(super) struct Validated {
    pub bytes: Vec<u8>,
    /// `sha256:<hex>`.
    pub digest: String,
    /// The contract version it was built for.
    pub contract: Contract,
    /// Whether it exports `admission` as well as the reconciler.
    pub admits: bool,
    pub registration: Registration,
}

pub(super) async fn run(options: Options) -> Result<Validated> {
    let validated = validate_file(&options.file).await?;
    print!("{}", describe(&options.file, &validated));
    Ok(validated)
}

/// Reads and validates the component at `path`.
pub(super) async fn validate_file(path: &Path) -> Result<Validated> {
    validate(path, read(path)?).await
}

/// Compiles `bytes` (world and contract checks) and calls `register`;
/// `path` names the component in errors.
pub(super) async fn validate(path: &Path, bytes: Vec<u8>) -> Result<Validated> {
    let rejected = |source| Error::Component {
        path: path.to_owned(),
        source,
    };
    let compiler = Compiler::new(Arc::new(Runtime::new(None).map_err(rejected)?));
    let compiled = compiler.compile(bytes.clone()).await.map_err(rejected)?;
    let limits = Limits::default();
    let mut instance = compiled
        .instantiate(offline_context()?, &limits)
        .await
        .map_err(rejected)?;
    let registration = instance
        .register(limits.timeout)
        .await
        .map_err(Error::Register)?;
    Ok(Validated {
        bytes,
        admits: compiled.admits(),
        contract: compiled.contract,
        digest: compiled.digest,
        registration,
    })
}

/// What a plugin sees outside a cluster. `register` makes no Kubernetes
/// calls; should a plugin try one, the guard (a term that has already
/// ended) refuses it before anything leaves the process, and the bridge
/// points at a port nothing listens on.
fn offline_context() -> Result<HostContext> {
    let config = kube::Config::new(http::Uri::from_static("http://127.0.0.1:1"));
    let ended = LeaderGuard::new(tokio::time::Instant::now());
    let bridge = KubeBridge::impersonating(
        &config,
        "validate",
        &ServiceAccount::new("offline", "offline"),
        "offline",
        Fence::new(ended),
        &Budget::default(),
        Arc::new(Unaccounted),
    )
    .map_err(|source| Error::Kube {
        action: "build an offline client".into(),
        source,
    })?;
    Ok(HostContext {
        backend: Arc::new(bridge),
        config: Arc::from("{}"),
        object: None,
        allowed_hosts: Arc::default(),
    })
}

/// The report `validate` prints.
fn describe(path: &Path, validated: &Validated) -> String {
    let registration = &validated.registration;
    let mut out = String::new();
    let mut line = |label: &str, value: &str| {
        let _ = writeln!(out, "{:<11}{value}", format!("{label}:"));
    };
    line("component", &path.display().to_string());
    line("digest", &validated.digest);
    line("size", &format!("{} bytes", validated.bytes.len()));
    line("contract", &validated.contract.to_string());
    line(
        "admission",
        if validated.admits {
            "validate, mutate (served by every replica for the Plugin's admission rules)"
        } else {
            "(none)"
        },
    );
    line("name", &registration.name);
    line("primary", &kind(&registration.primary));
    line(
        "selector",
        registration.label_selector.as_deref().unwrap_or("(all)"),
    );
    line(
        "namespace",
        registration.namespace.as_deref().unwrap_or("(all)"),
    );
    line("owns", &list(registration.owns.iter().map(kind)));
    line(
        "watches",
        &list(registration.watches.iter().map(|watch| {
            let mut text = kind(&watch.kind);
            if let Some(selector) = &watch.label_selector {
                let _ = write!(text, " [{selector}]");
            }
            match &watch.mapping {
                Mapping::AllPrimaries => text.push_str(" → all primaries"),
                Mapping::Labels(labels) => {
                    let _ = write!(text, " → primary named by label {}", labels.name);
                    if let Some(namespace) = &labels.namespace {
                        let _ = write!(text, " in namespace label {namespace}");
                    }
                }
            }
            text
        })),
    );
    line(
        "finalizer",
        registration.finalizer.as_deref().unwrap_or("(none)"),
    );
    line(
        "resync",
        &registration
            .resync_period_ms
            .map_or("(none)".to_owned(), |ms| {
                humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
            }),
    );
    out
}

fn kind(gvk: &GroupVersionKind) -> String {
    if gvk.group.is_empty() {
        format!("{}/{}", gvk.version, gvk.kind)
    } else {
        format!("{}/{}/{}", gvk.group, gvk.version, gvk.kind)
    }
}

fn list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Watch;

    #[test]
    fn the_report_names_every_part_of_the_registration() {
        let gvk = |group: &str, kind: &str| GroupVersionKind {
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
            plural: None,
        };
        let validated = Validated {
            bytes: b"leasehold:controller/reconciler@0.1.0".to_vec(),
            digest: "sha256:ab".into(),
            contract: Contract::Previous,
            admits: false,
            registration: Registration {
                name: "mirror".into(),
                primary: gvk("", "ConfigMap"),
                label_selector: Some("a=b".into()),
                namespace: None,
                owns: vec![gvk("apps", "Deployment")],
                watches: vec![Watch {
                    kind: gvk("", "ConfigMap"),
                    label_selector: Some("c=d".into()),
                    mapping: Mapping::AllPrimaries,
                }],
                resync_period_ms: Some(300_000),
                finalizer: Some("example.com/f".into()),
            },
        };
        let report = describe(Path::new("m.wasm"), &validated);
        for expected in [
            "digest:    sha256:ab",
            "contract:  leasehold:controller@0.1.0 (deprecated",
            "admission: (none)",
            "name:      mirror",
            "primary:   v1/ConfigMap",
            "selector:  a=b",
            "namespace: (all)",
            "owns:      apps/v1/Deployment",
            "watches:   v1/ConfigMap [c=d] → all primaries",
            "finalizer: example.com/f",
            "resync:    5m",
        ] {
            assert!(report.contains(expected), "{expected:?} in\n{report}");
        }
    }
}
