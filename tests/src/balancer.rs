//! A load balancer on loopback in front of replicas: what the API server's
//! webhook calls go through to reach "the Service", for replicas that are
//! local processes.
//!
//! It works at HTTP level, as a mesh sidecar or an L7 load balancer does:
//! each request goes to the next backend in turn, and one that fails before
//! an answer comes back (refused, reset: its replica died) is sent to the
//! next backend. That retry is safe only because an admission review has
//! no side effects (the host fences a review's calls to reads). A plain L4
//! balancer, as kube-proxy is, cannot retry: the reviews in flight on a
//! replica that is killed fail (see the README's admission figures).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio_util::task::AbortOnDropHandle;

/// Spreads requests over its backends in turn, retrying on the next.
#[derive(Debug)]
pub struct Balancer {
    address: SocketAddr,
    backends: Backends,
    _server: AbortOnDropHandle<()>,
}

type Backends = Arc<RwLock<Vec<SocketAddr>>>;

#[derive(Clone)]
struct Route {
    backends: Backends,
    next: Arc<AtomicUsize>,
    client: reqwest::Client,
}

impl Balancer {
    /// Serves HTTPS with `cert` and `key` (the replicas' own, so whoever
    /// trusts them trusts this) with no backend yet: its address goes into
    /// the replicas' flags before their own addresses are known.
    pub async fn start(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let backends = Backends::default();
        let route = Route {
            backends: backends.clone(),
            next: Arc::default(),
            client: crate::admission::client_trusting(cert)?,
        };
        let app = axum::Router::new().fallback(forward).with_state(route);
        let (address, server) = crate::admission::serve_https(app, cert, key)?;
        Ok(Self {
            address,
            backends,
            _server: server,
        })
    }

    /// Sends new requests to `backends` from now on.
    pub fn route_to(&self, backends: Vec<SocketAddr>) {
        *self.backends.write().unwrap() = backends;
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

async fn forward(
    State(route): State<Route>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let backends = route.backends.read().unwrap().clone();
    let first = route.next.fetch_add(1, Ordering::Relaxed);
    let path = uri.path_and_query().map_or("/", |path| path.as_str());
    let mut last_error = String::from("no backend");
    for offset in 0..backends.len() {
        let backend = backends[(first + offset) % backends.len()];
        let mut request = route
            .client
            .request(method.clone(), format!("https://{backend}{path}"))
            .body(body.clone());
        if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let answered = async {
            let response = request.send().await?;
            let status = response.status();
            let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
            Ok::<_, reqwest::Error>((status, content_type, response.bytes().await?))
        };
        match answered.await {
            Ok((status, content_type, bytes)) => {
                let mut response = (status, bytes).into_response();
                if let Some(content_type) = content_type {
                    response
                        .headers_mut()
                        .insert(header::CONTENT_TYPE, content_type);
                }
                return response;
            }
            Err(error) => last_error = format!("{backend}: {error}"),
        }
    }
    (StatusCode::BAD_GATEWAY, last_error).into_response()
}
