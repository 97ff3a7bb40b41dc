//! The HTTP API that every replica serves, leader or not: probes, metrics,
//! and what the replica knows about the election.
//!
//! | route | answers |
//! |---|---|
//! | `GET /healthz` | 200 unless this replica is a wedged leader |
//! | `GET /readyz` | 200 once the API server has answered |
//! | `GET /metrics` | Prometheus metrics |
//! | `GET /api/v1/leader` | the holder, this replica's role, timings |
//! | `GET /api/v1/replicas` | every live replica with its role |

mod error;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::watch;
use tower_http::trace::TraceLayer;

pub use self::error::ApiError;
use crate::election::{self, Role, Status};
use crate::metrics::Metrics;
use crate::replicas::{Directory, Replica};

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
}

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    pub election: Arc<election::Config>,
    pub status: watch::Receiver<Status>,
    pub metrics: Arc<Metrics>,
    pub directory: Directory,
}

/// The API's routes; tests call it without a socket.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/leader", get(leader))
        .route("/api/v1/replicas", get(replicas))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(TraceLayer::new_for_http())
        .with_state(state)
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
    pub replicas: Vec<Replica>,
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
