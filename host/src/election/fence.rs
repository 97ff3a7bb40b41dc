//! The fence as a client layer: a request made for leader-only work is sent
//! only while the term it was made in is valid.
//!
//! The check sits in the client's tower stack, below every caller, so no
//! path can skip it: a plugin's own calls, the host's finalizer patches for
//! that plugin, discovery and access reviews all pass here. It runs when the
//! request is dispatched, the last moment before it leaves the process.
//!
//! That check is the host's own clock; a request sent just before the
//! deadline can still arrive after another replica took over. So, with
//! fencing on, the fence also writes the term into the request as an
//! impersonation extra (`leasehold.dev/term`, see [`LeaderGuard::term`]),
//! and the chart's ValidatingAdmissionPolicy, whose parameter is the
//! election Lease, refuses a write whose term is not the Lease's current
//! one: the API server, not the host's clock, has the last word.

use std::future::{Ready, ready};
use std::task::{Context, Poll};

use futures::future::{Either, MapErr, TryFutureExt};
use tower::{BoxError, Layer, Service};

use super::{LeaderGuard, NotLeader};

/// The impersonation extra that carries the term: `Impersonate-Extra-` and
/// the key `leasehold.dev/term`, percent-encoded as the API server expects.
pub const TERM_HEADER: &str = "impersonate-extra-leasehold.dev%2fterm";
/// The key of that extra as the API server (and CEL) sees it.
pub const TERM_EXTRA: &str = "leasehold.dev/term";

/// What a fence lets through.
#[derive(Clone, Debug)]
pub struct Fence(Scope);

#[derive(Clone, Debug)]
enum Scope {
    /// Every request, until `guard`'s term is over.
    Term {
        guard: LeaderGuard,
        carry_term: bool,
    },
    /// Reads only (GET: get, list, watch, discovery), on any replica, for
    /// work that must have no side effects, such as an admission review
    /// (its webhook declares `sideEffects: None`).
    ReadsOnly,
}

/// A write refused by a reads-only fence.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "an admission review may only read (its webhook declares sideEffects: None); write from reconcile instead"
)]
pub struct ReadsOnly;

impl Fence {
    /// A fence for the term `guard` stands for.
    pub fn new(guard: LeaderGuard) -> Self {
        Self(Scope::Term {
            guard,
            carry_term: false,
        })
    }

    /// The same fence, also sending the term with every request for the API
    /// server to check. Only for a client that impersonates: the API server
    /// takes extras only together with a user to impersonate.
    pub fn carrying_term(guard: LeaderGuard) -> Self {
        Self(Scope::Term {
            guard,
            carry_term: true,
        })
    }

    /// A fence that lets reads through on any replica and refuses writes.
    pub fn reads_only() -> Self {
        Self(Scope::ReadsOnly)
    }

    /// Whether a request with `method` may leave now, for work that does
    /// not pass the fenced client (a plugin's outbound HTTP).
    pub fn admit(&self, method: &http::Method) -> Result<(), BoxError> {
        self.0.admit(method)
    }
}

impl Scope {
    /// A read on a reads-only fence, anything during the term.
    fn admit(&self, method: &http::Method) -> Result<(), BoxError> {
        match self {
            Scope::ReadsOnly if method == http::Method::GET || method == http::Method::HEAD => {
                Ok(())
            }
            Scope::ReadsOnly => Err(Box::new(ReadsOnly)),
            Scope::Term { guard, .. } => guard.check().map_err(Into::into),
        }
    }
}

impl<S> Layer<S> for Fence {
    type Service = Fenced<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Fenced {
            inner,
            scope: self.0.clone(),
        }
    }
}

/// A service behind a [`Fence`].
#[derive(Clone, Debug)]
pub struct Fenced<S> {
    inner: S,
    scope: Scope,
}

type IntoBox<E> = fn(E) -> BoxError;

impl<S, B> Service<http::Request<B>> for Fenced<S>
where
    S: Service<http::Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future =
        Either<Ready<Result<S::Response, BoxError>>, MapErr<S::Future, IntoBox<S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Err(refused) = self.scope.admit(request.method()) {
            return Either::Left(ready(Err(refused)));
        }
        if let Scope::Term {
            guard,
            carry_term: true,
        } = &self.scope
            && let Some(term) = guard.term()
        {
            match http::HeaderValue::from_str(term) {
                Ok(value) => {
                    request
                        .headers_mut()
                        .insert(http::HeaderName::from_static(TERM_HEADER), value);
                }
                // An identity is a DNS name; anything else is a bug to see.
                Err(error) => return Either::Left(ready(Err(Box::new(error)))),
            }
        }
        Either::Right(self.inner.call(request).map_err(Into::into as IntoBox<_>))
    }
}

/// Whether a client error is the fence's refusal of a term that ended,
/// however deep the client wrapped it.
pub fn refused(error: &kube::Error) -> bool {
    caused_by::<NotLeader>(error)
}

/// Whether a client error is a reads-only fence's refusal of a write.
pub fn refused_write(error: &kube::Error) -> bool {
    caused_by::<ReadsOnly>(error)
}

fn caused_by<E: std::error::Error + 'static>(error: &kube::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error.is::<E>() {
            return true;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::time::Instant;
    use tower::ServiceExt;

    use super::*;

    /// An inner service that counts what reaches it.
    fn counting(
        sent: &Arc<AtomicUsize>,
    ) -> impl Service<http::Request<()>, Response = (), Error = BoxError> {
        let sent = sent.clone();
        tower::service_fn(move |_: http::Request<()>| {
            sent.fetch_add(1, Ordering::SeqCst);
            ready(Ok::<(), BoxError>(()))
        })
    }

    fn request() -> http::Request<()> {
        http::Request::new(())
    }

    #[tokio::test(start_paused = true)]
    async fn outbound_requests_are_held_to_the_same_fence() {
        let guard = LeaderGuard::new(Instant::now() + Duration::from_secs(10));
        let fence = Fence::new(guard);
        assert!(fence.admit(&http::Method::POST).is_ok());
        tokio::time::advance(Duration::from_secs(10)).await;
        let refused = fence.admit(&http::Method::GET).unwrap_err();
        assert!(refused.is::<NotLeader>(), "{refused}");

        let reads_only = Fence::reads_only();
        assert!(reads_only.admit(&http::Method::GET).is_ok());
        let refused = reads_only.admit(&http::Method::POST).unwrap_err();
        assert!(refused.is::<ReadsOnly>(), "{refused}");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_pass_while_the_term_is_valid() {
        let sent = Arc::new(AtomicUsize::new(0));
        let guard = LeaderGuard::new(Instant::now() + Duration::from_secs(10));
        let service = Fence::new(guard).layer(counting(&sent));
        service.oneshot(request()).await.unwrap();
        assert_eq!(sent.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn no_request_leaves_once_the_deadline_passes() {
        let sent = Arc::new(AtomicUsize::new(0));
        let guard = LeaderGuard::new(Instant::now() + Duration::from_secs(10));
        let mut service = Fence::new(guard).layer(counting(&sent));
        tokio::time::advance(Duration::from_secs(10)).await;
        let error = service
            .ready()
            .await
            .unwrap()
            .call(request())
            .await
            .unwrap_err();
        assert!(error.is::<NotLeader>(), "{error}");
        assert_eq!(sent.load(Ordering::SeqCst), 0, "the request was sent");
    }

    #[tokio::test]
    async fn a_reads_only_fence_sends_reads_and_refuses_writes() {
        let sent = Arc::new(AtomicUsize::new(0));
        let fence = Fence::reads_only();
        fence
            .layer(counting(&sent))
            .oneshot(request())
            .await
            .unwrap();
        assert_eq!(sent.load(Ordering::SeqCst), 1, "the read was not sent");
        for method in [
            http::Method::POST,
            http::Method::PUT,
            http::Method::PATCH,
            http::Method::DELETE,
        ] {
            let mut write = request();
            *write.method_mut() = method.clone();
            let error = fence
                .layer(counting(&sent))
                .oneshot(write)
                .await
                .unwrap_err();
            assert!(error.is::<ReadsOnly>(), "{method}: {error}");
        }
        assert_eq!(sent.load(Ordering::SeqCst), 1, "a write was sent");
    }

    #[tokio::test(start_paused = true)]
    async fn no_request_leaves_once_the_term_is_revoked() {
        let sent = Arc::new(AtomicUsize::new(0));
        let guard = LeaderGuard::new(Instant::now() + Duration::from_secs(10));
        let service = Fence::new(guard.clone()).layer(counting(&sent));
        guard.revoke();
        assert!(service.oneshot(request()).await.is_err());
        assert_eq!(sent.load(Ordering::SeqCst), 0, "the request was sent");
    }

    #[tokio::test(start_paused = true)]
    async fn with_fencing_each_request_carries_its_term_and_only_then() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recording = {
            let seen = seen.clone();
            move || {
                let seen = seen.clone();
                tower::service_fn(move |request: http::Request<()>| {
                    let term = request.headers().get(TERM_HEADER).cloned();
                    seen.lock().unwrap().push(term);
                    ready(Ok::<(), BoxError>(()))
                })
            }
        };
        let term = "leasehold/leasehold/replica-a/7".to_owned();
        let guard = LeaderGuard::with_term(Instant::now() + Duration::from_secs(10), Some(term));
        Fence::carrying_term(guard.clone())
            .layer(recording())
            .oneshot(request())
            .await
            .unwrap();
        Fence::new(guard)
            .layer(recording())
            .oneshot(request())
            .await
            .unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].as_ref().unwrap(), "leasehold/leasehold/replica-a/7");
        assert_eq!(seen[1], None);
    }

    #[test]
    fn the_refusal_is_recognised_inside_a_client_error() {
        let error = kube::Error::Service(Box::new(NotLeader));
        assert!(refused(&error));
        let other = kube::Error::Service("connection reset".into());
        assert!(!refused(&other));
    }
}
