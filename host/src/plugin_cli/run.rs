//! `leasehold plugin run`: a built component, offline, on the harness
//! (`leasehold-harness`): the host's own runtime against the SDK's
//! in-memory cluster. What a plugin in any language can be tested with,
//! without writing Rust.
//!
//! Once: fixtures in (`--object`, JSON or YAML), primaries reconciled in
//! order (`--reconcile`, or every stored primary), one JSON document out
//! (the registration, each reconcile's outcome with the calls, Events and
//! logs it made, and the objects that result).
//!
//! Served (`--serve`): one JSON command per stdin line, one JSON answer per
//! stdout line, until stdin closes; the JavaScript SDK's `testing` module
//! drives this. Commands: `{"op": "insert", "object": {…}}`, `{"op":
//! "get" | "delete", "apiVersion", "kind", "namespace"?, "name"}`, `{"op":
//! "forbid", "apiVersion", "kind"}`, `{"op": "objects"}`, `{"op":
//! "registration"}`, `{"op": "reconcile", "namespace"?, "name"}`. An answer
//! is `{"ok": true, …}` or `{"ok": false, "error": "…"}`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use leasehold_harness::{Error as HarnessError, FakeCluster, Harness};
use leasehold_sdk::event::EventType;
use leasehold_sdk::log::Level;
use leasehold_sdk::{Action, ObjectRef, TypeMeta};
use serde_json::{Map, Value, json};

use super::{Error, Result, read};
use crate::runtime::{GroupVersionKind, Mapping, Registration};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// The component (`.wasm`) to run.
    file: PathBuf,
    /// The plugin's configuration (its Plugin's `spec.config`), a JSON object.
    #[arg(long, value_name = "JSON")]
    config: Option<String>,
    /// Objects to store before reconciling: a JSON object, array or List,
    /// or YAML documents. Repeatable.
    #[arg(long = "object", value_name = "FILE")]
    objects: Vec<PathBuf>,
    /// Reconcile this primary (`NAMESPACE/NAME`, or `NAME` when
    /// cluster-scoped), in order. Repeatable [default: every stored primary].
    #[arg(long = "reconcile", value_name = "REF")]
    reconciles: Vec<String>,
    /// Answer JSON commands, one per stdin line, instead (see the docs).
    #[arg(long, conflicts_with_all = ["objects", "reconciles"])]
    serve: bool,
    /// Keep compiled code here across runs: a JavaScript component takes
    /// seconds to compile, milliseconds to load from the cache
    /// [default: ~/.cache/leasehold/compile].
    #[arg(long, value_name = "DIR", env = "LEASEHOLD_COMPILE_CACHE")]
    compile_cache: Option<PathBuf>,
}

pub(super) async fn run(options: Options) -> Result<()> {
    // The harness blocks on a runtime of its own.
    std::thread::scope(|scope| scope.spawn(|| run_blocking(options)).join())
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn run_blocking(options: Options) -> Result<()> {
    let config = match options.config.as_deref() {
        None => json!({}),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(value @ Value::Object(_)) => value,
            Ok(_) => return Err(invalid_config("not an object")),
            Err(error) => return Err(invalid_config(&error.to_string())),
        },
    };
    if let Some(dir) = options.compile_cache.clone().or_else(default_cache) {
        leasehold_harness::use_compile_cache(dir);
    }
    let bytes = read(&options.file)?;
    let failed = |error: HarnessError| Error::Run {
        path: options.file.clone(),
        reason: error.to_string(),
    };
    let harness = Harness::from_bytes(&bytes)
        .and_then(|harness| harness.with_cluster(FakeCluster::new().with_config(&config)))
        .map_err(failed)?;
    let mut session = Session::new(harness);

    if options.serve {
        return session.serve(std::io::stdin().lock(), std::io::stdout().lock());
    }
    for path in &options.objects {
        for object in fixtures(path)? {
            session.insert(&object).map_err(|reason| Error::Run {
                path: path.clone(),
                reason,
            })?;
        }
    }
    let references = if options.reconciles.is_empty() {
        let primary = type_meta(&session.harness.registration().primary);
        session.harness.cluster().references(&primary)
    } else {
        options
            .reconciles
            .iter()
            .map(|text| reference(text))
            .collect()
    };
    let reconciles: Vec<Value> = references
        .iter()
        .map(|reference| session.reconcile(reference))
        .collect();
    let report = json!({
        "registration": registration(session.harness.registration()),
        "reconciles": reconciles,
        "objects": session.harness.cluster().objects(),
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    Ok(())
}

fn invalid_config(reason: &str) -> Error {
    Error::InvalidConfig {
        reason: reason.to_owned(),
    }
}

/// `~/.cache/leasehold/compile`, beside the npm toolchain's cache.
fn default_cache() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
    Some(cache.join("leasehold/compile"))
}

/// The objects in a fixture file: JSON (an object, an array, or a List's
/// `items`) or YAML documents.
fn fixtures(path: &Path) -> Result<Vec<Value>> {
    let text = String::from_utf8_lossy(&read(path)?).into_owned();
    let invalid = |reason: String| Error::Run {
        path: path.to_owned(),
        reason,
    };
    let documents = match serde_json::from_str::<Value>(&text) {
        Ok(value) => vec![value],
        Err(_) => serde_saphyr::from_multiple::<Value>(&text)
            .map_err(|error| invalid(format!("neither JSON nor YAML: {error}")))?,
    };
    let mut objects = Vec::new();
    for document in documents {
        match document {
            Value::Array(items) => objects.extend(items),
            Value::Object(ref fields) if fields.contains_key("items") => {
                objects.extend(document["items"].as_array().cloned().unwrap_or_default());
            }
            Value::Object(_) => objects.push(document),
            Value::Null => {}
            other => return Err(invalid(format!("not an object: {other}"))),
        }
    }
    Ok(objects)
}

/// `NAMESPACE/NAME`, or `NAME` for a cluster-scoped object.
fn reference(text: &str) -> ObjectRef {
    match text.split_once('/') {
        Some((namespace, name)) => ObjectRef::namespaced(namespace, name),
        None => ObjectRef::cluster(text),
    }
}

// === impl Session ===

/// A harness and how much of its record has been reported, so each
/// reconcile reports only what it did.
struct Session {
    harness: Harness,
    calls: usize,
    events: usize,
    logs: usize,
}

impl Session {
    fn new(harness: Harness) -> Self {
        Self {
            harness,
            calls: 0,
            events: 0,
            logs: 0,
        }
    }

    fn serve(&mut self, input: impl BufRead, mut output: impl Write) -> Result<()> {
        let stdout = |source| Error::Io {
            action: "write",
            path: PathBuf::from("stdout"),
            source,
        };
        for line in input.lines() {
            let line = line.map_err(|source| Error::Io {
                action: "read",
                path: PathBuf::from("stdin"),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let answer = match serde_json::from_str::<Value>(&line) {
                Ok(command) => self.answer(&command),
                Err(error) => Err(format!("not a JSON command: {error}")),
            };
            let answer = match answer {
                Ok(Value::Object(mut fields)) => {
                    fields.insert("ok".into(), true.into());
                    Value::Object(fields)
                }
                Ok(other) => json!({"ok": true, "value": other}),
                Err(error) => json!({"ok": false, "error": error}),
            };
            writeln!(output, "{answer}").map_err(stdout)?;
            output.flush().map_err(stdout)?;
        }
        Ok(())
    }

    fn answer(&mut self, command: &Value) -> Result<Value, String> {
        let text = |key: &str| command[key].as_str().map(str::to_owned);
        let required = |key: &str| text(key).ok_or_else(|| format!("{key} is required"));
        let target = || -> Result<(TypeMeta, ObjectRef), String> {
            let type_meta = TypeMeta {
                api_version: required("apiVersion")?,
                kind: required("kind")?,
            };
            Ok((
                type_meta,
                ObjectRef {
                    namespace: text("namespace"),
                    name: required("name")?,
                },
            ))
        };
        let cluster = self.harness.cluster();
        match command["op"].as_str().unwrap_or_default() {
            "insert" => Ok(json!({"object": self.insert(&command["object"])?})),
            "get" => {
                let (type_meta, reference) = target()?;
                Ok(json!({"object": cluster.get_value(&type_meta, &reference)}))
            }
            "delete" => {
                let (type_meta, reference) = target()?;
                Ok(json!({"deleted": cluster.delete_value(&type_meta, &reference)}))
            }
            "forbid" => {
                cluster.forbid_type(&TypeMeta {
                    api_version: required("apiVersion")?,
                    kind: required("kind")?,
                });
                Ok(json!({}))
            }
            "objects" => Ok(json!({"objects": cluster.objects()})),
            "registration" => Ok(registration(self.harness.registration())),
            "reconcile" => Ok(self.reconcile(&ObjectRef {
                namespace: text("namespace"),
                name: required("name")?,
            })),
            other => Err(format!(
                "unknown op {other:?}: insert, get, delete, forbid, objects, registration or reconcile"
            )),
        }
    }

    fn insert(&mut self, object: &Value) -> Result<Value, String> {
        self.harness
            .cluster()
            .insert_value(object)
            .map_err(|error| format!("cannot insert the object: {error}"))
    }

    /// Reconciles one primary and reports its outcome with the calls,
    /// Events and logs it made.
    fn reconcile(&mut self, reference: &ObjectRef) -> Value {
        let outcome = self.harness.reconcile(reference);
        let cluster = self.harness.cluster();
        let calls = cluster.calls();
        let events = cluster.events();
        let logs = cluster.logs();
        let mut report = Map::new();
        report.insert("reference".into(), reference_json(reference));
        report.insert("memoryPeakBytes".into(), self.harness.memory_peak().into());
        match outcome {
            Ok(Action::Done) => {
                report.insert("action".into(), json!({"done": true}));
            }
            Ok(Action::RequeueAfter(delay)) => {
                let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                report.insert("action".into(), json!({"requeueAfterMs": millis}));
            }
            Err(HarnessError::Reconcile { message, retryable }) => {
                report.insert(
                    "error".into(),
                    json!({"message": message, "retryable": retryable}),
                );
            }
            // A trap, a timeout, too much memory, or the host's own
            // bookkeeping: the host retries these.
            Err(error) => {
                report.insert(
                    "error".into(),
                    json!({"message": error.to_string(), "retryable": true, "runtime": true}),
                );
            }
        }
        report.insert(
            "calls".into(),
            calls[self.calls.min(calls.len())..]
                .iter()
                .map(ToString::to_string)
                .collect(),
        );
        report.insert(
            "events".into(),
            events[self.events.min(events.len())..]
                .iter()
                .map(|event| {
                    json!({
                        "kind": event.kind,
                        "regarding": reference_json(&event.regarding),
                        "type": match event.event_type {
                            EventType::Normal => "Normal",
                            EventType::Warning => "Warning",
                        },
                        "reason": event.reason,
                        "message": event.message,
                    })
                })
                .collect(),
        );
        report.insert(
            "logs".into(),
            logs[self.logs.min(logs.len())..]
                .iter()
                .map(|record| {
                    let fields: Map<String, Value> = record
                        .fields
                        .iter()
                        .map(|(key, value)| (key.clone(), value.clone().into()))
                        .collect();
                    json!({
                        "level": level(record.level),
                        "message": record.message,
                        "fields": fields,
                    })
                })
                .collect(),
        );
        (self.calls, self.events, self.logs) = (calls.len(), events.len(), logs.len());
        Value::Object(report)
    }
}

fn reference_json(reference: &ObjectRef) -> Value {
    let mut value = json!({"name": reference.name});
    if let Some(namespace) = &reference.namespace {
        value["namespace"] = namespace.clone().into();
    }
    value
}

fn level(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

fn type_meta(kind: &GroupVersionKind) -> TypeMeta {
    TypeMeta {
        api_version: api_version(kind),
        kind: kind.kind.clone(),
    }
}

fn api_version(kind: &GroupVersionKind) -> String {
    if kind.group.is_empty() {
        kind.version.clone()
    } else {
        format!("{}/{}", kind.group, kind.version)
    }
}

/// The registration as JSON, in the SDK's words.
fn registration(registration: &Registration) -> Value {
    let kind =
        |kind: &GroupVersionKind| json!({"apiVersion": api_version(kind), "kind": kind.kind});
    json!({
        "name": registration.name,
        "primary": kind(&registration.primary),
        "labelSelector": registration.label_selector,
        "namespace": registration.namespace,
        "owns": registration.owns.iter().map(kind).collect::<Vec<_>>(),
        "watches": registration.watches.iter().map(|watch| json!({
            "kind": kind(&watch.kind),
            "labelSelector": watch.label_selector,
            "mapping": match &watch.mapping {
                Mapping::AllPrimaries => json!({"allPrimaries": true}),
                Mapping::Labels(labels) => json!({"labels": {"name": labels.name, "namespace": labels.namespace}}),
            },
        })).collect::<Vec<_>>(),
        "resyncPeriodMs": registration.resync_period_ms,
        "finalizer": registration.finalizer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_namespace_slash_name_or_a_bare_cluster_scoped_name() {
        assert_eq!(
            reference("team-a/settings"),
            ObjectRef::namespaced("team-a", "settings")
        );
        assert_eq!(reference("team-a"), ObjectRef::cluster("team-a"));
    }

    #[test]
    fn fixtures_are_json_objects_arrays_lists_or_yaml_documents() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            fixtures(&path).unwrap().len()
        };
        assert_eq!(file("one.json", r#"{"kind": "ConfigMap"}"#), 1);
        assert_eq!(file("two.json", r#"[{"kind": "A"}, {"kind": "B"}]"#), 2);
        assert_eq!(file("list.json", r#"{"kind": "List", "items": [{}]}"#), 1);
        assert_eq!(file("docs.yaml", "kind: A\n---\nkind: B\n---\n"), 2);
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, "- [unclosed").unwrap();
        let error = fixtures(&path).unwrap_err().to_string();
        assert!(error.contains("neither JSON nor YAML"), "{error}");
    }
}
