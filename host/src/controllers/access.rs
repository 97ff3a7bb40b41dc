//! Whether a plugin's ServiceAccount may watch what the plugin registered,
//! asked before its controller starts.
//!
//! Without this, a missing `list` or `watch` grant shows only as a watch
//! that keeps failing in the background while the Plugin looks Running. The
//! API server answers a SelfSubjectAccessReview sent as the plugin's
//! account (every authenticated user may send one), so the answer is the
//! same RBAC the watch will meet; a denial stops the start with a status
//! that names the account, the verb and the resource, and the start is
//! retried with backoff, so granting the rule is enough to recover.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::{ApiResource, PostParams};
use tracing::warn;

/// What a controller's watch needs of each resource.
const WATCH_VERBS: [&str; 2] = ["list", "watch"];

/// A verb the plugin's account lacks on a resource it registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "ServiceAccount {account} may not {verb} {resource} {scope}; grant it list and watch on what the plugin registers"
)]
pub struct Denied {
    pub account: String,
    pub verb: &'static str,
    /// `plural.group`, or the plural alone for the core group.
    pub resource: String,
    /// "in all namespaces" or "in namespace NS".
    pub scope: String,
}

/// Checks `list` and `watch` on every resource, as the account behind
/// `client` (an impersonating client), all at once: a plugin's start (and
/// so a hot reload) waits one round trip, not one per question. A review
/// that cannot be made is logged and passed: the watch itself will then
/// say what is wrong.
pub async fn may_watch(
    client: &kube::Client,
    account: &str,
    resources: &[ApiResource],
    namespace: Option<&str>,
) -> Result<(), Denied> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let questions = resources
        .iter()
        .flat_map(|resource| WATCH_VERBS.map(|verb| (resource, verb)));
    let answers = futures::future::join_all(questions.map(|(resource, verb)| {
        let reviews = &reviews;
        async move {
            let asked = reviews
                .create(&PostParams::default(), &review(resource, verb, namespace))
                .await;
            (resource, verb, asked)
        }
    }))
    .await;
    for (resource, verb, asked) in answers {
        match asked {
            Ok(answer) if answer.status.as_ref().is_some_and(|status| status.allowed) => {}
            Ok(_) => return Err(denied(account, resource, verb, namespace)),
            Err(error) => {
                warn!(%error, verb, resource = %resource.plural, "cannot ask whether the plugin may watch; starting anyway");
            }
        }
    }
    Ok(())
}

fn review(resource: &ApiResource, verb: &str, namespace: Option<&str>) -> SelfSubjectAccessReview {
    SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(resource.group.clone()),
                resource: Some(resource.plural.clone()),
                verb: Some(verb.to_owned()),
                namespace: namespace.map(str::to_owned),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    }
}

fn denied(
    account: &str,
    resource: &ApiResource,
    verb: &'static str,
    namespace: Option<&str>,
) -> Denied {
    Denied {
        account: account.to_owned(),
        verb,
        resource: if resource.group.is_empty() {
            resource.plural.clone()
        } else {
            format!("{}.{}", resource.plural, resource.group)
        },
        scope: match namespace {
            Some(namespace) => format!("in namespace {namespace}"),
            None => "in all namespaces".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(group: &str, plural: &str) -> ApiResource {
        ApiResource {
            group: group.to_owned(),
            version: "v1".to_owned(),
            api_version: if group.is_empty() {
                "v1".to_owned()
            } else {
                format!("{group}/v1")
            },
            kind: "Kind".to_owned(),
            plural: plural.to_owned(),
        }
    }

    #[test]
    fn a_denial_names_the_account_verb_resource_and_scope() {
        let denial = denied("plugins/blind", &resource("", "configmaps"), "watch", None);
        assert_eq!(
            denial.to_string(),
            "ServiceAccount plugins/blind may not watch configmaps in all namespaces; \
             grant it list and watch on what the plugin registers"
        );
    }

    #[test]
    fn a_grouped_resource_is_named_with_its_group_and_a_namespace_scope_with_its_namespace() {
        let denial = denied(
            "team/app",
            &resource("example.com", "greetings"),
            "list",
            Some("team"),
        );
        assert_eq!(denial.resource, "greetings.example.com");
        assert_eq!(denial.scope, "in namespace team");
    }

    #[test]
    fn a_review_asks_about_the_resource_in_the_registered_scope() {
        let asked = review(&resource("apps", "deployments"), "list", Some("team"));
        let attributes = asked.spec.resource_attributes.unwrap();
        assert_eq!(attributes.group.as_deref(), Some("apps"));
        assert_eq!(attributes.resource.as_deref(), Some("deployments"));
        assert_eq!(attributes.verb.as_deref(), Some("list"));
        assert_eq!(attributes.namespace.as_deref(), Some("team"));
        let cluster_wide = review(&resource("", "configmaps"), "watch", None);
        assert_eq!(
            cluster_wide.spec.resource_attributes.unwrap().namespace,
            None
        );
    }
}
