//! `POST /admission/{namespace}/{plugin}/{mutate|validate}`: the API
//! server's admission reviews for a plugin, answered by this replica
//! whatever its role (see [`crate::admission`]).
//!
//! Open like any webhook (the API server presents no credentials by
//! default): a caller can only make the plugin judge a request it made up,
//! within the plugin's limits; the plugin's host calls are reads as its own
//! account.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::routing::post;
use axum::{Json, Router};
use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;

use super::error::ApiError;
use crate::admission::{ReviewError, Reviews};
use crate::runtime::Review;

/// An AdmissionReview holds the object and the old object, each up to the
/// API server's 3 MiB request limit, plus the review's own fields.
const MAX_REVIEW_BYTES: usize = 8 << 20;

/// The review route holds only the reviews as its state: axum clones a
/// route's state for every request, and cloning and dropping the whole
/// [`super::AppState`] (clients, receivers) took about as much of a review's CPU
/// as parsing its body, in a profile of the replica (by hand, `perf record`).
pub(super) fn routes<S: Clone + Send + Sync + 'static>(reviews: Arc<Reviews>) -> Router<S> {
    Router::new()
        .route("/admission/{namespace}/{name}/{review}", post(review))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(reviews)
}

/// What the API server appends to a webhook's URL: how long it waits.
#[derive(Debug, serde::Deserialize)]
struct Waits {
    /// A Go duration such as `10s`.
    timeout: Option<String>,
}

/// The API server's default `timeoutSeconds`, when the URL does not say.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);

async fn review(
    State(reviews): State<Arc<Reviews>>,
    Path((namespace, name, review)): Path<(String, String, String)>,
    Query(waits): Query<Waits>,
    body: Bytes,
) -> Result<Json<AdmissionReview<DynamicObject>>, ApiError> {
    let waits = waits
        .timeout
        .and_then(|timeout| humantime::parse_duration(&timeout).ok())
        .unwrap_or(DEFAULT_WAIT);
    let review = match review.as_str() {
        "mutate" => Review::Mutate,
        "validate" => Review::Validate,
        other => {
            return Err(ApiError::NotFound(format!(
                "no review {other:?}: the path ends in /mutate or /validate"
            )));
        }
    };
    match reviews
        .review(&namespace, &name, review, &body, waits)
        .await
    {
        Ok(answer) => Ok(Json(answer)),
        Err(
            error @ (ReviewError::NotAReview(_) | ReviewError::NotV1(_) | ReviewError::NoRequest),
        ) => Err(ApiError::BadRequest(format!("{error:#}"))),
        Err(error @ (ReviewError::UnknownPlugin(_) | ReviewError::NotDeclared { .. })) => {
            Err(ApiError::NotFound(error.to_string()))
        }
        Err(error @ ReviewError::NotReady(_)) => Err(ApiError::Unavailable(error.to_string())),
        Err(error @ (ReviewError::Client { .. } | ReviewError::Prepare { .. })) => {
            Err(ApiError::Internal(Box::new(error)))
        }
    }
}
