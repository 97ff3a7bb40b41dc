//! Answering the API server's admission reviews, on every replica.
//!
//! A review names its plugin in the URL. The replica looks the plugin up in
//! its catalog (every replica compiles every plugin), runs the plugin's
//! `validate` or `mutate` in a fresh instance within the plugin's memory
//! limit and a deadline that fits inside the webhook's `timeoutSeconds`,
//! and turns the verdict into an AdmissionResponse. A plugin that cannot
//! answer (it traps, runs out of time or slots, answers an error or a patch
//! that is not one) gets its webhook's failure policy applied here, with
//! the cause in the message: the API server would only say "failed calling
//! webhook".
//!
//! While a new version of a plugin is fetched and compiled (a hot reload),
//! or if it fails to, reviews go on to the last version that was ready:
//! none is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionResponse, AdmissionReview};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::metrics::AdmissionMetrics;
use super::spares::{BATCH, SetAside, Spares};
use crate::controllers::bridge::KubeBridge;
use crate::controllers::throttle::Unaccounted;
use crate::election::fence::Fence;
use crate::plugins::resource::FailurePolicy;
use crate::plugins::{Catalog, LoadedPlugin, State};
use crate::runtime::{Backend, Instance, Review, Runtime, Verdict, cut};

/// Warnings passed on from one verdict; the API server truncates beyond
/// about this many anyway.
const MAX_WARNINGS: usize = 16;
/// A warning's length; longer ones are cut (the API server's own limit).
const MAX_WARNING_BYTES: usize = 256;
/// A denial's message; longer ones are cut.
const MAX_MESSAGE_BYTES: usize = 4096;

/// Why a review could not be answered at all. The API server then applies
/// the webhook's failure policy itself.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The body is not an `admission.k8s.io/v1` AdmissionReview.
    #[error("the body is not an AdmissionReview: {0}")]
    NotAReview(#[source] serde_json::Error),
    /// Another version or kind than `admission.k8s.io/v1` AdmissionReview.
    #[error(
        "expected an admission.k8s.io/v1 AdmissionReview (admissionReviewVersions: [v1]), not {0}"
    )]
    NotV1(String),
    /// An AdmissionReview without its `request`.
    #[error("the AdmissionReview carries no request")]
    NoRequest,
    /// The URL names a plugin this replica does not know.
    #[error("no plugin {0} on this replica")]
    UnknownPlugin(String),
    /// The plugin is known but has never been ready on this replica.
    #[error("plugin {0} is not ready on this replica (still compiling, or failed: see its status)")]
    NotReady(String),
    /// The plugin does not declare the webhook the URL names.
    #[error("plugin {plugin} declares no {review} webhook in spec.admission")]
    NotDeclared {
        plugin: String,
        review: &'static str,
    },
    /// The plugin's code could not be made ready for reviews.
    #[error("cannot prepare plugin {plugin} for reviews")]
    Prepare {
        plugin: String,
        #[source]
        source: crate::runtime::Error,
    },
    /// The client the plugin's host calls go through could not be built.
    #[error("cannot build a client for plugin {plugin}")]
    Client {
        plugin: String,
        #[source]
        source: kube::Error,
    },
}

/// Every plugin's admission reviews on this replica.
pub struct Reviews {
    catalog: watch::Receiver<Catalog>,
    /// Where each reviewed plugin's code is made ready for reviews.
    runtime: Arc<Runtime>,
    kube_config: kube::Config,
    identity: String,
    metrics: AdmissionMetrics,
    /// The plugin version each key was last reviewed with.
    reviewers: Mutex<Known<Arc<Reviewer>>>,
}

/// What is kept per plugin key, for the plugins the catalog still has.
struct Known<V> {
    by_key: HashMap<String, Kept<V>>,
    /// The catalog as last pruned against.
    seen: watch::Receiver<Catalog>,
}

struct Kept<V> {
    value: V,
    /// Found current since the catalog last changed.
    current: bool,
}

impl<V: Clone> Known<V> {
    fn new(catalog: watch::Receiver<Catalog>) -> Self {
        Self {
            by_key: HashMap::new(),
            seen: catalog,
        }
    }

    /// `key`'s value if it was found current and the catalog has not
    /// changed since.
    fn unchanged(&mut self, key: &str) -> Option<V> {
        self.prune();
        self.by_key
            .get(key)
            .filter(|kept| kept.current)
            .map(|kept| kept.value.clone())
    }

    /// `key`'s value, current or not: the caller checks it against the
    /// catalog.
    fn last(&mut self, key: &str) -> Option<V> {
        self.prune();
        self.by_key.get(key).map(|kept| kept.value.clone())
    }

    /// Keeps `value` for `key`; `current` if it was just found current
    /// against the catalog, after pruning.
    fn keep(&mut self, key: &str, value: V, current: bool) {
        self.prune();
        self.by_key.insert(key.to_owned(), Kept { value, current });
    }

    fn forget(&mut self, key: &str) {
        self.by_key.remove(key);
    }

    /// Forgets the entries of plugins gone from the catalog since the last
    /// call (a reviewer holds its plugin's compiled code and spare
    /// instances, and a deleted plugin is never reviewed again to be found
    /// missing), and has every other checked again.
    fn prune(&mut self) {
        if self.seen.has_changed().unwrap_or(false) {
            let catalog = self.seen.borrow_and_update();
            self.by_key.retain(|key, kept| {
                kept.current = false;
                catalog.entries.contains_key(key)
            });
        }
    }
}

impl std::fmt::Debug for Reviews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reviews")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// One version of one plugin, ready to review.
struct Reviewer {
    /// Compiled for the runtime's review engine.
    plugin: LoadedPlugin,
    /// Answers its host calls as its account, reads only.
    backend: Arc<dyn Backend>,
    /// Reviews that may run at once: the plugin's concurrency.
    slots: Semaphore,
    /// Instances made ahead for its next reviews, and used ones waiting to
    /// be dropped.
    spares: Mutex<Spares<Instance>>,
}

/// What asking the plugin came to.
#[derive(Debug)]
enum Outcome {
    Verdict(Verdict),
    /// It could not answer; why, in words for the requester.
    Failed(String),
}

/// An AdmissionReview as it arrives: its request's raw text (the plugin
/// gets it as the API server sent it) and the few fields the host reads.
/// Not kube-core's typed review: building its objects as JSON values would
/// cost more than the rest of the host's share of a review, and the plugin
/// parses the request anyway.
#[derive(Deserialize)]
struct Arriving<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    kind: &'a str,
    #[serde(borrow)]
    request: Option<&'a RawValue>,
}

/// What the host reads of the request itself.
#[derive(Deserialize)]
struct Head {
    uid: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

/// The review kind this host answers.
const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";
const REVIEW_KIND: &str = "AdmissionReview";

impl Reviews {
    pub fn new(
        catalog: watch::Receiver<Catalog>,
        runtime: Arc<Runtime>,
        kube_config: kube::Config,
        identity: String,
        metrics: AdmissionMetrics,
    ) -> Self {
        Self {
            reviewers: Mutex::new(Known::new(catalog.clone())),
            catalog,
            runtime,
            kube_config,
            identity,
            metrics,
        }
    }

    /// Answers one AdmissionReview `body` for the plugin `namespace/name`;
    /// the API server waits for the answer for `waits` (its `?timeout=`).
    pub async fn review(
        &self,
        namespace: &str,
        name: &str,
        review: Review,
        body: &[u8],
        waits: Duration,
    ) -> Result<AdmissionReview<DynamicObject>, ReviewError> {
        let arrived = Instant::now();
        let arriving: Arriving<'_> =
            serde_json::from_slice(body).map_err(ReviewError::NotAReview)?;
        if (arriving.api_version, arriving.kind) != (REVIEW_API_VERSION, REVIEW_KIND) {
            return Err(ReviewError::NotV1(format!(
                "{}/{}",
                arriving.api_version, arriving.kind
            )));
        }
        let raw = arriving.request.ok_or(ReviewError::NoRequest)?;
        let request: Head = serde_json::from_str(raw.get()).map_err(ReviewError::NotAReview)?;
        let key = format!("{namespace}/{name}");
        let reviewer = self.reviewer_by(&key, arrived + waits * 3 / 4).await?;
        let webhook = reviewer
            .plugin
            .definition
            .admission
            .as_ref()
            .and_then(|declared| declared.webhook(review))
            .ok_or_else(|| ReviewError::NotDeclared {
                plugin: key.clone(),
                review: review.as_str(),
            })?;
        let started = Instant::now();
        let budget = budget(webhook.timeout, reviewer.plugin.definition.limits.timeout)
            .saturating_sub(arrived.elapsed());
        let object = format!(
            "{}{}",
            request
                .namespace
                .as_deref()
                .map_or(String::new(), |namespace| format!("{namespace}/")),
            request.name
        );
        let outcome = reviewer.ask(review, raw.get(), budget, object).await;
        let response = respond(&request.uid, review, webhook.failure_policy, &key, outcome);
        self.metrics
            .reviewed(&key, review, &response, started.elapsed());
        Ok(response.into_review())
    }

    /// [`reviewer`](Self::reviewer), waiting until `by` for a plugin this
    /// replica has not seen yet or is still compiling: a replica that heard
    /// of the Plugin after the leader (which wrote the webhook configuration
    /// once its own copy was ready) answers late rather than fails.
    async fn reviewer_by(&self, key: &str, by: Instant) -> Result<Arc<Reviewer>, ReviewError> {
        let waits = |found: &Result<_, _>| {
            matches!(
                found,
                Err(ReviewError::UnknownPlugin(_) | ReviewError::NotReady(_))
            ) && Instant::now() < by
        };
        let found = self.reviewer(key);
        if !waits(&found) {
            return found;
        }
        let mut catalog = self.catalog.clone();
        loop {
            // Marked seen before looking again, so no change is missed.
            catalog.borrow_and_update();
            let found = self.reviewer(key);
            if !waits(&found) {
                return found;
            }
            match tokio::time::timeout_at(by, catalog.changed()).await {
                Ok(Ok(())) => continue,
                // The deadline, or a catalog that will never change.
                Ok(Err(_)) | Err(_) => return self.reviewer(key),
            }
        }
    }

    /// The reviewer of the plugin's current version; the last ready one
    /// while a new version is prepared or has failed.
    fn reviewer(&self, key: &str) -> Result<Arc<Reviewer>, ReviewError> {
        let loaded = {
            let mut known = lock(&self.reviewers);
            // Neither the catalog nor the plugin's definition is read again
            // until the catalog changes: finding the plugin took a review
            // 12–22 µs with its caches cold while it compared definitions,
            // 6–8 µs since (timed in place, not kept).
            if let Some(reviewer) = known.unchanged(key) {
                return Ok(reviewer);
            }
            // Borrowed after pruning, so never older than what was pruned
            // against.
            let catalog = self.catalog.borrow();
            let Some(entry) = catalog.entries.get(key) else {
                known.forget(key);
                return Err(ReviewError::UnknownPlugin(key.to_owned()));
            };
            let State::Ready(loaded) = &entry.state else {
                return known
                    .last(key)
                    .ok_or_else(|| ReviewError::NotReady(key.to_owned()));
            };
            if let Some(reviewer) = known.last(key)
                && reviewer.plugin.same_version(loaded)
            {
                known.keep(key, reviewer.clone(), true);
                return Ok(reviewer);
            }
            loaded.clone()
        };
        // Made without the lock (mapping or copying the plugin's code takes
        // a millisecond or more) so other plugins' reviews go on; two first
        // reviews at once may both make one, and the last is kept. Checked
        // against the catalog by the next review: a newer version may have
        // been kept while this one was made.
        let reviewer = Arc::new(self.reviewer_of(&loaded)?);
        lock(&self.reviewers).keep(key, reviewer.clone(), false);
        Ok(reviewer)
    }

    fn reviewer_of(&self, plugin: &LoadedPlugin) -> Result<Reviewer, ReviewError> {
        let definition = &plugin.definition;
        // Reads only, on any replica: the webhook declares sideEffects
        // None, and no term is needed to read.
        let bridge = KubeBridge::impersonating(
            &self.kube_config,
            &definition.name,
            &definition.service_account,
            &self.identity,
            Fence::reads_only(),
            &definition.budget,
            Arc::new(Unaccounted),
        )
        .map_err(|source| ReviewError::Client {
            plugin: definition.name.clone(),
            source,
        })?;
        // A plugin without the export declares no webhook either (the
        // catalog refuses that), so it is never asked, and its code is not
        // copied: its reviews are refused as undeclared.
        let compiled = if plugin.compiled.admits() {
            self.runtime
                .for_reviews(&plugin.compiled)
                .map_err(|source| ReviewError::Prepare {
                    plugin: definition.name.clone(),
                    source,
                })?
        } else {
            plugin.compiled.clone()
        };
        Ok(Reviewer {
            slots: Semaphore::new(definition.limits.concurrency.into()),
            spares: Mutex::default(),
            backend: Arc::new(bridge),
            plugin: LoadedPlugin {
                definition: definition.clone(),
                compiled,
            },
        })
    }
}

/// The plugin's time for one review: its own timeout, cut to three
/// quarters of the webhook's so the answer (or the failure policy's)
/// reaches the API server before it gives up.
fn budget(webhook_timeout: Duration, plugin_timeout: Duration) -> Duration {
    plugin_timeout.min(webhook_timeout * 3 / 4)
}

impl Reviewer {
    async fn ask(
        self: &Arc<Self>,
        review: Review,
        request: &str,
        budget: Duration,
        object: String,
    ) -> Outcome {
        let deadline = Instant::now() + budget;
        let limits = &self.plugin.definition.limits;
        let Ok(Ok(_slot)) = tokio::time::timeout_at(deadline, self.slots.acquire()).await else {
            return Outcome::Failed(format!(
                "all {} of its review slots stayed busy for {}",
                limits.concurrency,
                humantime::format_duration(budget)
            ));
        };
        let spare = lock(&self.spares).take();
        let mut instance = match spare {
            Some(mut spare) => {
                spare.regarding(Some(object));
                spare
            }
            None => match self.instantiate(Some(object)).await {
                Ok(instance) => instance,
                Err(error) => return Outcome::Failed(error.to_string()),
            },
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let outcome = match instance.review(review, request, remaining).await {
            Ok(Ok(verdict)) => Outcome::Verdict(verdict),
            Ok(Err(message)) => Outcome::Failed(format!(
                "it could not decide: {}",
                cut(message, MAX_MESSAGE_BYTES)
            )),
            Err(error) => Outcome::Failed(error.to_string()),
        };
        self.replenish(instance);
        outcome
    }

    async fn instantiate(&self, object: Option<String>) -> Result<Instance, crate::runtime::Error> {
        let context = self.plugin.definition.context(self.backend.clone(), object);
        self.plugin
            .compiled
            .instantiate(context, &self.plugin.definition.limits)
            .await
    }

    /// After the answer, off the review's path: sets the `used` instance
    /// aside, and makes the next batch of spares when its last is gone (see
    /// [`spares`](super::spares)). The task runs once the answer is on its
    /// way: it is spawned onto this worker, which first finishes writing the
    /// response.
    fn replenish(self: &Arc<Self>, used: Instance) {
        let reviewer = self.clone();
        tokio::spawn(async move {
            let set_aside = lock(&reviewer.spares).set_aside(used);
            let SetAside::Refill(ended) = set_aside else {
                return;
            };
            drop(ended);
            let mut made = Vec::with_capacity(BATCH);
            for _ in 0..BATCH {
                match reviewer.instantiate(None).await {
                    Ok(instance) => made.push(instance),
                    // The next reviews instantiate for themselves, and say
                    // why if they cannot either.
                    Err(error) => {
                        debug!(
                            plugin = reviewer.plugin.definition.name,
                            error = %error,
                            "no spare instances for the next reviews"
                        );
                        break;
                    }
                }
            }
            lock(&reviewer.spares).refilled(made);
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The AdmissionResponse for `outcome`.
fn respond(
    uid: &str,
    review: Review,
    policy: FailurePolicy,
    plugin: &str,
    outcome: Outcome,
) -> AdmissionResponse {
    let verdict = match outcome {
        Outcome::Verdict(verdict) => verdict,
        Outcome::Failed(cause) => return failed(uid, policy, plugin, &cause),
    };
    let mut response = admitted(uid);
    if !verdict.warnings.is_empty() {
        response.warnings = Some(
            verdict
                .warnings
                .into_iter()
                .take(MAX_WARNINGS)
                .map(|warning| cut(warning, MAX_WARNING_BYTES))
                .collect(),
        );
    }
    if !verdict.allowed {
        let message = verdict
            .message
            .filter(|message| !message.trim().is_empty())
            .unwrap_or_else(|| format!("denied by plugin {plugin}"));
        response = response.deny(cut(message, MAX_MESSAGE_BYTES));
        let code = verdict
            .code
            .filter(|code| (400..=599).contains(code))
            .unwrap_or(403);
        response.result.code = code;
        return response;
    }
    let Some(patch) = verdict.patch else {
        return response;
    };
    if review == Review::Validate {
        return failed(
            uid,
            policy,
            plugin,
            "validate answered a patch; only mutate may change the object",
        );
    }
    let patch = match serde_json::from_str::<json_patch::Patch>(&patch) {
        Ok(patch) => patch,
        Err(error) => {
            let cause =
                format!("mutate answered a patch that is not an RFC 6902 JSON patch: {error}");
            return failed(uid, policy, plugin, &cause);
        }
    };
    if patch.0.is_empty() {
        return response;
    }
    match response.clone().with_patch(patch) {
        Ok(patched) => patched,
        Err(error) => failed(uid, policy, plugin, &error.to_string()),
    }
}

/// The answer to the request `uid` that lets it through, to build on.
fn admitted(uid: &str) -> AdmissionResponse {
    // kube-core builds a response from a typed request only; this is the
    // same response from the one field it copies (and the review's type).
    let mut response = AdmissionResponse::invalid("");
    response.types = kube::core::TypeMeta {
        api_version: REVIEW_API_VERSION.to_owned(),
        kind: REVIEW_KIND.to_owned(),
    };
    response.uid = uid.to_owned();
    response.allowed = true;
    response.result = kube::core::Status::default();
    response
}

/// The answer for a plugin that could not judge the request: its failure
/// policy, with the cause.
fn failed(uid: &str, policy: FailurePolicy, plugin: &str, cause: &str) -> AdmissionResponse {
    warn!(
        plugin,
        cause,
        policy = policy.as_str(),
        uid,
        "admission review failed"
    );
    let said = format!("plugin {plugin} could not review the request: {cause}");
    let response = admitted(uid);
    match policy {
        FailurePolicy::Fail => {
            let mut response = response.deny(format!("{said} (failurePolicy Fail refuses it)"));
            response.result.code = 500;
            response.result.reason = "InternalError".into();
            response
        }
        FailurePolicy::Ignore => {
            let mut response = response;
            response.warnings = Some(vec![cut(
                format!("{said}; admitted because its failurePolicy is Ignore"),
                MAX_WARNING_BYTES,
            )]);
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::core::admission::AdmissionRequest;
    use serde_json::json;

    use super::*;

    fn request() -> AdmissionRequest<DynamicObject> {
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "7d1d5c1e",
                "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
                "resource": {"group": "", "version": "v1", "resource": "configmaps"},
                "name": "settings", "namespace": "team",
                "operation": "CREATE",
                "userInfo": {"username": "alice"},
                "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}},
                "dryRun": false,
            }
        }))
        .unwrap();
        review.try_into().unwrap()
    }

    fn verdict(allowed: bool) -> Verdict {
        Verdict {
            allowed,
            message: None,
            code: None,
            warnings: Vec::new(),
            patch: None,
        }
    }

    fn answer(review: Review, policy: FailurePolicy, outcome: Outcome) -> serde_json::Value {
        let response = respond(&request().uid, review, policy, "team/check", outcome);
        let from_kube =
            serde_json::to_value(AdmissionResponse::from(&request()).into_review()).unwrap();
        let ours = serde_json::to_value(admitted(&request().uid).into_review()).unwrap();
        assert_eq!(ours, from_kube, "the same base as kube-core's");
        serde_json::to_value(response.into_review()).unwrap()["response"].clone()
    }

    #[test]
    fn a_denial_carries_the_plugins_message_and_code_for_the_request() {
        let mut denied = verdict(false);
        denied.message = Some("name must not be empty".into());
        denied.code = Some(422);
        let response = answer(
            Review::Validate,
            FailurePolicy::Fail,
            Outcome::Verdict(denied),
        );
        assert_eq!(response["uid"], "7d1d5c1e");
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["message"], "name must not be empty");
        assert_eq!(response["status"]["code"], 422);
    }

    #[test]
    fn a_denial_without_a_message_or_with_a_success_code_still_reads_as_one() {
        let mut denied = verdict(false);
        denied.code = Some(200);
        let response = answer(
            Review::Validate,
            FailurePolicy::Fail,
            Outcome::Verdict(denied),
        );
        assert_eq!(response["status"]["message"], "denied by plugin team/check");
        assert_eq!(response["status"]["code"], 403);
    }

    #[test]
    fn a_mutation_is_sent_as_a_json_patch() {
        let mut patched = verdict(true);
        patched.patch = Some(r#"[{"op":"add","path":"/data","value":{"a":"b"}}]"#.into());
        patched.warnings = vec!["defaulted data".into()];
        let response = answer(
            Review::Mutate,
            FailurePolicy::Fail,
            Outcome::Verdict(patched),
        );
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        assert_eq!(response["warnings"], json!(["defaulted data"]));
        // kube-core sends the bytes as a JSON array, which the API server's
        // decoder takes for a []byte as readily as base64.
        let decoded: Vec<u8> = serde_json::from_value(response["patch"].clone()).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&decoded).unwrap(),
            json!([{"op": "add", "path": "/data", "value": {"a": "b"}}])
        );
    }

    #[test]
    fn a_patch_that_is_not_one_fails_by_the_policy() {
        let mut bad = verdict(true);
        bad.patch = Some("not json".into());
        let refused = answer(Review::Mutate, FailurePolicy::Fail, Outcome::Verdict(bad));
        assert_eq!(refused["allowed"], false);
        let message = refused["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("plugin team/check could not review the request: mutate answered a patch that is not an RFC 6902 JSON patch"),
            "{message}"
        );
        assert!(
            message.ends_with("(failurePolicy Fail refuses it)"),
            "{message}"
        );
    }

    #[test]
    fn validate_may_not_patch() {
        let mut patching = verdict(true);
        patching.patch = Some("[]".into());
        let refused = answer(
            Review::Validate,
            FailurePolicy::Fail,
            Outcome::Verdict(patching),
        );
        assert_eq!(refused["allowed"], false);
        assert!(
            refused["status"]["message"]
                .as_str()
                .unwrap()
                .contains("only mutate may change the object")
        );
    }

    #[test]
    fn a_failure_is_refused_under_fail_and_admitted_with_a_warning_under_ignore() {
        let trapped = || Outcome::Failed("plugin trapped: wasm trap: unreachable".into());
        let refused = answer(Review::Validate, FailurePolicy::Fail, trapped());
        assert_eq!(refused["allowed"], false);
        assert_eq!(refused["status"]["code"], 500);
        let admitted = answer(Review::Validate, FailurePolicy::Ignore, trapped());
        assert_eq!(admitted["allowed"], true);
        let warning = admitted["warnings"][0].as_str().unwrap();
        assert!(warning.contains("plugin trapped"), "{warning}");
        assert!(
            warning.ends_with("admitted because its failurePolicy is Ignore"),
            "{warning}"
        );
    }

    #[test]
    fn warnings_are_bounded_in_number_and_length() {
        let mut chatty = verdict(true);
        chatty.warnings = vec!["w".repeat(1000); 100];
        let response = answer(
            Review::Validate,
            FailurePolicy::Fail,
            Outcome::Verdict(chatty),
        );
        let warnings = response["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), MAX_WARNINGS);
        assert!(
            warnings
                .iter()
                .all(|w| w.as_str().unwrap().len() <= MAX_WARNING_BYTES)
        );
    }

    fn catalog_of(keys: &[&str]) -> Catalog {
        Catalog {
            entries: keys
                .iter()
                .map(|key| {
                    let entry = crate::plugins::Entry {
                        object: None,
                        source: String::new(),
                        suspend: false,
                        state: State::Preparing,
                    };
                    ((*key).to_owned(), entry)
                })
                .collect(),
            listed: true,
        }
    }

    #[test]
    fn what_is_kept_for_a_plugin_goes_when_the_catalog_drops_it() {
        let (catalog, seen) = watch::channel(catalog_of(&["team/a", "team/b"]));
        let mut known = Known::new(seen);
        known.keep("team/a", 1, true);
        known.keep("team/b", 2, true);
        catalog.send_replace(catalog_of(&["team/b", "team/c"]));
        assert_eq!(known.last("team/a"), None, "team/a was deleted");
        assert_eq!(known.last("team/b"), Some(2), "team/b stays");
        known.keep("team/c", 3, true);
        assert_eq!(known.by_key.len(), 2, "nothing goes while nothing changes");
    }

    #[test]
    fn what_is_kept_is_checked_again_after_any_change_of_the_catalog() {
        let (catalog, seen) = watch::channel(catalog_of(&["team/a", "team/b"]));
        let mut known = Known::new(seen);
        known.keep("team/a", 1, true);
        assert_eq!(known.unchanged("team/a"), Some(1));
        catalog.send_replace(catalog_of(&["team/a", "team/b"]));
        assert_eq!(known.unchanged("team/a"), None, "the catalog changed");
        assert_eq!(known.last("team/a"), Some(1), "still kept, to be checked");
        known.keep("team/a", 1, true);
        assert_eq!(known.unchanged("team/a"), Some(1));
    }

    #[test]
    fn what_is_kept_unchecked_is_checked_before_its_next_use() {
        let (_catalog, seen) = watch::channel(catalog_of(&["team/a"]));
        let mut known = Known::new(seen);
        known.keep("team/a", 1, false);
        assert_eq!(known.unchanged("team/a"), None);
        assert_eq!(known.last("team/a"), Some(1));
    }

    #[test]
    fn the_plugin_answers_within_three_quarters_of_the_webhooks_timeout() {
        assert_eq!(
            budget(Duration::from_secs(10), Duration::from_secs(2)),
            Duration::from_secs(2)
        );
        assert_eq!(
            budget(Duration::from_secs(1), Duration::from_secs(2)),
            Duration::from_millis(750)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_that_are_not_v1_reviews_are_refused_before_any_plugin_runs() {
        let (_catalog, watched) = watch::channel(Catalog::default());
        let reviews = Reviews::new(
            watched,
            Arc::new(Runtime::new(None).unwrap()),
            kube::Config::new("http://127.0.0.1:1".parse().unwrap()),
            "replica".into(),
            AdmissionMetrics::default(),
        );
        let review = |body: serde_json::Value| {
            let reviews = &reviews;
            async move {
                reviews
                    .review(
                        "team",
                        "check",
                        Review::Validate,
                        body.to_string().as_bytes(),
                        Duration::from_millis(40),
                    )
                    .await
                    .unwrap_err()
                    .to_string()
            }
        };
        let not_json = reviews
            .review(
                "team",
                "check",
                Review::Validate,
                b"{not json",
                Duration::from_millis(40),
            )
            .await
            .unwrap_err();
        assert!(matches!(not_json, ReviewError::NotAReview(_)), "{not_json}");
        assert_eq!(
            review(json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "1"}})).await,
            "expected an admission.k8s.io/v1 AdmissionReview (admissionReviewVersions: [v1]), not admission.k8s.io/v1beta1/AdmissionReview"
        );
        assert_eq!(
            review(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"})).await,
            "the AdmissionReview carries no request"
        );
        // A plugin it has not heard of is waited for, for three quarters of
        // what the API server waits, before the answer says so.
        let asked = Instant::now();
        assert_eq!(
            review(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "1"}})).await,
            "no plugin team/check on this replica"
        );
        assert!(asked.elapsed() >= Duration::from_millis(30));
    }
}
