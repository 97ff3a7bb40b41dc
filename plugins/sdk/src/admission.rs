//! Admission: checking, and defaulting, requests to the API server before
//! it stores them.
//!
//! A plugin that implements [`Admission`] and is exported with
//! `export_controller!(MyReconciler, admission: MyAdmission)` answers the
//! API server's admission webhooks through the host: for every request its
//! Plugin's admission rules match, the API server asks `mutate` (which may
//! change the object) and later `validate` (which allows or denies it).
//!
//! ```no_run
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use leasehold_sdk::admission::{self, Admission, Request, Verdict};
//!
//! #[derive(Default)]
//! struct Owned;
//!
//! impl Admission for Owned {
//!     type Object = ConfigMap;
//!
//!     fn validate(&self, request: &Request<ConfigMap>) -> admission::Result<Verdict> {
//!         let Some(object) = request.object() else {
//!             return Ok(Verdict::allow()); // a DELETE: nothing to check
//!         };
//!         if object.metadata.labels.as_ref().is_some_and(|labels| labels.contains_key("team")) {
//!             Ok(Verdict::allow())
//!         } else {
//!             Ok(Verdict::deny("every ConfigMap needs a team label"))
//!         }
//!     }
//!
//!     fn mutate(&self, request: &Request<ConfigMap>) -> admission::Result<Verdict> {
//!         let Some(mut object) = request.object().cloned() else {
//!             return Ok(Verdict::allow());
//!         };
//!         object.metadata.annotations.get_or_insert_default()
//!             .entry("example.dev/reviewed".into())
//!             .or_insert_with(|| "yes".into());
//!         Verdict::patched(request, &object)
//!     }
//! }
//! ```
//!
//! Every replica answers reviews, leader or not, each in a fresh instance
//! within the plugin's limits (memory, timeout, Kubernetes calls), so a
//! review must be quick and must not rely on state. Calls through
//! [`Api`](crate::Api) are made as the plugin's ServiceAccount, as in a
//! reconcile. An error ([`Error`]) means the plugin could not decide: the
//! host then applies the admission rule's failure policy.
//!
//! The request's types are kube's ([`kube_core::admission`]): the plugin
//! sees what kube-rs webhooks see.

use kube_core::admission::AdmissionRequest;
use serde_json::{Map, Value};

pub use k8s_openapi::api::authentication::v1::UserInfo;
pub use kube_core::admission::Operation;

use crate::object::{Object, ObjectRef, TypeMeta};
use crate::{api, config, selector};

/// The result of deciding about a request.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a plugin could not decide about a request.
///
/// The host hears it as the `admission` export's error and applies the
/// admission rule's failure policy (with `Fail`, the request is refused
/// with this message; with `Ignore`, it proceeds). `?` converts the SDK's
/// own errors, so an API call that fails while deciding is one too.
///
/// ```
/// use leasehold_sdk::admission::Error;
/// let error = Error::new("the quota service did not answer");
/// assert_eq!(error.to_string(), "the quota service did not answer");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// What went wrong, as the host logs it and the failure policy reports
    /// it.
    pub message: String,
}

impl Error {
    /// An error with this message.
    ///
    /// ```
    /// let error = leasehold_sdk::admission::Error::new("cannot decide");
    /// assert_eq!(error.message, "cannot decide");
    /// ```
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl From<api::Error> for Error {
    fn from(error: api::Error) -> Self {
        Self::new(crate::chain(&error))
    }
}

impl From<api::ApiError> for Error {
    fn from(error: api::ApiError) -> Self {
        api::Error::from(error).into()
    }
}

impl From<config::Error> for Error {
    fn from(error: config::Error) -> Self {
        Self::new(crate::chain(&error))
    }
}

impl From<selector::Error> for Error {
    fn from(error: selector::Error) -> Self {
        Self::new(crate::chain(&error))
    }
}

/// A plugin's admission checks: implement it on a `Default` type and export
/// it with `export_controller!(MyReconciler, admission: MyAdmission)`.
///
/// Both methods allow everything unchanged by default, so implement only
/// the one you need. Keep no state between calls: every review runs in a
/// fresh instance.
///
/// ```
/// use k8s_openapi::api::core::v1::Secret;
/// use leasehold_sdk::admission::{self, Admission, Request, Verdict};
///
/// #[derive(Default)]
/// struct Immutable;
///
/// impl Admission for Immutable {
///     type Object = Secret;
///     fn validate(&self, request: &Request<Secret>) -> admission::Result<Verdict> {
///         let changed = request.old_object().map(|old| &old.data) != request.object().map(|new| &new.data);
///         Ok(match (request.operation(), changed) {
///             (admission::Operation::Update, true) => Verdict::deny("this Secret's data is immutable"),
///             _ => Verdict::allow(),
///         })
///     }
/// }
/// ```
pub trait Admission {
    /// The kind under review; a request for another kind is an error,
    /// because the Plugin's admission rules should not send it.
    type Object: Object;

    /// Decides whether the request may proceed. Must not change anything:
    /// a verdict with a patch is an error here.
    fn validate(&self, request: &Request<Self::Object>) -> Result<Verdict> {
        let _ = request;
        Ok(Verdict::allow())
    }

    /// Like `validate`, and may change the object with a patch (see
    /// [`Verdict::patched`]). Mutating webhooks run before validating ones,
    /// and may run again when another webhook changes the object, so a
    /// mutation must be idempotent.
    fn mutate(&self, request: &Request<Self::Object>) -> Result<Verdict> {
        let _ = request;
        Ok(Verdict::allow())
    }
}

// === impl Request ===

/// One request under review, as the API server describes it, with the
/// object (and the old object) decoded as `K`.
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use leasehold_sdk::admission::{Operation, Request};
///
/// let json = serde_json::json!({
///     "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
///     "kind": { "group": "", "version": "v1", "kind": "ConfigMap" },
///     "resource": { "group": "", "version": "v1", "resource": "configmaps" },
///     "name": "settings",
///     "namespace": "default",
///     "operation": "CREATE",
///     "userInfo": { "username": "jane" },
///     "object": { "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "settings" } },
/// });
/// let request = Request::<ConfigMap>::from_json(&json.to_string()).unwrap();
/// assert_eq!(request.operation(), &Operation::Create);
/// assert_eq!(request.user().username.as_deref(), Some("jane"));
/// assert_eq!(request.object().unwrap().metadata.name.as_deref(), Some("settings"));
/// ```
#[derive(Debug, Clone)]
pub struct Request<K: Object> {
    review: AdmissionRequest<K>,
    /// The request as the API server sent it: a patch is computed against
    /// its object, fields `K` does not know included, so it applies to what
    /// the API server holds. Kept as text and read only for a patch: most
    /// reviews never need it.
    json: String,
}

impl<K: Object> Request<K> {
    /// Decodes the AdmissionReview's `request`, as the host passes it.
    ///
    /// Errors name what is wrong: text that is not JSON, a request for
    /// another kind than `K`, or an object that does not decode as `K`.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// let error = leasehold_sdk::admission::Request::<ConfigMap>::from_json("{").unwrap_err();
    /// assert!(error.message.starts_with("the admission request is not JSON"), "{error}");
    /// ```
    pub fn from_json(json: &str) -> Result<Self> {
        Self::from_owned(json.to_owned())
    }

    /// [`from_json`](Self::from_json), keeping `json` itself: the request
    /// the host passed is not copied again.
    pub(crate) fn from_owned(json: String) -> Result<Self> {
        // One pass straight into `K`; only a request that fails to decode
        // is read again, to say why.
        let review: AdmissionRequest<K> =
            serde_json::from_str(&json).map_err(|error| Self::undecodable(&json, &error))?;
        let expected = TypeMeta::of::<K>();
        let found = TypeMeta {
            api_version: if review.kind.group.is_empty() {
                review.kind.version.clone()
            } else {
                format!("{}/{}", review.kind.group, review.kind.version)
            },
            kind: review.kind.kind.clone(),
        };
        if found != expected {
            return Err(Self::other_kind(&found));
        }
        Ok(Self { review, json })
    }

    /// Why `json` does not decode as a review of `K`.
    fn undecodable(json: &str, error: &serde_json::Error) -> Error {
        let expected = TypeMeta::of::<K>();
        match serde_json::from_str::<Value>(json) {
            Err(error) => Error::new(format!("the admission request is not JSON: {error}")),
            Ok(value) => match kind_of(&value) {
                Some(found) if found != expected => Self::other_kind(&found),
                _ => Error::new(format!(
                    "cannot decode the admission request as a review of {expected}: {error}"
                )),
            },
        }
    }

    fn other_kind(found: &TypeMeta) -> Error {
        let expected = TypeMeta::of::<K>();
        Error::new(format!(
            "the admission request is for {found}, but this plugin reviews {expected}: \
             the Plugin's admission rules must match only {expected}"
        ))
    }

    /// The object as the API server sent it (see `json`).
    fn sent(&self) -> Option<Value> {
        #[derive(serde::Deserialize)]
        struct Sent {
            object: Option<Value>,
        }
        serde_json::from_str::<Sent>(&self.json).ok()?.object
    }

    /// What the request does: create, update, delete or connect.
    pub fn operation(&self) -> &Operation {
        &self.review.operation
    }

    /// The object as it would be stored: the new object of a create or an
    /// update; `None` for a delete.
    pub fn object(&self) -> Option<&K> {
        self.review.object.as_ref()
    }

    /// The object as it is stored now: set for an update and a delete.
    pub fn old_object(&self) -> Option<&K> {
        self.review.old_object.as_ref()
    }

    /// Who made the request: username, groups, uid and extra attributes.
    pub fn user(&self) -> &UserInfo {
        &self.review.user_info
    }

    /// Whether nothing will be stored (`kubectl --dry-run=server`): a
    /// review must then have no side effects outside the object.
    pub fn dry_run(&self) -> bool {
        self.review.dry_run
    }

    /// The namespace of the request; `None` for cluster-scoped objects.
    pub fn namespace(&self) -> Option<&str> {
        self.review.namespace.as_deref()
    }

    /// The object's name; empty on a create whose object has only a
    /// `generateName`, since the API server has not named it yet.
    pub fn name(&self) -> &str {
        &self.review.name
    }

    /// Where the object is (or will be).
    pub fn reference(&self) -> ObjectRef {
        ObjectRef {
            namespace: self.review.namespace.clone(),
            name: self.review.name.clone(),
        }
    }

    /// The whole request as kube describes it: its uid, resource,
    /// subresource, the original request's kind and the operation's
    /// options.
    pub fn admission_request(&self) -> &AdmissionRequest<K> {
        &self.review
    }
}

/// The `kind` a request names, as `TypeMeta` spells it; `None` when it
/// names none, and decoding then says what is missing.
fn kind_of(request: &Value) -> Option<TypeMeta> {
    let kind = request.get("kind")?;
    let field = |name| kind.get(name).and_then(Value::as_str);
    let (group, version) = (field("group")?, field("version")?);
    Some(TypeMeta {
        api_version: if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        },
        kind: field("kind")?.to_owned(),
    })
}

// === impl Verdict ===

/// What a plugin decided about one request.
///
/// ```
/// use leasehold_sdk::admission::Verdict;
///
/// let allowed = Verdict::allow().warn("spec.replicas above 10 will be capped");
/// assert!(allowed.allowed);
/// let denied = Verdict::deny("spec.replicas must be positive").with_code(422);
/// assert_eq!((denied.allowed, denied.code), (false, Some(422)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Verdict {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Why it was denied, shown to whoever made the request.
    pub message: Option<String>,
    /// The HTTP status of a denial; 403 when `None`.
    pub code: Option<u16>,
    /// Warnings shown to the client (kubectl prints them), allowed or not.
    pub warnings: Vec<String>,
    /// From `mutate` only: the JSON patch the API server applies to the
    /// object.
    pub patch: Option<json_patch::Patch>,
}

impl Verdict {
    /// The request may proceed unchanged.
    ///
    /// ```
    /// assert!(leasehold_sdk::admission::Verdict::allow().allowed);
    /// ```
    pub fn allow() -> Self {
        Self {
            allowed: true,
            message: None,
            code: None,
            warnings: Vec::new(),
            patch: None,
        }
    }

    /// The request is refused, and whoever made it reads `message`: say
    /// what is wrong and how to fix it.
    ///
    /// ```
    /// let denied = leasehold_sdk::admission::Verdict::deny("spec.name must not be empty");
    /// assert_eq!(denied.message.as_deref(), Some("spec.name must not be empty"));
    /// ```
    pub fn deny(message: impl Into<String>) -> Self {
        Self {
            allowed: false,
            message: Some(message.into()),
            ..Self::allow()
        }
    }

    /// The HTTP status of a denial instead of 403 (for example 422 for an
    /// invalid object).
    ///
    /// ```
    /// let denied = leasehold_sdk::admission::Verdict::deny("invalid").with_code(422);
    /// assert_eq!(denied.code, Some(422));
    /// ```
    pub fn with_code(mut self, code: u16) -> Self {
        self.code = Some(code);
        self
    }

    /// Adds a warning for the client, whatever the verdict.
    ///
    /// ```
    /// let verdict = leasehold_sdk::admission::Verdict::allow().warn("deprecated field");
    /// assert_eq!(verdict.warnings, ["deprecated field"]);
    /// ```
    pub fn warn(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }

    /// Changes the object with `patch` (RFC 6902), from `mutate` only; an
    /// empty patch is no change. [`Verdict::patched`] computes the patch
    /// from a changed object.
    ///
    /// ```
    /// use leasehold_sdk::admission::Verdict;
    /// let patch = serde_json::from_value(serde_json::json!([
    ///     { "op": "add", "path": "/metadata/labels/tier", "value": "gold" }
    /// ])).unwrap();
    /// assert!(Verdict::allow().with_patch(patch).patch.is_some());
    /// ```
    pub fn with_patch(mut self, patch: json_patch::Patch) -> Self {
        self.patch = (!patch.0.is_empty()).then_some(patch);
        self
    }

    /// Allows the request with the object changed into `changed`: the
    /// JSON patch from the object the API server sent to `changed`.
    ///
    /// The patch is computed against the object as sent, not as `K`
    /// decodes it, so fields `K` does not know are kept and every path
    /// exists where the API server applies it. Only what differs between
    /// the request's object as `K` and `changed` is patched; a `None` that
    /// `K` serializes as `null` removes the field, and a list that differs
    /// is replaced whole. Fails on a delete, which has no object to change.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use leasehold_sdk::admission::{Request, Verdict};
    ///
    /// let json = serde_json::json!({
    ///     "uid": "1", "operation": "CREATE", "userInfo": {}, "name": "a", "namespace": "default",
    ///     "kind": { "group": "", "version": "v1", "kind": "ConfigMap" },
    ///     "resource": { "group": "", "version": "v1", "resource": "configmaps" },
    ///     "object": { "metadata": { "name": "a" }, "unknownToTheType": true },
    /// });
    /// let request = Request::<ConfigMap>::from_json(&json.to_string()).unwrap();
    /// let mut changed = request.object().unwrap().clone();
    /// changed.data = Some([("mode".to_string(), "fast".to_string())].into());
    ///
    /// let verdict = Verdict::patched(&request, &changed).unwrap();
    /// assert_eq!(
    ///     serde_json::to_value(verdict.patch.unwrap()).unwrap(),
    ///     serde_json::json!([{ "op": "add", "path": "/data", "value": { "mode": "fast" } }]),
    /// );
    /// ```
    pub fn patched<K: Object>(request: &Request<K>, changed: &K) -> Result<Self> {
        let (Some(sent), Some(decoded)) = (request.sent(), request.object()) else {
            return Err(Error::new(format!(
                "a {:?} request has no object to patch",
                request.operation()
            )));
        };
        let encode = |object: &K| {
            serde_json::to_value(object).map_err(|error| {
                Error::new(format!(
                    "cannot encode {} as json: {error}",
                    TypeMeta::of::<K>()
                ))
            })
        };
        let mut target = sent.clone();
        json_patch::merge(
            &mut target,
            &merge_diff(&encode(decoded)?, &encode(changed)?),
        );
        Ok(Self::allow().with_patch(json_patch::diff(&sent, &target)))
    }
}

/// The JSON merge patch (RFC 7386) that turns `from` into `to`: only the
/// members that differ, `null` for those `to` leaves out.
fn merge_diff(from: &Value, to: &Value) -> Value {
    let (Value::Object(from), Value::Object(to)) = (from, to) else {
        return to.clone();
    };
    let mut patch = Map::new();
    for (key, old) in from {
        match to.get(key) {
            None => {
                patch.insert(key.clone(), Value::Null);
            }
            Some(new) if new != old => {
                patch.insert(key.clone(), merge_diff(old, new));
            }
            Some(_) => {}
        }
    }
    for (key, new) in to {
        if !from.contains_key(key) {
            patch.insert(key.clone(), new.clone());
        }
    }
    Value::Object(patch)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    use super::*;

    fn review(operation: &str, object: Value, old_object: Value) -> String {
        json!({
            "uid": "1",
            "kind": { "group": "", "version": "v1", "kind": "ConfigMap" },
            "resource": { "group": "", "version": "v1", "resource": "configmaps" },
            "name": "a",
            "namespace": "default",
            "operation": operation,
            "userInfo": { "username": "jane", "groups": ["devs"] },
            "object": object,
            "oldObject": old_object,
            "dryRun": true,
        })
        .to_string()
    }

    fn patch_of(verdict: &Verdict) -> Value {
        serde_json::to_value(verdict.patch.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn a_request_gives_its_operation_objects_user_and_place() {
        let request = Request::<ConfigMap>::from_json(&review(
            "UPDATE",
            json!({ "metadata": { "name": "a" }, "data": { "v": "2" } }),
            json!({ "metadata": { "name": "a" }, "data": { "v": "1" } }),
        ))
        .unwrap();

        assert_eq!(request.operation(), &Operation::Update);
        assert_eq!(request.object().unwrap().data.as_ref().unwrap()["v"], "2");
        assert_eq!(
            request.old_object().unwrap().data.as_ref().unwrap()["v"],
            "1"
        );
        assert_eq!(
            request.user().groups.as_deref(),
            Some(&["devs".to_string()][..])
        );
        assert!(request.dry_run());
        assert_eq!(request.reference(), ObjectRef::namespaced("default", "a"));
    }

    #[test]
    fn a_delete_has_only_the_old_object_and_nothing_to_patch() {
        let request = Request::<ConfigMap>::from_json(&review(
            "DELETE",
            Value::Null,
            json!({ "metadata": { "name": "a" } }),
        ))
        .unwrap();

        assert!(request.object().is_none() && request.old_object().is_some());
        let error = Verdict::patched(&request, &ConfigMap::default()).unwrap_err();
        assert_eq!(error.message, "a Delete request has no object to patch");
    }

    #[test]
    fn a_request_for_another_kind_is_refused_by_name() {
        let error = Request::<Deployment>::from_json(&review("CREATE", json!({}), Value::Null))
            .unwrap_err();
        assert_eq!(
            error.message,
            "the admission request is for v1/ConfigMap, but this plugin reviews apps/v1/Deployment: \
             the Plugin's admission rules must match only apps/v1/Deployment"
        );
    }

    #[test]
    fn an_object_that_does_not_decode_is_refused_with_serdes_reason() {
        let error = Request::<ConfigMap>::from_json(&review(
            "CREATE",
            json!({ "metadata": { "name": "a" }, "data": { "v": 1 } }),
            Value::Null,
        ))
        .unwrap_err();
        assert!(
            error
                .message
                .starts_with("cannot decode the admission request as a review of v1/ConfigMap: invalid type: integer `1`"),
            "{error}"
        );
    }

    #[test]
    fn a_request_without_an_operation_is_refused_with_what_is_missing() {
        let error = Request::<ConfigMap>::from_json(r#"{"uid":"1"}"#).unwrap_err();
        assert!(error.message.contains("missing field"), "{error}");
    }

    #[test]
    fn a_patch_keeps_fields_the_type_does_not_know_and_adds_under_missing_parents() {
        let request = Request::<ConfigMap>::from_json(&review(
            "CREATE",
            json!({ "metadata": { "name": "a", "future": 1 }, "data": { "keep": "1" } }),
            Value::Null,
        ))
        .unwrap();
        let mut changed = request.object().unwrap().clone();
        changed.metadata.labels = Some([("tier".to_string(), "gold".to_string())].into());
        changed.data.as_mut().unwrap().remove("keep");

        let verdict = Verdict::patched(&request, &changed).unwrap();

        assert!(verdict.allowed);
        assert_eq!(
            patch_of(&verdict),
            json!([
                { "op": "remove", "path": "/data/keep" },
                { "op": "add", "path": "/metadata/labels", "value": { "tier": "gold" } },
            ])
        );
    }

    /// A custom resource whose `None` serializes as `null` (no
    /// `skip_serializing_if`), as many hand-written specs do.
    #[derive(
        kube_derive::CustomResource, Clone, Debug, Default, serde::Deserialize, serde::Serialize,
    )]
    #[kube(
        group = "example.dev",
        version = "v1",
        kind = "Tuning",
        namespaced,
        schema = "disabled",
        crates(kube_core = "::kube_core")
    )]
    struct TuningSpec {
        name: String,
        mode: Option<String>,
    }

    #[test]
    fn a_field_the_type_writes_as_null_is_added_not_replaced() {
        // A diff of the decoded object would say `replace /spec/mode`,
        // which the API server cannot apply to an object without it.
        let request = json!({
            "uid": "1", "operation": "CREATE", "userInfo": {}, "name": "a",
            "kind": { "group": "example.dev", "version": "v1", "kind": "Tuning" },
            "resource": { "group": "example.dev", "version": "v1", "resource": "tunings" },
            "object": {
                "apiVersion": "example.dev/v1", "kind": "Tuning",
                "metadata": { "name": "a" }, "spec": { "name": "x" },
            },
        });
        let request = Request::<Tuning>::from_json(&request.to_string()).unwrap();
        let mut changed = request.object().unwrap().clone();
        changed.spec.mode = Some("fast".into());

        let verdict = Verdict::patched(&request, &changed).unwrap();

        assert_eq!(
            patch_of(&verdict),
            json!([{ "op": "add", "path": "/spec/mode", "value": "fast" }])
        );
    }

    #[test]
    fn an_unchanged_object_is_allowed_without_a_patch() {
        let request = Request::<ConfigMap>::from_json(&review(
            "CREATE",
            json!({ "metadata": { "name": "a" } }),
            Value::Null,
        ))
        .unwrap();
        let same = request.object().unwrap().clone();
        assert_eq!(Verdict::patched(&request, &same).unwrap(), Verdict::allow());
    }

    #[test]
    fn the_merge_diff_lists_only_what_changed() {
        assert_eq!(
            merge_diff(
                &json!({ "a": 1, "b": { "c": 2, "d": 3 }, "e": [1] }),
                &json!({ "a": 1, "b": { "c": 2 }, "e": [1, 2], "f": null })
            ),
            json!({ "b": { "d": null }, "e": [1, 2], "f": null })
        );
    }
}
