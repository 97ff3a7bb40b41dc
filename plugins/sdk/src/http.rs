//! Outbound HTTP (feature `http`): call something outside Kubernetes — a
//! DNS provider, a cloud API, a chat webhook — from a reconcile.
//!
//! Nothing is reachable unless the Plugin allows it: its
//! `spec.allowedOutboundHosts` lists `scheme://host[:port]` entries, and a
//! request anywhere else fails with an error whose [`Error::is_denied`] is
//! true. Each request counts as a call against the reconcile's limits and
//! must finish within its timeout.
//!
//! ```no_run
//! use leasehold_sdk::http;
//!
//! # fn notify() -> Result<(), leasehold_sdk::reconciler::Error> {
//! let request = http::Request::post("https://hooks.example.com/deploys")
//!     .header("content-type", "application/json")
//!     .body(br#"{"text": "deployed"}"#.to_vec())
//!     .expect("a well-formed request");
//! let response = http::send(request)?;
//! if !response.status().is_success() {
//!     return Err(leasehold_sdk::reconciler::Error::retryable(format!(
//!         "the hook answered {}",
//!         response.status()
//!     )));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The requests are sent by the host, through `wasi:http`; a reconcile
//! waits for the whole response. Natively (in `cargo test`), there is no host to send them:
//! every request fails with an error saying so.

pub use ::http::{Request, Response, StatusCode};

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    denied: bool,
    message: String,
}

impl Error {
    /// The host refused to send it: the host is not in the Plugin's
    /// `allowedOutboundHosts`, the reconcile's call budget is spent, or the
    /// replica no longer leads. Retrying does not help until the Plugin
    /// changes.
    pub fn is_denied(&self) -> bool {
        self.denied
    }
}

impl From<Error> for crate::reconciler::Error {
    /// A denied request will be denied again; anything else (a timeout, a
    /// refused connection) may pass next time.
    fn from(error: Error) -> Self {
        if error.denied {
            crate::reconciler::Error::permanent(error.to_string())
        } else {
            crate::reconciler::Error::retryable(error.to_string())
        }
    }
}

/// A GET of `url`, the whole response read.
pub fn get(url: &str) -> Result<Response<Vec<u8>>, Error> {
    let request = Request::get(url).body(Vec::new()).map_err(|error| Error {
        denied: false,
        message: format!("GET {url}: {error}"),
    })?;
    send(request)
}

/// Sends `request` and reads the whole response.
pub fn send(request: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, Error> {
    let what = format!("{} {}", request.method(), request.uri());
    sent(request).map_err(|(denied, cause)| Error {
        denied,
        message: if denied {
            format!(
                "{what}: the host denied the request (is the host in the Plugin's allowedOutboundHosts?)"
            )
        } else {
            format!("{what}: {cause}")
        },
    })
}

/// The request through `wasi:http/outgoing-handler`, blocking until the
/// whole response is read. Written on the bare `wasip2` bindings rather
/// than wstd's client: wstd's async runtime and anyhow made every plugin
/// ~340 KB larger (917 KB → 1.26 MB for the test fixture, past the 1 MiB a
/// ConfigMap source can hold), for a reconcile that blocks anyway.
#[cfg(target_arch = "wasm32")]
fn sent(request: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, (bool, String)> {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{
        ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
    };
    use wasip2::io::streams::StreamError;

    let failed = |code: ErrorCode| {
        (
            matches!(code, ErrorCode::HttpRequestDenied),
            format!("{code:?}"),
        )
    };
    let refused = |what: &str| (false, what.to_owned());
    let (parts, body) = request.into_parts();
    let headers: Vec<(String, Vec<u8>)> = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    let headers = Fields::from_list(&headers)
        .map_err(|error| refused(&format!("header refused: {error:?}")))?;
    let outgoing = OutgoingRequest::new(headers);
    let method = match parts.method.as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_owned()),
    };
    let scheme = match parts.uri.scheme_str() {
        Some("http") => Scheme::Http,
        Some("https") | None => Scheme::Https,
        Some(other) => Scheme::Other(other.to_owned()),
    };
    let authority = parts.uri.authority().map(|authority| authority.as_str());
    let path = parts.uri.path_and_query().map(|path| path.as_str());
    outgoing
        .set_method(&method)
        .and(outgoing.set_scheme(Some(&scheme)))
        .and(outgoing.set_authority(authority))
        .and(outgoing.set_path_with_query(path))
        .map_err(|()| refused("the URL is not one the host can send"))?;
    let outgoing_body = outgoing.body().map_err(|()| refused("no request body"))?;
    let future = outgoing_handler::handle(outgoing, None).map_err(failed)?;
    {
        let stream = outgoing_body
            .write()
            .map_err(|()| refused("no request body stream"))?;
        // A blocking write takes at most 4096 bytes at a time.
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|error| refused(&format!("sending the body: {error:?}")))?;
        }
    }
    OutgoingBody::finish(outgoing_body, None).map_err(failed)?;
    future.subscribe().block();
    let incoming = match future.get() {
        Some(Ok(Ok(incoming))) => incoming,
        Some(Ok(Err(code))) => return Err(failed(code)),
        Some(Err(())) | None => return Err(refused("the response was already taken")),
    };
    let mut response = Response::builder().status(incoming.status());
    for (name, value) in incoming.headers().entries() {
        response = response.header(name, value);
    }
    let incoming_body = incoming
        .consume()
        .map_err(|()| refused("no response body"))?;
    let mut bytes = Vec::new();
    {
        let stream = incoming_body
            .stream()
            .map_err(|()| refused("no response body stream"))?;
        loop {
            match stream.blocking_read(64 << 10) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(error)) => {
                    return Err(refused(&format!(
                        "reading the body: {}",
                        error.to_debug_string()
                    )));
                }
            }
        }
    }
    drop(IncomingBody::finish(incoming_body));
    response
        .body(bytes)
        .map_err(|error| refused(&format!("the response: {error}")))
}

#[cfg(not(target_arch = "wasm32"))]
fn sent(_: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, (bool, String)> {
    Err((
        false,
        "outbound HTTP is sent by the host: it works in the component, not in a native test".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natively_a_request_fails_saying_why() {
        let error = get("https://example.com/").unwrap_err();
        assert!(!error.is_denied());
        assert!(
            error
                .to_string()
                .starts_with("GET https://example.com/: outbound HTTP is sent by the host"),
            "{error}"
        );
    }

    #[test]
    fn a_denied_request_fails_the_reconcile_for_good() {
        let denied = Error {
            denied: true,
            message: "GET https://x/: the host denied the request".into(),
        };
        let error = crate::reconciler::Error::from(denied);
        assert!(!error.retryable, "{error:?}");
    }
}
