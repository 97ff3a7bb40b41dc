//! A Plugin's `spec.admission`, checked: what the webhook configurations
//! will say, or the field that is wrong and why.
//!
//! The CRD's schema already bounds `timeoutSeconds` and asks for at least
//! one webhook; these checks are the ones a schema cannot make, and they
//! run on every replica (so a spec a newer API server let through is still
//! refused with a reason on the Plugin's status).

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::RuleWithOperations;

use crate::plugins::InvalidField;
use crate::plugins::resource::{AdmissionSpec, FailurePolicy, WebhookSpec};
use crate::runtime::Review;

/// The API server's default `timeoutSeconds`.
const DEFAULT_TIMEOUT_SECONDS: i32 = 10;

/// The operations a rule may name.
const OPERATIONS: [&str; 5] = ["CREATE", "UPDATE", "DELETE", "CONNECT", "*"];

/// The group whose objects no plugin may review: a plugin denying Plugin
/// updates could refuse the very fix that would stop it.
const OWN_GROUP: &str = "leasehold.dev";

/// A Plugin's admission webhooks, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Declaration {
    pub mutating: Option<Webhook>,
    pub validating: Option<Webhook>,
}

/// One webhook, checked, with its defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Webhook {
    pub spec: WebhookSpec,
    pub failure_policy: FailurePolicy,
    /// How long the API server waits for an answer.
    pub timeout: Duration,
}

impl Declaration {
    /// Checks `spec`; the first problem names its field.
    pub fn of(spec: &AdmissionSpec) -> Result<Self, InvalidField> {
        if spec.mutating.is_none() && spec.validating.is_none() {
            return Err(InvalidField::new(
                "admission",
                "set mutating, validating or both",
            ));
        }
        Ok(Self {
            mutating: spec
                .mutating
                .as_ref()
                .map(|webhook| Webhook::of(webhook, "admission.mutating"))
                .transpose()?,
            validating: spec
                .validating
                .as_ref()
                .map(|webhook| Webhook::of(webhook, "admission.validating"))
                .transpose()?,
        })
    }

    /// The webhook that asks for `review`, if the Plugin declares one.
    pub fn webhook(&self, review: Review) -> Option<&Webhook> {
        match review {
            Review::Mutate => self.mutating.as_ref(),
            Review::Validate => self.validating.as_ref(),
        }
    }
}

impl Webhook {
    fn of(spec: &WebhookSpec, field: &'static str) -> Result<Self, InvalidField> {
        let invalid = |reason: String| InvalidField::new(field, reason);
        if spec.rules.is_empty() {
            return Err(invalid(
                "rules: name at least one rule (operations, apiGroups, apiVersions, resources)"
                    .into(),
            ));
        }
        for (index, rule) in spec.rules.iter().enumerate() {
            check_rule(rule).map_err(|reason| invalid(format!("rules[{index}]: {reason}")))?;
        }
        let seconds = spec.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
        if !(1..=30).contains(&seconds) {
            return Err(invalid(format!(
                "timeoutSeconds: {seconds} is outside 1–30, what the API server allows"
            )));
        }
        Ok(Self {
            spec: spec.clone(),
            failure_policy: spec.failure_policy.unwrap_or_default(),
            timeout: Duration::from_secs(seconds.unsigned_abs().into()),
        })
    }
}

fn check_rule(rule: &RuleWithOperations) -> Result<(), String> {
    let operations = rule.operations.as_deref().unwrap_or_default();
    if operations.is_empty() {
        return Err("operations: name at least one of CREATE, UPDATE, DELETE, CONNECT or *".into());
    }
    if let Some(unknown) = operations
        .iter()
        .find(|operation| !OPERATIONS.contains(&operation.as_str()))
    {
        return Err(format!(
            "operations: {unknown:?} is not one of CREATE, UPDATE, DELETE, CONNECT or *"
        ));
    }
    for (name, values) in [
        ("apiGroups", &rule.api_groups),
        ("apiVersions", &rule.api_versions),
        ("resources", &rule.resources),
    ] {
        if values.as_deref().unwrap_or_default().is_empty() {
            return Err(format!("{name}: name at least one (\"*\" for all)"));
        }
    }
    if rule
        .api_groups
        .iter()
        .flatten()
        .any(|group| group == OWN_GROUP)
    {
        return Err(format!(
            "apiGroups: a plugin may not review {OWN_GROUP} objects (it could refuse the change that fixes it)"
        ));
    }
    if let Some(scope) = &rule.scope
        && !matches!(scope.as_str(), "Cluster" | "Namespaced" | "*")
    {
        return Err(format!(
            "scope: {scope:?} is not one of Cluster, Namespaced or *"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(value: serde_json::Value) -> AdmissionSpec {
        serde_json::from_value(value).unwrap()
    }

    fn greetings() -> serde_json::Value {
        json!({"operations": ["CREATE", "UPDATE"], "apiGroups": ["examples.leasehold.dev"],
               "apiVersions": ["v1alpha1"], "resources": ["greetings"]})
    }

    fn refusal(value: serde_json::Value) -> String {
        let error = Declaration::of(&spec(value)).unwrap_err();
        format!("{}: {}", error.field, error.reason)
    }

    #[test]
    fn a_webhook_takes_the_api_servers_defaults() {
        let declared =
            Declaration::of(&spec(json!({"validating": {"rules": [greetings()]}}))).unwrap();
        let validating = declared.webhook(Review::Validate).unwrap();
        assert_eq!(validating.failure_policy, FailurePolicy::Fail);
        assert_eq!(validating.timeout, Duration::from_secs(10));
        assert!(declared.webhook(Review::Mutate).is_none());
    }

    #[test]
    fn a_declaration_without_webhooks_or_rules_is_refused() {
        assert_eq!(
            refusal(json!({})),
            "admission: set mutating, validating or both"
        );
        assert!(
            refusal(json!({"mutating": {"rules": []}}))
                .starts_with("admission.mutating: rules: name at least one rule")
        );
    }

    #[test]
    fn a_rule_with_an_unknown_operation_or_no_resources_names_them() {
        let mut rule = greetings();
        rule["operations"] = json!(["CREATE", "PATCH"]);
        assert_eq!(
            refusal(json!({"validating": {"rules": [greetings(), rule]}})),
            "admission.validating: rules[1]: operations: \"PATCH\" is not one of CREATE, UPDATE, DELETE, CONNECT or *"
        );
        let mut rule = greetings();
        rule["resources"] = json!([]);
        assert_eq!(
            refusal(json!({"validating": {"rules": [rule]}})),
            "admission.validating: rules[0]: resources: name at least one (\"*\" for all)"
        );
        let mut rule = greetings();
        rule["scope"] = json!("Everywhere");
        assert!(refusal(json!({"mutating": {"rules": [rule]}})).contains("scope: \"Everywhere\""));
    }

    #[test]
    fn a_plugin_may_not_review_plugins() {
        let mut rule = greetings();
        rule["apiGroups"] = json!(["leasehold.dev"]);
        assert!(
            refusal(json!({"validating": {"rules": [rule]}}))
                .contains("may not review leasehold.dev objects")
        );
    }

    #[test]
    fn a_timeout_the_api_server_would_refuse_is_refused_here() {
        assert!(
            refusal(json!({"validating": {"rules": [greetings()], "timeoutSeconds": 31}}))
                .contains("timeoutSeconds: 31 is outside 1–30")
        );
    }
}
