//! Who is calling and what they may do, decided by the Kubernetes API server
//! the way aggregated API servers delegate: a TokenReview turns the bearer
//! token into a user, and a SubjectAccessReview asks RBAC (or whatever
//! authorizer the cluster runs) whether that user may act on the resource.
//!
//! Answers are remembered for [`CACHE_TTL`]: an accepted token and an
//! allowed action are not reviewed again within that time. Rejections are
//! not cached, so a token just issued or a RoleBinding just granted works on
//! the next request; a revoked grant stops working within the TTL.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use kube::api::PostParams;
use kube::{Api, Client};
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::{ApiError, ErrorChain};

/// Long enough to absorb a burst of requests from one client, short enough
/// that a revoked token or RoleBinding stops working quickly (the API
/// server's own webhook authenticator caches for 2 minutes).
pub const CACHE_TTL: Duration = Duration::from_secs(10);

/// Tokens and decisions remembered at most; a few hundred callers in ten
/// seconds is already a busy API.
const CACHE_CAPACITY: usize = 1024;

/// A review the API server has not answered by then is answered with 503,
/// rather than holding the caller's request open.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// The caller of a request, as the API server's TokenReview described it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
    /// The token's digest: decisions are cached per token, never per raw
    /// token kept in memory.
    token: TokenKey,
}

type TokenKey = [u8; 32];

/// One thing a caller wants to do, in SubjectAccessReview terms.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Action {
    pub verb: &'static str,
    /// The API group (`""` for the core group).
    pub group: &'static str,
    pub resource: &'static str,
    /// `None` for a cluster-wide request.
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// Reviews callers through the host's own Kubernetes client. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    tokens: Mutex<super::cache::TtlCache<TokenKey, Caller>>,
    decisions: Mutex<super::cache::TtlCache<(TokenKey, Action), ()>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

// === impl Authenticator ===

impl Authenticator {
    /// Reviews through `client`, which must be allowed to create
    /// `tokenreviews` and `subjectaccessreviews` (the chart's ClusterRole).
    pub fn new(client: Client) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                tokens: Mutex::new(super::cache::TtlCache::new(CACHE_CAPACITY, CACHE_TTL)),
                decisions: Mutex::new(super::cache::TtlCache::new(CACHE_CAPACITY, CACHE_TTL)),
            }),
        }
    }

    /// The caller named by the request's bearer token. 401 without a token
    /// or with one the API server rejects; 503 when it cannot be asked.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let token = bearer_token(headers)?;
        let key: TokenKey = Sha256::digest(token.as_bytes()).into();
        if let Some(caller) = lock(&self.inner.tokens).get(&key, Instant::now()) {
            return Ok(caller);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                // The API server's own audiences: tokens meant for it are
                // the ones kubectl and ServiceAccounts carry.
                audiences: None,
            },
            ..TokenReview::default()
        };
        let reviewed = review_call(
            "TokenReview",
            Api::<TokenReview>::all(self.inner.client.clone())
                .create(&PostParams::default(), &review),
        )
        .await?;
        let caller = caller_from_review(reviewed.status, key)?;
        lock(&self.inner.tokens).insert(key, caller.clone(), Instant::now());
        Ok(caller)
    }

    /// Ok when the API server allows `caller` to do `action`; 403 naming
    /// the action when it does not; 503 when it cannot be asked.
    pub async fn authorize(&self, caller: &Caller, action: &Action) -> Result<(), ApiError> {
        let key = (caller.token, action.clone());
        if lock(&self.inner.decisions)
            .get(&key, Instant::now())
            .is_some()
        {
            return Ok(());
        }
        let reviewed = review_call(
            "SubjectAccessReview",
            Api::<SubjectAccessReview>::all(self.inner.client.clone())
                .create(&PostParams::default(), &access_review(caller, action)),
        )
        .await?;
        decide(caller, action, reviewed.status)?;
        lock(&self.inner.decisions).insert(key, (), Instant::now());
        Ok(())
    }

    /// Authorizes every action, in order; the first refusal is the answer.
    pub async fn authorize_all(&self, caller: &Caller, actions: &[Action]) -> Result<(), ApiError> {
        for action in actions {
            self.authorize(caller, action).await?;
        }
        Ok(())
    }
}

/// A poisoned cache is still a valid cache: every update is one insert.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Middleware for routes that need a caller: answers 401 (or 503) itself,
/// otherwise hands the [`Caller`] to the handler as a request extension.
pub(super) async fn require_caller(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    match state.auth.authenticate(request.headers()).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => {
            super::plugins::drain(request.into_body()).await;
            error.into_response()
        }
    }
}

// === pure mapping, unit-tested ===

/// The token of an `Authorization: Bearer <token>` header.
pub(super) fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let missing = || {
        ApiError::Unauthorized(
            "this route needs a bearer token (Authorization: Bearer <token>)".into(),
        )
    };
    let value = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(missing)?;
    // RFC 9110: the scheme is case-insensitive.
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(missing());
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(missing());
    }
    Ok(token)
}

/// The caller a TokenReview accepted, or 401.
fn caller_from_review(
    status: Option<TokenReviewStatus>,
    token: TokenKey,
) -> Result<Caller, ApiError> {
    let rejected = |why: Option<&str>| {
        // The API server's reason (expired, unknown key) goes to the log;
        // the caller learns only that the token was not accepted, as from
        // the API server itself.
        tracing::debug!(reason = why.unwrap_or("none given"), "token rejected");
        ApiError::Unauthorized("the bearer token was not accepted".into())
    };
    let Some(status) = status else {
        return Err(rejected(None));
    };
    if status.authenticated != Some(true) {
        return Err(rejected(status.error.as_deref()));
    }
    let user = status.user.unwrap_or_default();
    let username = user
        .username
        .filter(|name| !name.is_empty())
        .ok_or_else(|| rejected(Some("the review named no user")))?;
    Ok(Caller {
        username,
        uid: user.uid,
        groups: user.groups.unwrap_or_default(),
        extra: user.extra.unwrap_or_default(),
        token,
    })
}

/// The SubjectAccessReview asking whether `caller` may do `action`.
fn access_review(caller: &Caller, action: &Action) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(caller.username.clone()),
            uid: caller.uid.clone(),
            groups: Some(caller.groups.clone()),
            extra: (!caller.extra.is_empty()).then(|| caller.extra.clone()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(action.verb.to_owned()),
                group: Some(action.group.to_owned()),
                resource: Some(action.resource.to_owned()),
                namespace: action.namespace.clone(),
                name: action.name.clone(),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

/// Ok when the review allowed the action, else 403 in the API server's
/// own words: `user "u" cannot list resource "plugins" in API group
/// "leasehold.dev" in the namespace "ns"`.
fn decide(
    caller: &Caller,
    action: &Action,
    status: Option<SubjectAccessReviewStatus>,
) -> Result<(), ApiError> {
    let status = status.unwrap_or_default();
    if status.allowed {
        return Ok(());
    }
    if let Some(error) = status.evaluation_error.as_deref() {
        tracing::debug!(user = %caller.username, %error, "authorizer reported an evaluation error");
    }
    let mut message = format!("user {:?} cannot {action}", caller.username);
    if let Some(reason) = status.reason.as_deref().filter(|reason| !reason.is_empty()) {
        message.push_str(": ");
        message.push_str(reason);
    }
    Err(ApiError::Forbidden(message))
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} resource {:?} in API group {:?}",
            self.verb, self.resource, self.group
        )?;
        match &self.namespace {
            Some(namespace) => write!(f, " in the namespace {namespace:?}"),
            None => write!(f, " at the cluster scope"),
        }
    }
}

/// Runs one review call with a deadline; failures are 503 (retryable, and
/// the caller's credentials were not judged).
async fn review_call<T>(
    kind: &str,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(REVIEW_TIMEOUT, call).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(review_failed(kind, &error)),
        Err(_) => {
            tracing::warn!(
                review = kind,
                "the Kubernetes API server did not answer in time"
            );
            Err(ApiError::Unavailable(format!(
                "cannot check the request's credentials: the Kubernetes API server did not answer the {kind} within {REVIEW_TIMEOUT:?}"
            )))
        }
    }
}

/// A review the API server did not answer. A 403 means this replica's own
/// ServiceAccount lacks the right to review: an operator must grant it.
fn review_failed(kind: &str, error: &kube::Error) -> ApiError {
    match error {
        kube::Error::Api(status) if status.code == 403 => {
            tracing::warn!(review = kind, error = %ErrorChain(error), "this replica may not create reviews; grant it in its ClusterRole");
            ApiError::Unavailable(format!(
                "cannot check the request's credentials: this replica is not allowed to create a {kind}"
            ))
        }
        _ => {
            tracing::warn!(review = kind, error = %ErrorChain(error), "review failed");
            ApiError::Unavailable(format!(
                "cannot check the request's credentials: the {kind} failed at the Kubernetes API server"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, StatusCode};
    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(authorization).unwrap(),
        );
        headers
    }

    fn caller() -> Caller {
        Caller {
            username: "system:serviceaccount:team:deployer".into(),
            uid: Some("1234".into()),
            groups: vec!["system:serviceaccounts".into()],
            extra: BTreeMap::from([("scopes".into(), vec!["a".into()])]),
            token: [0; 32],
        }
    }

    fn list_plugins(namespace: Option<&str>) -> Action {
        Action {
            verb: "list",
            group: "leasehold.dev",
            resource: "plugins",
            namespace: namespace.map(str::to_owned),
            name: None,
        }
    }

    #[test]
    fn a_bearer_token_is_read_whatever_the_scheme_case() {
        assert_eq!(bearer_token(&headers("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(&headers("bearer  abc ")).unwrap(), "abc");
    }

    #[test]
    fn requests_without_a_bearer_token_are_unauthorized() {
        for value in ["Basic dXNlcjpwdw==", "Bearer", "Bearer   ", "abc"] {
            let error = bearer_token(&headers(value)).unwrap_err();
            assert_eq!(error.status(), StatusCode::UNAUTHORIZED, "{value}");
        }
        let error = bearer_token(&HeaderMap::new()).unwrap_err();
        assert!(error.to_string().contains("Authorization: Bearer"));
    }

    #[test]
    fn an_accepted_review_names_the_user_with_groups_uid_and_extra() {
        let status = TokenReviewStatus {
            authenticated: Some(true),
            user: Some(UserInfo {
                username: Some("alice".into()),
                uid: Some("u-1".into()),
                groups: Some(vec!["devs".into()]),
                extra: Some(BTreeMap::from([("k".into(), vec!["v".into()])])),
            }),
            ..TokenReviewStatus::default()
        };
        let caller = caller_from_review(Some(status), [1; 32]).unwrap();
        assert_eq!(caller.username, "alice");
        assert_eq!(caller.uid.as_deref(), Some("u-1"));
        assert_eq!(caller.groups, ["devs"]);
        assert_eq!(caller.extra["k"], ["v"]);
    }

    #[test]
    fn a_rejected_review_is_unauthorized_without_the_servers_reason() {
        let status = TokenReviewStatus {
            authenticated: Some(false),
            error: Some("token signed by an unknown key 0xdeadbeef".into()),
            ..TokenReviewStatus::default()
        };
        let error = caller_from_review(Some(status), [0; 32]).unwrap_err();
        assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
        assert!(!error.to_string().contains("deadbeef"));
        let error = caller_from_review(None, [0; 32]).unwrap_err();
        assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn the_access_review_carries_the_whole_identity_and_the_resource() {
        let action = Action {
            name: Some("mirror".into()),
            ..list_plugins(Some("team"))
        };
        let spec = access_review(&caller(), &action).spec;
        assert_eq!(
            spec.user.as_deref(),
            Some("system:serviceaccount:team:deployer")
        );
        assert_eq!(spec.uid.as_deref(), Some("1234"));
        assert_eq!(spec.groups.unwrap(), ["system:serviceaccounts"]);
        assert_eq!(spec.extra.unwrap()["scopes"], ["a"]);
        let attributes = spec.resource_attributes.unwrap();
        assert_eq!(attributes.verb.as_deref(), Some("list"));
        assert_eq!(attributes.group.as_deref(), Some("leasehold.dev"));
        assert_eq!(attributes.resource.as_deref(), Some("plugins"));
        assert_eq!(attributes.namespace.as_deref(), Some("team"));
        assert_eq!(attributes.name.as_deref(), Some("mirror"));
    }

    #[test]
    fn a_denial_is_forbidden_naming_the_verb_resource_and_namespace() {
        let denied = SubjectAccessReviewStatus {
            allowed: false,
            reason: Some("no RBAC policy matched".into()),
            ..SubjectAccessReviewStatus::default()
        };
        let error = decide(&caller(), &list_plugins(Some("team")), Some(denied)).unwrap_err();
        assert_eq!(error.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            error.to_string(),
            "user \"system:serviceaccount:team:deployer\" cannot list resource \"plugins\" \
             in API group \"leasehold.dev\" in the namespace \"team\": no RBAC policy matched"
        );
        let error = decide(&caller(), &list_plugins(None), None).unwrap_err();
        assert!(
            error.to_string().ends_with("at the cluster scope"),
            "{error}"
        );
    }

    #[test]
    fn an_allowed_review_lets_the_request_through() {
        let allowed = SubjectAccessReviewStatus {
            allowed: true,
            ..SubjectAccessReviewStatus::default()
        };
        assert!(decide(&caller(), &list_plugins(None), Some(allowed)).is_ok());
    }

    #[test]
    fn a_review_the_api_server_fails_is_unavailable_not_internal() {
        let forbidden = kube::Error::Api(Box::new(
            kube::core::Status::failure("no", "Forbidden").with_code(403),
        ));
        let error = review_failed("TokenReview", &forbidden);
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            error
                .to_string()
                .contains("not allowed to create a TokenReview")
        );
        let down = kube::Error::Api(Box::new(
            kube::core::Status::failure("etcd", "InternalError").with_code(500),
        ));
        let error = review_failed("SubjectAccessReview", &down);
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!error.to_string().contains("etcd"));
    }
}
