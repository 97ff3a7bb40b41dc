//! The plugin routes: read Plugin objects with their status, and upload a
//! component, which stores it in a ConfigMap and points a Plugin at it.
//!
//! Every route needs a caller (see [`auth`](super::auth)). Reads ask the API
//! server whether that caller may `list`/`get` `plugins`; an upload reads
//! and writes the Plugin and its ConfigMap as the caller (with their own
//! token), so the API server authorizes it like any of their writes, after
//! a SubjectAccessReview that they may `impersonate` the Plugin's account.
//! Objects are read from and written to the Kubernetes API server directly;
//! the replica keeps no copy, so every replica answers the same.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use kube::Api;
use kube::api::ListParams;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::{self, Action, Caller};
use super::error::{ApiError, ErrorChain};
use crate::plugins::Plugin;
use crate::plugins::store::{Component, Intent, MAX_COMPONENT_BYTES, Store, StoreError};
use crate::runtime::{self, Compiler};

/// A request answered before its body was read (refused, or too large by
/// a little) still has the rest of its body read and dropped, up to this
/// much: closing a socket with unread data resets the connection, and the
/// client would see that instead of the answer.
const DRAIN_LIMIT: usize = 2 * MAX_COMPONENT_BYTES;

/// How long a client may take to send the rest of a refused body.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Who wrote the objects, in their managed fields.
const FIELD_MANAGER: &str = "leasehold-api";

/// The routes; `auth::require_caller` is layered on by the caller.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/plugins", get(list))
        .route("/api/v1/namespaces/{namespace}/plugins/{name}", get(read))
        .route(
            "/api/v1/namespaces/{namespace}/plugins/{name}/component",
            put(upload),
        )
}

// === impl Validator ===

/// Checks that uploaded bytes are a controller component by compiling them
/// through the replica's compile service (bounded, and shared with the
/// catalogue, which then finds the upload compiled).
#[derive(Clone, Debug)]
pub struct Validator {
    compiler: Compiler,
}

impl Validator {
    pub fn new(compiler: Compiler) -> Self {
        Self { compiler }
    }

    /// The component's `sha256:<hex>` digest when it compiles as a
    /// controller; 422 with the runtime's reason when it does not.
    async fn controller_digest(&self, bytes: Bytes) -> Result<String, ApiError> {
        self.compiler
            .compile(bytes.to_vec())
            .await
            .map(|compiled| compiled.digest)
            .map_err(component_rejected)
    }
}

/// Everything but a broken engine is the component's fault.
fn component_rejected(error: runtime::Error) -> ApiError {
    match error {
        runtime::Error::Engine(_) => ApiError::Internal(Box::new(error)),
        other => ApiError::Invalid(other.to_string()),
    }
}

// === reads ===

/// The body of `GET /api/v1/plugins`, shaped like a Kubernetes list.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginList {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub items: Vec<Plugin>,
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    namespace: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<PluginList>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let namespace = query.namespace.filter(|namespace| !namespace.is_empty());
    let action = plugins_action("list", namespace.as_deref(), None);
    state.auth.authorize(&caller, &action).await?;
    let api: Api<Plugin> = match &namespace {
        Some(namespace) => Api::namespaced(state.client.clone(), namespace),
        None => Api::all(state.client.clone()),
    };
    let listed = api.list(&ListParams::default()).await.map_err(|error| {
        match &error {
            // A list answers 404 only when the resource type is unknown.
            kube::Error::Api(status) if status.code == 404 => ApiError::Unavailable(
                "the Plugin custom resource (plugins.leasehold.dev) is not installed in the cluster"
                    .into(),
            ),
            _ => kube_failed(error, "plugins"),
        }
    })?;
    Ok(Json(PluginList {
        api_version: "leasehold.dev/v1alpha1",
        kind: "PluginList",
        items: listed.items.into_iter().map(presentable).collect(),
    }))
}

async fn read(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Plugin>, ApiError> {
    let action = plugins_action("get", Some(&namespace), Some(&name));
    state.auth.authorize(&caller, &action).await?;
    let plugin = Api::<Plugin>::namespaced(state.client.clone(), &namespace)
        .get(&name)
        .await
        .map_err(|error| kube_failed(error, &format!("plugin {namespace}/{name}")))?;
    Ok(Json(presentable(plugin)))
}

// === upload ===

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UploadQuery {
    /// Required to create a Plugin; changes an existing one's when given.
    service_account_name: Option<String>,
}

/// `PUT .../plugins/{name}/component`: stores the component in the
/// ConfigMap `<name>-component` and points the Plugin at it with the new
/// digest, which makes the leader reload it. 201 when the Plugin was
/// created, 200 when it was updated; either way, the Plugin.
async fn upload(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
    query: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Plugin>), ApiError> {
    let mut body = Some(body);
    let answer = store_component(
        &state, &caller, &namespace, &name, query, &headers, &mut body,
    )
    .await;
    if let Some(unread) = body {
        drain(unread).await;
    }
    answer
}

/// The upload itself; takes `body` only once the caller may upload.
async fn store_component(
    state: &AppState,
    caller: &Caller,
    namespace: &str,
    name: &str,
    query: Result<Query<UploadQuery>, QueryRejection>,
    headers: &HeaderMap,
    body: &mut Option<Body>,
) -> Result<(StatusCode, Json<Plugin>), ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    check_content_type(headers)?;
    check_declared_length(headers)?;

    // Everything is read and written as the caller: the API server, not
    // this replica, decides what they may do (RBAC, and the chart's
    // admission policy on the account a Plugin runs as).
    let store = Store::new(
        as_caller(&state.kube_config, headers)?,
        namespace,
        FIELD_MANAGER,
    );
    let existing = store.existing(name).await.map_err(store_failed)?;
    let Some(account) = query
        .service_account_name
        .as_deref()
        .or(existing.service_account())
    else {
        return Err(ApiError::BadRequest(format!(
            "plugin {namespace}/{name} does not exist: give ?serviceAccountName= to create it"
        )));
    };
    // The account is checked here too, for clusters without the policy.
    let uses_account = Action {
        verb: "impersonate",
        group: "",
        resource: "serviceaccounts",
        namespace: Some(namespace.to_owned()),
        name: Some(account.to_owned()),
    };
    state.auth.authorize_all(caller, &[uses_account]).await?;

    let bytes = read_component(body.take().unwrap_or_default()).await?;
    let digest = state.validator.controller_digest(bytes.clone()).await?;
    let stored = store
        .put(
            name,
            existing,
            Component {
                bytes: bytes.to_vec(),
                digest: &digest,
            },
            Intent {
                service_account: query.service_account_name.as_deref(),
                config: None,
            },
        )
        .await
        .map_err(store_failed)?;
    let status = if stored.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let plugin = stored.plugin;
    tracing::info!(
        plugin = %format!("{namespace}/{name}"),
        user = %caller.username,
        %digest,
        "component uploaded"
    );
    Ok((status, Json(presentable(plugin))))
}

// === pure helpers, unit-tested ===

fn plugins_action(verb: &'static str, namespace: Option<&str>, name: Option<&str>) -> Action {
    Action {
        verb,
        group: "leasehold.dev",
        resource: "plugins",
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
    }
}

/// The object as the API server has it, less `managedFields` (noise for a
/// reader; `kubectl get` hides them too).
fn presentable(mut plugin: Plugin) -> Plugin {
    plugin.metadata.managed_fields = None;
    plugin
}

/// `application/wasm`, `application/octet-stream`, or none at all.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/wasm" | "application/octet-stream" => Ok(()),
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "the body must be the component's bytes as application/wasm or \
             application/octet-stream, not {essence:?}"
        ))),
    }
}

fn too_large(size: Option<u64>) -> ApiError {
    let size = size.map_or_else(|| "larger".to_owned(), |size| format!("{size} bytes"));
    ApiError::PayloadTooLarge(format!(
        "the component is {size}; a ConfigMap holds at most {MAX_COMPONENT_BYTES} bytes (1 MiB)"
    ))
}

/// Refuses a body whose declared length is too large before reading any.
fn check_declared_length(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    match declared {
        Some(size) if size > MAX_COMPONENT_BYTES as u64 => Err(too_large(Some(size))),
        _ => Ok(()),
    }
}

/// Reads and drops what is left of a body the answer did not need, up to
/// [`DRAIN_LIMIT`] bytes and for at most [`DRAIN_TIMEOUT`].
pub(super) async fn drain(body: Body) {
    let discard = async {
        let mut body = Limited::new(body, DRAIN_LIMIT);
        while let Some(Ok(_)) = body.frame().await {}
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, discard).await;
}

/// Reads the body, stopping at the limit (a chunked body declares no
/// length).
async fn read_component(body: Body) -> Result<Bytes, ApiError> {
    let bytes = Limited::new(body, MAX_COMPONENT_BYTES)
        .collect()
        .await
        .map_err(|error| {
            if error.is::<LengthLimitError>() {
                too_large(None)
            } else {
                ApiError::BadRequest(format!("cannot read the body: {error}"))
            }
        })?
        .to_bytes();
    if bytes.is_empty() {
        return Err(ApiError::BadRequest(
            "the body must be the component's bytes; it is empty".into(),
        ));
    }
    Ok(bytes)
}

fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::BadRequest(rejection.body_text())
}

/// A client that acts as the caller with the caller's own bearer token
/// (already accepted by a TokenReview for the API server's audience): the
/// API server sees them exactly as they are, and this replica needs no
/// right to impersonate users or groups (which would let it claim any
/// group, system:masters included). Only for this request; never kept.
fn as_caller(base: &kube::Config, headers: &HeaderMap) -> Result<kube::Client, ApiError> {
    let token = auth::bearer_token(headers)?;
    let mut config = base.clone();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_owned().into()),
        ..kube::config::AuthInfo::default()
    };
    kube::Client::try_from(config).map_err(|error| ApiError::Internal(Box::new(error)))
}

/// Maps a store that failed to what the caller can do.
fn store_failed(error: StoreError) -> ApiError {
    match error {
        StoreError::ForeignConfigMap { .. } => ApiError::Conflict(error.to_string()),
        StoreError::NoServiceAccount { .. } => ApiError::BadRequest(error.to_string()),
        StoreError::TooLarge { size } => too_large(Some(size as u64)),
        // As the caller, a refusal is theirs to act on, in the API server's words.
        StoreError::Kube {
            source: kube::Error::Api(status),
            ..
        } if status.code == 403 => ApiError::Forbidden(status.message),
        StoreError::Kube { object, source, .. } => kube_failed(source, &object),
    }
}

/// Maps a failed call to the API server about `what`. The API server's
/// words about the caller's input (invalid, conflicting) are passed on;
/// its own failures become 503 and go to the log.
fn kube_failed(error: kube::Error, what: &str) -> ApiError {
    if let kube::Error::Api(status) = &error {
        match status.code {
            404 => return ApiError::NotFound(format!("{what} not found")),
            409 => {
                return ApiError::Conflict(format!(
                    "{what} changed at the same time; retry: {}",
                    status.message
                ));
            }
            400 | 422 => {
                return ApiError::Invalid(format!(
                    "the Kubernetes API server rejected {what}: {}",
                    status.message
                ));
            }
            403 => {
                tracing::warn!(object = what, error = %ErrorChain(&error), "this replica lacks a permission; grant it in its ClusterRole");
                return ApiError::Unavailable(format!(
                    "this replica is not allowed to access {what}; its ClusterRole needs the permission"
                ));
            }
            _ => {}
        }
    }
    tracing::warn!(object = what, error = %ErrorChain(&error), "kubernetes api call failed");
    ApiError::Unavailable(format!(
        "the Kubernetes API server did not complete the request for {what}"
    ))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn components_are_accepted_as_wasm_octets_or_untyped() {
        assert!(check_content_type(&HeaderMap::new()).is_ok());
        assert!(check_content_type(&with(header::CONTENT_TYPE, "application/wasm")).is_ok());
        assert!(
            check_content_type(&with(
                header::CONTENT_TYPE,
                "Application/Octet-Stream; charset=binary"
            ))
            .is_ok()
        );
        let error =
            check_content_type(&with(header::CONTENT_TYPE, "application/json")).unwrap_err();
        assert_eq!(error.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn a_declared_length_over_one_mebibyte_is_refused() {
        let limit = MAX_COMPONENT_BYTES.to_string();
        assert!(check_declared_length(&with(header::CONTENT_LENGTH, &limit)).is_ok());
        let over = (MAX_COMPONENT_BYTES + 1).to_string();
        let error = check_declared_length(&with(header::CONTENT_LENGTH, &over)).unwrap_err();
        assert_eq!(error.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(error.to_string().contains("1048577 bytes"), "{error}");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_while_it_is_read() {
        let body = Body::from(vec![0u8; MAX_COMPONENT_BYTES + 1]);
        let error = read_component(body).await.unwrap_err();
        assert_eq!(error.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let error = read_component(Body::empty()).await.unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_component_the_runtime_rejects_is_unprocessable_with_its_reason() {
        let error = component_rejected(runtime::Error::Compile(wasmtime::Error::msg(
            "unexpected end-of-file",
        )));
        assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            error.to_string().contains("not a valid wasm component"),
            "{error}"
        );
        assert!(
            error.to_string().contains("unexpected end-of-file"),
            "{error}"
        );
    }

    #[test]
    fn object_errors_of_the_api_server_map_to_what_the_caller_can_do() {
        let api = |code: u16| {
            kube::Error::Api(Box::new(
                kube::core::Status::failure("spec.serviceAccountName: must name one", "Invalid")
                    .with_code(code),
            ))
        };
        let status = |code| kube_failed(api(code), "plugin ns/p").status();
        assert_eq!(status(404), StatusCode::NOT_FOUND);
        assert_eq!(status(409), StatusCode::CONFLICT);
        assert_eq!(status(422), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status(403), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(500), StatusCode::SERVICE_UNAVAILABLE);
        let invalid = kube_failed(api(422), "plugin ns/p");
        assert!(invalid.to_string().contains("must name one"), "{invalid}");
    }
}
