//! The fence as a client layer: a request made for leader-only work is sent
//! only while the term it was made in is valid.
//!
//! The check sits in the client's tower stack, below every caller, so no
//! path can skip it: a plugin's own calls, the host's finalizer patches for
//! that plugin, discovery and access reviews all pass here. It runs when the
//! request is dispatched, the last moment before it leaves the process.

use std::future::{Ready, ready};
use std::task::{Context, Poll};

use futures::future::{Either, MapErr, TryFutureExt};
use tower::{BoxError, Layer, Service};

use super::{LeaderGuard, NotLeader};

/// Refuses every request once `guard`'s term is over.
#[derive(Clone, Debug)]
pub struct Fence {
    guard: LeaderGuard,
}

impl Fence {
    /// A fence for the term `guard` stands for.
    pub fn new(guard: LeaderGuard) -> Self {
        Self { guard }
    }
}

impl<S> Layer<S> for Fence {
    type Service = Fenced<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Fenced {
            inner,
            guard: self.guard.clone(),
        }
    }
}

/// A service behind a [`Fence`].
#[derive(Clone, Debug)]
pub struct Fenced<S> {
    inner: S,
    guard: LeaderGuard,
}

type IntoBox<E> = fn(E) -> BoxError;

impl<S, Request> Service<Request> for Fenced<S>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future =
        Either<Ready<Result<S::Response, BoxError>>, MapErr<S::Future, IntoBox<S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self.guard.check() {
            Err(not_leader) => Either::Left(ready(Err(Box::new(not_leader)))),
            Ok(()) => Either::Right(self.inner.call(request).map_err(Into::into as IntoBox<_>)),
        }
    }
}

/// Whether a client error is the fence's refusal, however deep the client
/// wrapped it.
pub fn refused(error: &kube::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error.is::<NotLeader>() {
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
    fn counting(sent: &Arc<AtomicUsize>) -> impl Service<(), Response = (), Error = BoxError> {
        let sent = sent.clone();
        tower::service_fn(move |()| {
            sent.fetch_add(1, Ordering::SeqCst);
            ready(Ok::<(), BoxError>(()))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn requests_pass_while_the_term_is_valid() {
        let sent = Arc::new(AtomicUsize::new(0));
        let guard = LeaderGuard::new(Instant::now() + Duration::from_secs(10));
        let service = Fence::new(guard).layer(counting(&sent));
        service.oneshot(()).await.unwrap();
        assert_eq!(sent.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn no_request_leaves_once_the_deadline_passes() {
        let sent = Arc::new(AtomicUsize::new(0));
        let guard = LeaderGuard::new(Instant::now() + Duration::from_secs(10));
        let mut service = Fence::new(guard).layer(counting(&sent));
        tokio::time::advance(Duration::from_secs(10)).await;
        let error = service.ready().await.unwrap().call(()).await.unwrap_err();
        assert!(error.is::<NotLeader>(), "{error}");
        assert_eq!(sent.load(Ordering::SeqCst), 0, "the request was sent");
    }

    #[tokio::test(start_paused = true)]
    async fn no_request_leaves_once_the_term_is_revoked() {
        let sent = Arc::new(AtomicUsize::new(0));
        let guard = LeaderGuard::new(Instant::now() + Duration::from_secs(10));
        let service = Fence::new(guard.clone()).layer(counting(&sent));
        guard.revoke();
        assert!(service.oneshot(()).await.is_err());
        assert_eq!(sent.load(Ordering::SeqCst), 0, "the request was sent");
    }

    #[test]
    fn the_refusal_is_recognised_inside_a_client_error() {
        let error = kube::Error::Service(Box::new(NotLeader));
        assert!(refused(&error));
        let other = kube::Error::Service("connection reset".into());
        assert!(!refused(&other));
    }
}
