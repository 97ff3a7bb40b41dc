//! Admission reviews in tests: the request the API server would send about
//! an object ([`ReviewRequest`]), and what a verdict does to the object
//! ([`Reviewed`]).

use serde_json::{Value, json};

use crate::admission::{self, Verdict};
use crate::object::Object;

/// The `uid` of every built request; a real one is unique per review.
const FAKE_REVIEW_UID: &str = "00000000-0000-0000-0000-00000000review";

/// Who makes a built request unless [`ReviewRequest::user`] says otherwise:
/// the administrator a local cluster's kubeconfig names.
const DEFAULT_USER: &str = "kubernetes-admin";

/// The groups of [`DEFAULT_USER`].
const DEFAULT_GROUPS: &[&str] = &["system:masters", "system:authenticated"];

/// The `request` of an AdmissionReview about an object, as the API server
/// sends it (and the host passes it on): kind, resource, name, namespace,
/// operation, user, the object and the old object.
///
/// It is the JSON text itself ([`ReviewRequest::as_ref`]), so it goes
/// wherever a request is taken, and a test can also hand over JSON of its
/// own.
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use leasehold_sdk::testing::ReviewRequest;
///
/// let mut settings = ConfigMap::default();
/// settings.metadata.namespace = Some("default".into());
/// settings.metadata.name = Some("settings".into());
/// let request = ReviewRequest::create(&settings).user("jane", &["devs"]).dry_run();
///
/// let json: serde_json::Value = serde_json::from_str(request.as_ref()).unwrap();
/// assert_eq!(json["operation"], "CREATE");
/// assert_eq!(json["resource"]["resource"], "configmaps");
/// assert_eq!(json["userInfo"]["username"], "jane");
/// assert_eq!(json["object"]["kind"], "ConfigMap");
/// assert_eq!(json["dryRun"], true);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewRequest {
    request: Value,
    /// `request` as text, kept current by every builder method.
    json: String,
}

impl ReviewRequest {
    /// A request to create `object`.
    ///
    /// ```
    /// # use k8s_openapi::api::core::v1::ConfigMap;
    /// let request = leasehold_sdk::testing::ReviewRequest::create(&ConfigMap::default());
    /// assert!(request.as_ref().contains(r#""operation":"CREATE""#));
    /// ```
    pub fn create<K: Object>(object: &K) -> Self {
        Self::new("CREATE", "CreateOptions", Some(object), None)
    }

    /// A request to change `old` into `new`.
    ///
    /// ```
    /// # use k8s_openapi::api::core::v1::ConfigMap;
    /// let old = ConfigMap::default();
    /// let request = leasehold_sdk::testing::ReviewRequest::update(&old, &old);
    /// assert!(request.as_ref().contains(r#""operation":"UPDATE""#));
    /// ```
    pub fn update<K: Object>(old: &K, new: &K) -> Self {
        Self::new("UPDATE", "UpdateOptions", Some(new), Some(old))
    }

    /// A request to delete `old`; it carries no new object.
    ///
    /// ```
    /// # use k8s_openapi::api::core::v1::ConfigMap;
    /// let request = leasehold_sdk::testing::ReviewRequest::delete(&ConfigMap::default());
    /// assert!(request.as_ref().contains(r#""object":null"#));
    /// ```
    pub fn delete<K: Object>(old: &K) -> Self {
        Self::new("DELETE", "DeleteOptions", None, Some(old))
    }

    fn new<K: Object>(
        operation: &str,
        options: &str,
        object: Option<&K>,
        old_object: Option<&K>,
    ) -> Self {
        let meta = object
            .or(old_object)
            .map(|subject| subject.meta().clone())
            .unwrap_or_default();
        let kind = json!({
            "group": K::group(&()),
            "version": K::version(&()),
            "kind": K::kind(&()),
        });
        let resource = json!({
            "group": K::group(&()),
            "version": K::version(&()),
            "resource": K::plural(&()),
        });
        let encode = |object: Option<&K>| {
            object.map_or(Value::Null, |object| {
                serde_json::to_value(object).expect("object serializes to json")
            })
        };
        let request = json!({
            "uid": FAKE_REVIEW_UID,
            "kind": kind,
            "resource": resource,
            "requestKind": kind,
            "requestResource": resource,
            "name": meta.name.unwrap_or_default(),
            "namespace": meta.namespace,
            "operation": operation,
            "userInfo": { "username": DEFAULT_USER, "groups": DEFAULT_GROUPS },
            "object": encode(object),
            "oldObject": encode(old_object),
            "dryRun": false,
            "options": { "apiVersion": "meta.k8s.io/v1", "kind": options },
        });
        Self::from_value(request)
    }

    fn from_value(request: Value) -> Self {
        let json = request.to_string();
        Self { request, json }
    }

    /// Made by `username`, a member of `groups`.
    ///
    /// ```
    /// # use k8s_openapi::api::core::v1::ConfigMap;
    /// use leasehold_sdk::testing::ReviewRequest;
    /// let request = ReviewRequest::create(&ConfigMap::default()).user("system:serviceaccount:ci:deployer", &[]);
    /// assert!(request.as_ref().contains("system:serviceaccount:ci:deployer"));
    /// ```
    #[must_use]
    pub fn user(mut self, username: &str, groups: &[&str]) -> Self {
        self.request["userInfo"] = json!({ "username": username, "groups": groups });
        Self::from_value(self.request)
    }

    /// Made with `--dry-run=server`: nothing will be stored.
    ///
    /// ```
    /// # use k8s_openapi::api::core::v1::ConfigMap;
    /// use leasehold_sdk::testing::ReviewRequest;
    /// assert!(ReviewRequest::create(&ConfigMap::default()).dry_run().as_ref().contains(r#""dryRun":true"#));
    /// ```
    #[must_use]
    pub fn dry_run(mut self) -> Self {
        self.request["dryRun"] = true.into();
        Self::from_value(self.request)
    }
}

impl AsRef<str> for ReviewRequest {
    fn as_ref(&self) -> &str {
        &self.json
    }
}

/// A verdict, and the object as the API server goes on with it: with the
/// verdict's patch applied when it allows the request.
///
/// ```
/// use leasehold_sdk::admission::Verdict;
/// use leasehold_sdk::testing::{ReviewRequest, Reviewed};
/// use k8s_openapi::api::core::v1::ConfigMap;
///
/// let request = ReviewRequest::create(&ConfigMap::default());
/// let patch = serde_json::from_value(serde_json::json!([
///     { "op": "add", "path": "/data", "value": { "mode": "fast" } }
/// ])).unwrap();
/// let reviewed = Reviewed::new(request.as_ref(), Verdict::allow().with_patch(patch)).unwrap();
/// let object: ConfigMap = reviewed.object().unwrap();
/// assert_eq!(object.data.unwrap()["mode"], "fast");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Reviewed {
    /// What the plugin decided.
    pub verdict: Verdict,
    /// The request's object, patched when the verdict allows it with a
    /// patch; `None` for a delete.
    pub patched: Option<Value>,
}

impl Reviewed {
    /// Applies `verdict` to the object of `request` (the AdmissionReview's
    /// `request` as JSON), as the API server would.
    ///
    /// Fails when the patch does not apply, which the API server would
    /// refuse too.
    pub fn new(request: &str, verdict: Verdict) -> admission::Result<Self> {
        let request: Value = serde_json::from_str(request)
            .map_err(|error| admission::Error::new(format!("the request is not JSON: {error}")))?;
        let mut patched = request.get("object").filter(|o| !o.is_null()).cloned();
        if let (true, Some(patch), Some(object)) = (verdict.allowed, &verdict.patch, &mut patched) {
            json_patch::patch(object, patch).map_err(|error| {
                admission::Error::new(format!(
                    "the API server cannot apply the verdict's patch to the object: {error}"
                ))
            })?;
        }
        Ok(Self { verdict, patched })
    }

    /// The patched object as `K`; `None` for a delete.
    ///
    /// # Panics
    ///
    /// When it is not a `K`: the test asked for the wrong type.
    pub fn object<K: Object>(&self) -> Option<K> {
        self.patched.clone().map(|object| {
            serde_json::from_value(object).unwrap_or_else(|error| {
                panic!("the patched object is not a {}: {error}", K::kind(&()))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;

    fn settings() -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": { "namespace": "team-a", "name": "settings" },
            "data": { "mode": "slow" },
        }))
        .unwrap()
    }

    fn patch(operations: Value) -> json_patch::Patch {
        serde_json::from_value(operations).unwrap()
    }

    #[test]
    fn a_built_request_decodes_as_the_sdks_typed_request() {
        let old = settings();
        let mut new = settings();
        new.data = None;

        let request = ReviewRequest::update(&old, &new).user("jane", &["devs"]);
        let decoded = admission::Request::<ConfigMap>::from_json(request.as_ref()).unwrap();

        assert_eq!(decoded.operation(), &admission::Operation::Update);
        assert_eq!(
            (decoded.namespace(), decoded.name()),
            (Some("team-a"), "settings")
        );
        assert_eq!(decoded.object().unwrap().data, None);
        assert_eq!(decoded.old_object().unwrap(), &old);
        assert_eq!(decoded.user().username.as_deref(), Some("jane"));
        assert!(!decoded.dry_run());
    }

    #[test]
    fn a_delete_names_the_old_object() {
        let request = ReviewRequest::delete(&settings());
        let decoded = admission::Request::<ConfigMap>::from_json(request.as_ref()).unwrap();
        assert_eq!(decoded.name(), "settings");
        assert!(decoded.object().is_none());
    }

    #[test]
    fn an_allowed_patch_changes_the_object_and_a_denied_one_does_not() {
        let request = ReviewRequest::create(&settings());
        let change = patch(json!([{ "op": "replace", "path": "/data/mode", "value": "fast" }]));

        let allowed = Reviewed::new(
            request.as_ref(),
            Verdict::allow().with_patch(change.clone()),
        )
        .unwrap();
        let denied = Reviewed::new(
            request.as_ref(),
            Verdict {
                patch: Some(change),
                ..Verdict::deny("no")
            },
        )
        .unwrap();

        let mode = |reviewed: &Reviewed| {
            reviewed.object::<ConfigMap>().unwrap().data.unwrap()["mode"].clone()
        };
        assert_eq!(mode(&allowed), "fast");
        assert_eq!(mode(&denied), "slow");
    }

    #[test]
    fn a_patch_that_does_not_apply_is_refused_as_the_api_server_would() {
        let request = ReviewRequest::create(&settings());
        let error = Reviewed::new(
            request.as_ref(),
            Verdict::allow().with_patch(patch(json!([{ "op": "remove", "path": "/spec" }]))),
        )
        .unwrap_err();
        assert!(
            error
                .message
                .starts_with("the API server cannot apply the verdict's patch to the object: "),
            "{error}"
        );
    }
}
