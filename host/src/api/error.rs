//! Errors as the API returns them: a status code and a JSON body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer. 5xx answers never carry internal details; those go to
/// the log instead.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No such route or object.
    #[error("{0}")]
    NotFound(String),
    /// The replica cannot answer right now (for example, not yet connected).
    #[error("{0}")]
    Unavailable(String),
    /// Something failed inside the replica.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: u16,
    reason: &'a str,
    message: String,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal(error) = &self {
            tracing::error!(error = %ErrorChain(error.as_ref()), "request failed");
        }
        let body = Body {
            error: Detail {
                code: status.as_u16(),
                reason: status.canonical_reason().unwrap_or("Error"),
                message: self.to_string(),
            },
        };
        (status, Json(body)).into_response()
    }
}

/// Displays an error with its sources, `outer: inner: root`.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}
