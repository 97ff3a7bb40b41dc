//! What a Plugin's status says, and writing it (leader only).
//!
//! Four conditions, in the order a plugin passes them: `Fetched`,
//! `Compiled`, `Running`, and `Ready` (all three true). A condition's
//! `lastTransitionTime` changes only when its status does. Counters alone
//! are written at most every [`COUNTS_PERIOD`], so a busy plugin does not
//! turn into a stream of status writes.
//!
//! Each written change of lifecycle is also an Event on the Plugin
//! ([`lifecycle`]: fetched, compiled, started, moved, reloaded, stopped,
//! failed), so `kubectl describe plugin` tells its story. Events follow the
//! status, which only the replica running the plugin writes: each is
//! recorded once, whatever the number of replicas.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Resource};
use serde_json::json;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::run::{Phase, Report};
use crate::election::LeaderGuard;
use crate::plugins::resource::{LastError, ReconcileCounts};
use crate::plugins::{Entry, Plugin, PluginStatus, Stage, State};

/// Whose status fields these are, for server-side apply.
const FIELD_MANAGER: &str = "leasehold";

/// Counter-only changes are written at most this often.
pub const COUNTS_PERIOD: Duration = Duration::from_secs(10);

/// What the leader knows of a plugin's controller.
#[derive(Clone, Copy, Debug)]
pub enum Running<'a> {
    /// Not running: the spec suspends it.
    Suspended,
    /// Not running (not ready, or not started yet).
    No,
    Yes(&'a Report),
}

/// The status a Plugin should have. `previous` keeps transition times.
pub fn desired(
    entry: &Entry,
    running: Running<'_>,
    identity: &str,
    previous: Option<&PluginStatus>,
    now: Timestamp,
) -> PluginStatus {
    let generation = entry.object.as_ref().and_then(|object| object.generation);
    let mut conditions = Conditions {
        generation,
        previous: previous.map_or(&[][..], |status| &status.conditions),
        now,
        list: Vec::new(),
    };
    let mut digest = None;
    let mut contract = None;
    let mut last_error = previous.and_then(|status| status.last_error.clone());
    let mut reconciles = None;
    let mut running_on = None;
    match &entry.state {
        State::Preparing => {
            conditions.set("Fetched", "Unknown", "Fetching", "fetching the component");
            conditions.set(
                "Compiled",
                "Unknown",
                "Fetching",
                "waiting for the component",
            );
            conditions.set("Running", "False", "Fetching", "waiting for the component");
        }
        State::Failed(problem) => {
            digest = problem.digest.clone();
            let failed = |stage| {
                if problem.stage == stage {
                    "False"
                } else {
                    "Unknown"
                }
            };
            match problem.stage {
                Stage::Spec | Stage::Fetch => {
                    conditions.set("Fetched", "False", problem.reason, &problem.message);
                    conditions.set("Compiled", failed(Stage::Compile), "NotFetched", "");
                }
                Stage::Compile => {
                    conditions.set("Fetched", "True", "Fetched", "");
                    conditions.set("Compiled", "False", problem.reason, &problem.message);
                }
            }
            conditions.set("Running", "False", problem.reason, &problem.message);
            last_error = Some(remembered(last_error, &problem.message, now));
        }
        State::Ready(loaded) => {
            digest = Some(loaded.compiled.digest.clone());
            conditions.set("Fetched", "True", "Fetched", "");
            contract = Some(loaded.compiled.contract.to_string());
            let compiled = format!(
                "compiled or loaded in {} ms, for {}",
                loaded.compiled.compile_time.as_millis(),
                loaded.compiled.contract
            );
            conditions.set("Compiled", "True", "Compiled", &compiled);
            match running {
                Running::Suspended => {
                    conditions.set("Running", "False", "Suspended", "spec.suspend is true")
                }
                Running::No => conditions.set("Running", "False", "Starting", ""),
                Running::Yes(report) => {
                    match report.phase() {
                        Phase::Starting => conditions.set("Running", "False", "Starting", ""),
                        Phase::Running { primary } => {
                            running_on = Some(identity.to_owned());
                            let message = format!("reconciling {primary} on {identity}");
                            conditions.set("Running", "True", "Running", &message);
                        }
                        Phase::Failed { reason, message } => {
                            conditions.set("Running", "False", reason, &message)
                        }
                    }
                    let (ok, error, trap) = report.counts();
                    reconciles = Some(ReconcileCounts { ok, error, trap });
                    if let Some((message, at)) = report.last_error() {
                        last_error = Some(LastError {
                            message,
                            time: at.to_string(),
                        });
                    }
                }
            }
        }
    }
    let ready = conditions
        .list
        .iter()
        .find(|condition| condition.status != "True");
    let (status, reason, message) = match ready {
        None => ("True", "Ready".to_owned(), String::new()),
        Some(blocking) => (
            "False",
            blocking.reason.clone(),
            format!("{}: {}", blocking.type_, blocking.message),
        ),
    };
    conditions.set("Ready", status, &reason, &message);
    PluginStatus {
        observed_generation: generation,
        conditions: conditions.list,
        source: Some(entry.source.clone()),
        digest,
        contract,
        running_on,
        last_error,
        reconciles,
    }
}

/// Keeps the time of an error that is still the same error.
fn remembered(previous: Option<LastError>, message: &str, now: Timestamp) -> LastError {
    match previous {
        Some(previous) if previous.message == message => previous,
        _ => LastError {
            message: message.to_owned(),
            time: now.to_string(),
        },
    }
}

struct Conditions<'a> {
    generation: Option<i64>,
    previous: &'a [Condition],
    now: Timestamp,
    list: Vec<Condition>,
}

impl Conditions<'_> {
    fn set(&mut self, type_: &str, status: &str, reason: &str, message: &str) {
        let since = self
            .previous
            .iter()
            .find(|old| old.type_ == type_ && old.status == status)
            .map_or(Time(self.now), |old| old.last_transition_time.clone());
        self.list.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            observed_generation: self.generation,
            last_transition_time: since,
        });
    }
}

/// Writes statuses on the leader, skipping writes that change nothing.
pub struct Writer {
    client: kube::Client,
    recorder: Recorder,
    written: HashMap<String, (PluginStatus, Instant)>,
    /// What each Plugin's status was when this term first looked (once per
    /// plugin and term): conditions keep their transition times across
    /// leaders, and an unchanged status is not written again.
    read: HashMap<String, Option<PluginStatus>>,
}

impl Writer {
    /// Writes with `client`, and records Events as `identity`.
    pub fn new(client: kube::Client, identity: &str) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "leasehold".into(),
                instance: Some(identity.to_owned()),
            },
        );
        Self {
            recorder,
            client,
            written: HashMap::new(),
            read: HashMap::new(),
        }
    }

    /// The status last written for `key` this term, else the one the API
    /// server has (read once).
    pub async fn previous(&mut self, key: &str, entry: &Entry) -> Option<PluginStatus> {
        if let Some((status, _)) = self.written.get(key) {
            return Some(status.clone());
        }
        if let Some(status) = self.read.get(key) {
            return status.clone();
        }
        let object = entry.object.as_ref()?;
        let api: Api<Plugin> = Api::namespaced(self.client.clone(), &object.namespace);
        // Unreadable is unknown: try again on the next write.
        let status = api
            .get_opt(&object.name)
            .await
            .ok()?
            .and_then(|plugin| plugin.status);
        self.read.insert(key.to_owned(), status.clone());
        status
    }

    /// Writes `status` for the Plugin behind `entry` if it differs enough
    /// from what was written before.
    pub async fn write(
        &mut self,
        key: &str,
        entry: &Entry,
        status: PluginStatus,
        guard: &LeaderGuard,
    ) {
        let Some(object) = &entry.object else { return };
        let unchanged = match self.written.get(key) {
            Some((written, at)) => {
                same_except_counts(written, &status)
                    && (written.reconciles == status.reconciles || at.elapsed() < COUNTS_PERIOD)
            }
            None => self
                .read
                .get(key)
                .is_some_and(|read| read.as_ref() == Some(&status)),
        };
        if unchanged || guard.check().is_err() {
            return;
        }
        let api: Api<Plugin> = Api::namespaced(self.client.clone(), &object.namespace);
        // Server-side apply: a field this writer set before and omits now
        // (`runningOn` after a stop) is removed, which a merge patch would keep.
        let patch = Patch::Apply(json!({
            "apiVersion": "leasehold.dev/v1alpha1",
            "kind": "Plugin",
            "status": status,
        }));
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch_status(&object.name, &params, &patch).await {
            Ok(plugin) => {
                debug!(plugin = key, "status written");
                let before = match self.written.get(key) {
                    Some((written, _)) => Some(written.clone()),
                    None => self.read.get(key).cloned().flatten(),
                };
                for event in lifecycle(before.as_ref(), &status) {
                    let reference = plugin.object_ref(&());
                    if let Err(error) = self.recorder.publish(&event, &reference).await {
                        debug!(plugin = key, %error, reason = %event.reason, "cannot record the lifecycle Event");
                    }
                }
                self.written
                    .insert(key.to_owned(), (status, Instant::now()));
            }
            Err(kube::Error::Api(response)) if response.code == 404 => {}
            Err(error) => warn!(plugin = key, %error, "cannot write the Plugin's status"),
        }
    }

    /// Forgets plugins that are gone.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.written.retain(|key, _| keep(key));
        self.read.retain(|key, _| keep(key));
    }
}

/// The Events a change of status from `before` to `after` tells.
pub fn lifecycle(before: Option<&PluginStatus>, after: &PluginStatus) -> Vec<Event> {
    let condition = |status: Option<&PluginStatus>, type_: &str| {
        status?
            .conditions
            .iter()
            .find(|condition| condition.type_ == type_)
            .map(|condition| {
                (
                    condition.status.clone(),
                    condition.reason.clone(),
                    condition.message.clone(),
                )
            })
    };
    let event = |type_, reason: &str, note: String, action: &str| Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    let mut events = Vec::new();
    let (old_digest, new_digest) = (
        before.and_then(|s| s.digest.as_deref()),
        after.digest.as_deref(),
    );
    if let (Some(old), Some(new)) = (old_digest, new_digest)
        && old != new
    {
        events.push(event(
            EventType::Normal,
            "Reloaded",
            format!("new component {new} (was {old})"),
            "Reload",
        ));
    }
    for (type_, reason, action) in [
        ("Fetched", "Fetched", "Fetch"),
        ("Compiled", "Compiled", "Compile"),
    ] {
        let (old, new) = (condition(before, type_), condition(Some(after), type_));
        let Some((status, why, message)) = new else {
            continue;
        };
        let changed = old
            .as_ref()
            .is_none_or(|(old_status, old_why, _)| *old_status != status || *old_why != why);
        if !changed {
            continue;
        }
        match status.as_str() {
            "True" => {
                let note = match (type_, new_digest) {
                    ("Fetched", Some(digest)) => format!("fetched {digest}"),
                    _ => message,
                };
                events.push(event(EventType::Normal, reason, note, action));
            }
            "False" => events.push(event(EventType::Warning, &why, message, action)),
            _ => {}
        }
    }
    let (old, new) = (
        condition(before, "Running"),
        condition(Some(after), "Running"),
    );
    let was_running = old.as_ref().is_some_and(|(status, _, _)| status == "True");
    let old_reason = old.as_ref().map(|(_, why, _)| why.as_str());
    match new {
        Some((status, _, message)) if status == "True" => {
            let old_holder = before.and_then(|s| s.running_on.as_deref());
            match (was_running, old_holder, after.running_on.as_deref()) {
                (true, Some(old), Some(new)) if old != new => events.push(event(
                    EventType::Normal,
                    "Moved",
                    format!("moved from {old} to {new}"),
                    "Start",
                )),
                (false, _, _) => events.push(event(EventType::Normal, "Started", message, "Start")),
                _ => {}
            }
        }
        Some((_, why, message)) if was_running || old_reason != Some(why.as_str()) => {
            let note = if message.is_empty() {
                why.clone()
            } else {
                message
            };
            match why.as_str() {
                "Suspended" => events.push(event(EventType::Normal, "Suspended", note, "Stop")),
                // On the way to running (again): a reload or a start.
                "Fetching" | "Starting" if was_running => events.push(event(
                    EventType::Normal,
                    "Stopped",
                    format!("stopped while a new version is prepared ({note})"),
                    "Stop",
                )),
                "Fetching" | "Starting" => {}
                // Said already, by the stage that failed.
                _ if events.iter().any(|said| said.reason == why) => {}
                _ => events.push(event(EventType::Warning, &why, note, "Stop")),
            }
        }
        _ => {}
    }
    events
}

fn same_except_counts(a: &PluginStatus, b: &PluginStatus) -> bool {
    PluginStatus {
        reconciles: None,
        ..a.clone()
    } == PluginStatus {
        reconciles: None,
        ..b.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::{ObjectInfo, Problem};

    fn entry(state: State) -> Entry {
        Entry {
            object: Some(ObjectInfo {
                namespace: "team-a".into(),
                name: "mirror".into(),
                generation: Some(3),
            }),
            source: "configMap:mirror/component.wasm".into(),
            suspend: false,
            state,
        }
    }

    fn condition<'a>(status: &'a PluginStatus, type_: &str) -> (&'a str, &'a str) {
        let found = status
            .conditions
            .iter()
            .find(|condition| condition.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition"));
        (found.status.as_str(), found.reason.as_str())
    }

    fn digest_mismatch() -> State {
        State::Failed(Problem {
            stage: Stage::Fetch,
            reason: "DigestMismatch",
            message: "digest mismatch".into(),
            retryable: true,
            digest: None,
        })
    }

    /// What the leader wants on a Plugin whose fetch failed, on replica alpha.
    fn failed_fetch(previous: Option<&PluginStatus>, now: Timestamp) -> PluginStatus {
        desired(
            &entry(digest_mismatch()),
            Running::No,
            "alpha",
            previous,
            now,
        )
    }

    #[test]
    fn a_fetch_failure_is_not_ready_for_the_fetch_reason() {
        let status = failed_fetch(None, Timestamp::now());
        assert_eq!(condition(&status, "Fetched"), ("False", "DigestMismatch"));
        assert_eq!(condition(&status, "Compiled"), ("Unknown", "NotFetched"));
        assert_eq!(condition(&status, "Ready"), ("False", "DigestMismatch"));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.last_error.unwrap().message, "digest mismatch");
        assert_eq!(status.running_on, None);
    }

    #[test]
    fn a_compile_failure_says_the_component_was_fetched() {
        let state = State::Failed(Problem {
            stage: Stage::Compile,
            reason: "WrongWorld",
            message: "exports no reconciler".into(),
            retryable: false,
            digest: Some("sha256:ab".into()),
        });
        let status = desired(&entry(state), Running::No, "alpha", None, Timestamp::now());
        assert_eq!(condition(&status, "Fetched"), ("True", "Fetched"));
        assert_eq!(condition(&status, "Compiled"), ("False", "WrongWorld"));
        assert_eq!(status.digest.as_deref(), Some("sha256:ab"));
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let first = failed_fetch(None, Timestamp::UNIX_EPOCH);
        let later = failed_fetch(Some(&first), Timestamp::now());
        assert_eq!(first, later);
        let preparing = desired(
            &entry(State::Preparing),
            Running::No,
            "alpha",
            Some(&first),
            Timestamp::now(),
        );
        let fetched = |status: &PluginStatus| {
            status
                .conditions
                .iter()
                .find(|c| c.type_ == "Fetched")
                .unwrap()
                .last_transition_time
                .clone()
        };
        assert_ne!(fetched(&preparing), fetched(&first));
    }

    #[test]
    fn only_counters_changing_is_not_worth_an_immediate_write() {
        let status = failed_fetch(None, Timestamp::now());
        let counted = PluginStatus {
            reconciles: Some(ReconcileCounts {
                ok: 5,
                error: 0,
                trap: 0,
            }),
            ..status.clone()
        };
        assert!(same_except_counts(&status, &counted));
        let moved = PluginStatus {
            running_on: Some("bravo".into()),
            ..status.clone()
        };
        assert!(!same_except_counts(&status, &moved));
    }

    /// A status with `conditions` as (type, status, reason), the digest
    /// and the replica running it.
    fn status_of(
        conditions: &[(&str, &str, &str)],
        digest: &str,
        running_on: Option<&str>,
    ) -> PluginStatus {
        PluginStatus {
            conditions: conditions
                .iter()
                .map(|(type_, status, reason)| Condition {
                    type_: (*type_).into(),
                    status: (*status).into(),
                    reason: (*reason).into(),
                    message: format!("{type_} is {status}"),
                    observed_generation: None,
                    last_transition_time: Time(Timestamp::UNIX_EPOCH),
                })
                .collect(),
            digest: Some(digest.into()),
            running_on: running_on.map(str::to_owned),
            ..PluginStatus::default()
        }
    }

    fn running_on(replica: &str, digest: &str) -> PluginStatus {
        status_of(
            &[
                ("Fetched", "True", "Fetched"),
                ("Compiled", "True", "Compiled"),
                ("Running", "True", "Running"),
            ],
            digest,
            Some(replica),
        )
    }

    fn reasons(events: Vec<Event>) -> Vec<(String, EventType)> {
        events
            .into_iter()
            .map(|event| (event.reason, event.type_))
            .collect()
    }

    #[test]
    fn a_plugins_first_run_is_fetched_compiled_started() {
        assert_eq!(
            reasons(lifecycle(None, &running_on("a", "sha256:1"))),
            [
                ("Fetched".into(), EventType::Normal),
                ("Compiled".into(), EventType::Normal),
                ("Started".into(), EventType::Normal),
            ]
        );
        let same = running_on("a", "sha256:1");
        assert!(lifecycle(Some(&same), &running_on("a", "sha256:1")).is_empty());
    }

    #[test]
    fn a_new_replica_or_component_is_a_move_or_a_reload() {
        let before = running_on("a", "sha256:1");
        assert_eq!(
            reasons(lifecycle(Some(&before), &running_on("b", "sha256:1"))),
            [("Moved".into(), EventType::Normal)]
        );
        let moved = lifecycle(Some(&before), &running_on("b", "sha256:1"));
        assert_eq!(moved[0].note.as_deref(), Some("moved from a to b"));
        assert_eq!(
            reasons(lifecycle(Some(&before), &running_on("a", "sha256:2"))),
            [("Reloaded".into(), EventType::Normal)]
        );
    }

    #[test]
    fn stopping_is_normal_when_suspended_or_reloading_and_a_warning_when_failed() {
        let before = running_on("a", "sha256:1");
        let stopped = |reason| {
            status_of(
                &[
                    ("Fetched", "True", "Fetched"),
                    ("Compiled", "True", "Compiled"),
                    ("Running", "False", reason),
                ],
                "sha256:1",
                None,
            )
        };
        assert_eq!(
            reasons(lifecycle(Some(&before), &stopped("Suspended"))),
            [("Suspended".into(), EventType::Normal)]
        );
        assert_eq!(
            reasons(lifecycle(Some(&before), &stopped("Fetching"))),
            [("Stopped".into(), EventType::Normal)]
        );
        // Suspended while stopped for a reload is still said.
        assert_eq!(
            reasons(lifecycle(Some(&stopped("Fetching")), &stopped("Suspended"))),
            [("Suspended".into(), EventType::Normal)]
        );
        assert!(lifecycle(Some(&stopped("Suspended")), &stopped("Suspended")).is_empty());
        assert_eq!(
            reasons(lifecycle(Some(&before), &stopped("AccessDenied"))),
            [("AccessDenied".into(), EventType::Warning)]
        );
    }

    #[test]
    fn a_component_that_does_not_compile_is_a_warning_with_its_reason() {
        let failed = status_of(
            &[
                ("Fetched", "True", "Fetched"),
                ("Compiled", "False", "WrongWorld"),
                ("Running", "False", "WrongWorld"),
            ],
            "sha256:1",
            None,
        );
        assert_eq!(
            reasons(lifecycle(None, &failed)),
            [
                ("Fetched".into(), EventType::Normal),
                ("WrongWorld".into(), EventType::Warning),
            ]
        );
    }
}
