//! The HTTP API that every replica serves, leader or not: probes, metrics,
//! what the replica knows about the election, and the plugins.
//!
//! | route | answers | needs |
//! |---|---|---|
//! | `GET /healthz` | 200 unless this replica is a wedged leader | nothing |
//! | `GET /readyz` | 200 once the API server has answered and the plugins known at start are compiled | nothing |
//! | `GET /metrics` | Prometheus metrics | nothing |
//! | `GET /api/v1/leader` | the holder, this replica's role, timings | nothing |
//! | `GET /api/v1/replicas` | every live replica with its role | nothing |
//! | `GET /api/v1/plugins[?namespace=]` | the Plugin objects with their status (`{"items":[...]}`) | `list plugins` |
//! | `GET /api/v1/namespaces/{ns}/plugins/{name}` | one Plugin with its status | `get plugins` |
//! | `POST /admission/{ns}/{name}/{mutate,validate}` | an AdmissionReview answered by the plugin (every replica) | nothing (the API server calls it) |
//! | `PUT /api/v1/namespaces/{ns}/plugins/{name}/component[?serviceAccountName=]` | stores the body (a component, at most 1 MiB) in the ConfigMap `{name}-component` and points the Plugin at it with the new sha256; 201 created, 200 updated | `create`/`update` on `plugins` and `configmaps` |
//!
//! Probes and metrics are open: kubelets and Prometheus call them. The
//! plugin routes need `Authorization: Bearer <token>`, checked with a
//! TokenReview and authorized with SubjectAccessReviews against the
//! Kubernetes API server ([`auth`]); 401 without a valid token, 403 when
//! not allowed. Errors are JSON: `{"error":{"code","reason","message"}}`.
//! With `--tls-cert-file` and `--tls-private-key-file`, or a certificate the
//! replicas issue themselves into `--tls-secret` ([`issuer`]), the API is
//! served over HTTPS only ([`tls`]).

mod admission;
mod auth;
mod cache;
mod error;
mod issuer;
mod plugins;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

pub use self::auth::{Action, Authenticator, CACHE_TTL, Caller};
pub use self::error::ApiError;
pub(crate) use self::error::ErrorChain;
pub use self::issuer::{
    IssueError, Issued, Issuing, settle as settle_certificate,
    settle_patiently as settle_certificate_patiently,
};
pub use self::plugins::{PluginList, Validator};
pub use self::tls::{
    Certificate, Https, RENEWAL_CHECK, Renewal, TlsError, load as load_tls, recheck, serve_issued,
};
use crate::election::directory::{Directory, Member};
use crate::election::{self, Role, Status};
use crate::metrics::Metrics;
pub use axum_server::tls_rustls::RustlsConfig;

/// Port 8080 is what a Kubernetes probe and Service expect by convention.
const DEFAULT_LISTEN: &str = "0.0.0.0:8080";

/// API server options, flattened into `leasehold run`.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "API server")]
#[group(id = "api-options")]
pub struct Options {
    /// Address to serve the API, probes and metrics on.
    #[arg(long, env = "LEASEHOLD_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Serve HTTPS with this PEM certificate chain (needs
    /// --tls-private-key-file). Plain HTTP when unset.
    #[arg(
        long,
        env = "LEASEHOLD_TLS_CERT_FILE",
        requires = "tls_private_key_file",
        group = "tls_source",
        value_name = "FILE"
    )]
    pub tls_cert_file: Option<PathBuf>,

    /// The PEM private key of --tls-cert-file.
    #[arg(
        long,
        env = "LEASEHOLD_TLS_PRIVATE_KEY_FILE",
        requires = "tls_cert_file",
        value_name = "FILE"
    )]
    pub tls_private_key_file: Option<PathBuf>,

    /// Serve HTTPS with a certificate the replicas issue themselves and keep
    /// in this Secret, with its CA (created if absent, renewed at a
    /// replica's start when it nears its end or misses a name): for clusters
    /// without cert-manager, instead of --tls-cert-file. It covers the names
    /// of --admission-service or --admission-url, and --tls-san.
    #[arg(
        long,
        env = "LEASEHOLD_TLS_SECRET",
        group = "tls_source",
        value_name = "NAMESPACE/NAME"
    )]
    pub tls_secret: Option<SecretName>,

    /// Another DNS name or IP address the certificate of --tls-secret
    /// covers; repeatable.
    #[arg(
        long = "tls-san",
        env = "LEASEHOLD_TLS_SANS",
        value_delimiter = ',',
        requires = "tls_secret",
        value_name = "NAME"
    )]
    pub tls_sans: Vec<String>,

    /// Offer HTTP/2 over HTTPS as well as HTTP/1.1. Off by default, as in
    /// controller-runtime's webhook servers since the HTTP/2 Rapid Reset
    /// attacks (CVE-2023-44487).
    #[arg(long, env = "LEASEHOLD_HTTP2", requires = "tls_source")]
    pub http2: bool,
}

impl Options {
    /// How to serve HTTPS, when it was asked for. Clap has already checked
    /// that both files or neither are given, and not a Secret as well. An
    /// issued certificate's names are completed by the admission options.
    pub fn tls(&self) -> Option<Https> {
        let certificate = if let Some(secret) = &self.tls_secret {
            Certificate::Issued(Issuing {
                namespace: secret.namespace.clone(),
                name: secret.name.clone(),
                names: self.tls_sans.clone(),
            })
        } else {
            Certificate::Files {
                cert: self.tls_cert_file.clone()?,
                key: self.tls_private_key_file.clone()?,
            }
        };
        Some(Https {
            certificate,
            http2: self.http2,
        })
    }
}

/// A Secret named on the command line, `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretName {
    pub namespace: String,
    pub name: String,
}

impl std::str::FromStr for SecretName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(Self {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!(
                "expected namespace/name, for example leasehold/leasehold-tls, not {text:?}"
            )),
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub election: Arc<election::Config>,
    pub status: watch::Receiver<Status>,
    pub metrics: Arc<Metrics>,
    pub directory: Directory,
    /// The replica's own client: reads plugin objects, creates the reviews.
    pub client: kube::Client,
    /// The base of the clients that write as a caller (impersonating).
    /// Shared: axum clones the state for every request.
    pub kube_config: Arc<kube::Config>,
    pub auth: Authenticator,
    pub validator: Validator,
    /// Whether the plugins this replica knew at its start are compiled.
    pub prepared: watch::Receiver<bool>,
    /// Answers admission reviews with the plugins' `admission` exports.
    pub reviews: Arc<crate::admission::Reviews>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("election", &self.election)
            .field("directory", &self.directory)
            .finish_non_exhaustive()
    }
}

/// The API's routes; tests call it without a socket.
pub fn router(state: AppState) -> Router {
    let plugins = plugins::routes().route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_caller,
    ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/leader", get(leader))
        .route("/api/v1/replicas", get(replicas))
        .merge(plugins)
        .merge(admission::routes(state.reviews.clone()))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// How long open HTTPS connections may take to finish at shutdown.
const TLS_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `stop` is cancelled, then drains: plain
/// HTTP with `tls` unset, HTTPS with it (a handle: a renewed certificate is
/// served from the next connection on).
pub async fn serve(
    listener: TcpListener,
    tls: Option<RustlsConfig>,
    app: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        return axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    };
    let handle = axum_server::Handle::new();
    let http2 = tls::offers_http2(&tls.get_inner());
    let mut server =
        axum_server::from_tcp_rustls(listener.into_std()?, tls)?.handle(handle.clone());
    if !http2 {
        // Not only unadvertised: refused from a client that tries anyway.
        server = server.http1_only();
    }
    let drain = tokio::spawn(async move {
        stop.cancelled().await;
        handle.graceful_shutdown(Some(TLS_DRAIN_TIMEOUT));
    });
    let served = server.serve(app.into_make_service()).await;
    drain.abort();
    served
}

async fn healthz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    if state
        .status
        .borrow()
        .is_wedged_leader(state.election.lease_duration)
    {
        // Unavailable, not Internal: the message is the whole story.
        return Err(ApiError::Unavailable(
            "leader has not renewed its lease for longer than the lease duration".into(),
        ));
    }
    Ok("ok")
}

async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    if !state.status.borrow().is_connected() {
        return Err(ApiError::Unavailable(
            "not yet connected to the Kubernetes API server".into(),
        ));
    }
    if !*state.prepared.borrow() {
        return Err(ApiError::Unavailable(
            "still fetching and compiling the plugins it knows".into(),
        ));
    }
    healthz(State(state)).await
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let text = state.metrics.render(&state.status.borrow());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

/// The body of `GET /api/v1/leader`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderView {
    /// The holder of the election Lease; absent when it is free.
    pub holder: Option<String>,
    pub identity: String,
    pub role: Role,
    pub lease: LeaseRef,
    pub lease_transitions: i32,
    /// While leading: when this term began.
    pub leader_since: Option<String>,
    /// While leading: seconds since the last successful renewal.
    pub seconds_since_last_renew: Option<f64>,
    pub acquisitions: u64,
    /// Whether writes made for plugins carry their term, for the API
    /// server's fencing policy to refuse a deposed leader's (`--fencing`).
    pub fencing: bool,
    pub timings: Timings,
}

#[derive(Debug, Serialize)]
pub struct LeaseRef {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timings {
    pub lease_duration_seconds: f64,
    pub renew_deadline_seconds: f64,
    pub retry_period_seconds: f64,
}

async fn leader(State(state): State<AppState>) -> Json<LeaderView> {
    let status = state.status.borrow().clone();
    let config = &state.election;
    Json(LeaderView {
        holder: status.holder.clone(),
        identity: config.identity.clone(),
        role: status.role,
        lease: LeaseRef {
            namespace: config.namespace.clone(),
            name: config.lease_name.clone(),
        },
        lease_transitions: status.transitions,
        leader_since: status.leader_since.map(|at| at.to_string()),
        seconds_since_last_renew: status.since_last_renew().map(|d| d.as_secs_f64()),
        acquisitions: status.acquisitions,
        fencing: config.fencing,
        timings: Timings {
            lease_duration_seconds: config.lease_duration.as_secs_f64(),
            renew_deadline_seconds: config.renew_deadline.as_secs_f64(),
            retry_period_seconds: config.retry_period.as_secs_f64(),
        },
    })
}

/// The body of `GET /api/v1/replicas`.
#[derive(Debug, Serialize)]
pub struct ReplicasView {
    pub replicas: Vec<Member>,
}

async fn replicas(State(state): State<AppState>) -> Result<Json<ReplicasView>, ApiError> {
    let holder = state.status.borrow().holder.clone();
    let replicas = state
        .directory
        .live(holder.as_deref())
        .await
        .map_err(|error| ApiError::Internal(Box::new(error)))?;
    Ok(Json(ReplicasView { replicas }))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        api: Options,
    }

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        Command::try_parse_from(std::iter::once("leasehold").chain(args.iter().copied()))
            .map(|command| command.api)
    }

    #[test]
    fn the_api_is_plain_http_unless_a_certificate_is_given() {
        assert_eq!(parse(&[]).unwrap().tls(), None);
        let options = parse(&[
            "--tls-cert-file",
            "/tls/tls.crt",
            "--tls-private-key-file",
            "/tls/tls.key",
        ])
        .unwrap();
        assert_eq!(
            options.tls(),
            Some(Https {
                certificate: Certificate::Files {
                    cert: "/tls/tls.crt".into(),
                    key: "/tls/tls.key".into(),
                },
                http2: false,
            })
        );
    }

    #[test]
    fn a_certificate_without_its_key_or_a_key_alone_is_refused() {
        let error = parse(&["--tls-cert-file", "/tls/tls.crt"]).unwrap_err();
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        assert!(
            error.to_string().contains("--tls-private-key-file"),
            "{error}"
        );
        let error = parse(&["--tls-private-key-file", "/tls/tls.key"]).unwrap_err();
        assert!(error.to_string().contains("--tls-cert-file"), "{error}");
    }

    #[test]
    fn http2_is_offered_only_when_asked_for_and_only_over_https() {
        let https = ["--tls-cert-file", "/c", "--tls-private-key-file", "/k"];
        assert!(!parse(&https).unwrap().tls().unwrap().http2);
        let asked = parse(&[&https[..], &["--http2"]].concat()).unwrap();
        assert!(asked.tls().unwrap().http2);
        let error = parse(&["--http2"]).unwrap_err();
        assert!(error.to_string().contains("--tls-cert-file"), "{error}");
        let issued = parse(&["--tls-secret", "ops/leasehold-tls", "--http2"]).unwrap();
        assert!(issued.tls().unwrap().http2);
    }

    #[test]
    fn a_tls_secret_is_issued_for_its_names_and_excludes_certificate_files() {
        let options = parse(&[
            "--tls-secret",
            "ops/leasehold-tls",
            "--tls-san",
            "leasehold.example.com,10.0.0.7",
        ])
        .unwrap();
        assert_eq!(
            options.tls().unwrap().certificate,
            Certificate::Issued(Issuing {
                namespace: "ops".into(),
                name: "leasehold-tls".into(),
                names: vec!["leasehold.example.com".into(), "10.0.0.7".into()],
            })
        );
        let error = parse(&[
            "--tls-secret",
            "ops/leasehold-tls",
            "--tls-cert-file",
            "/c",
            "--tls-private-key-file",
            "/k",
        ])
        .unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
        let error = parse(&["--tls-san", "leasehold.example.com"]).unwrap_err();
        assert!(error.to_string().contains("--tls-secret"), "{error}");
    }

    #[test]
    fn a_tls_secret_not_named_namespace_slash_name_is_refused() {
        for bad in ["leasehold-tls", "/leasehold-tls", "ops/", "ops/a/b"] {
            let error = parse(&["--tls-secret", bad]).unwrap_err();
            assert!(
                error.to_string().contains("expected namespace/name"),
                "{bad}: {error}"
            );
        }
    }
}
