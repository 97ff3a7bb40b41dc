//! Errors as the API returns them: a status code and a JSON body,
//! `{"error":{"code","reason","message"}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer. 5xx answers never carry internal details; those go to
/// the log instead. 4xx messages speak about the request, so they are safe
/// to show the caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (a missing or invalid parameter).
    #[error("{0}")]
    BadRequest(String),
    /// No bearer token, or one the API server did not accept. Answered with
    /// `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller is known but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such route or object.
    #[error("{0}")]
    NotFound(String),
    /// The object changed or appeared concurrently; retrying may succeed.
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than the API accepts.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body's content type is not one the route accepts.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request is well formed but its content is invalid (a component
    /// that is not a controller, an object the API server rejected).
    #[error("{0}")]
    Invalid(String),
    /// The replica cannot answer right now (not yet connected, or the
    /// Kubernetes API server did not answer); retrying may succeed.
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
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
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
        let mut response = (status, Json(body)).into_response();
        if let Self::Unauthorized(_) = self {
            // RFC 6750: tell the client which scheme to use.
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Displays an error with its sources, `outer: inner: root`.
pub(crate) struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

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

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn answer(error: ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|value| value.to_str().unwrap().to_owned());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, challenge, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn an_unauthorized_answer_challenges_for_a_bearer_token() {
        let (status, challenge, body) =
            answer(ApiError::Unauthorized("a bearer token is required".into())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(challenge.as_deref(), Some("Bearer"));
        assert_eq!(
            body,
            serde_json::json!({"error": {
                "code": 401,
                "reason": "Unauthorized",
                "message": "a bearer token is required",
            }})
        );
    }

    #[tokio::test]
    async fn other_errors_carry_no_challenge() {
        let (status, challenge, body) = answer(ApiError::Forbidden("no".into())).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(challenge, None);
        assert_eq!(body["error"]["reason"], "Forbidden");
    }

    #[tokio::test]
    async fn internal_errors_hide_their_cause() {
        let cause = std::io::Error::other("etcd password is hunter2");
        let (status, _, body) = answer(ApiError::Internal(Box::new(cause))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["message"], "internal error");
    }
}
