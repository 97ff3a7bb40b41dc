//! A plugin's API budget as a client layer: every request sent for the
//! plugin waits for a token of its bucket (`qps`, `burst`), the way
//! client-go's token-bucket limiter holds a controller's client, and is
//! counted. Waiting counts against the reconcile's deadline, so a plugin
//! over its budget slows down instead of hammering the API server, and a
//! reconcile that cannot get a token in time fails with `Timeout`.
//!
//! The bucket is `governor`'s (GCRA, the standard Rust rate limiter).

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{MapErr, TryFutureExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tower::{BoxError, Layer, Service};

/// Where a plugin's use of the API server is counted: each request sent,
/// and each bound it met (`reason` as its error says it, such as
/// `Throttled` or `TooManyCalls`).
pub trait Accounting: Send + Sync {
    fn sent(&self);
    fn limited(&self, reason: &'static str, message: &str);
    /// A read answered from the host's caches, without a request.
    fn served_from_cache(&self) {}
    /// A plugin's call ended with `code` (see `Backend::called`).
    fn called(&self, call: &'static str, code: u16) {
        let _ = (call, code);
    }
}

/// Counts nothing: for a bridge outside a cluster (`plugin validate`).
#[derive(Debug)]
pub struct Unaccounted;

impl Accounting for Unaccounted {
    fn sent(&self) {}
    fn limited(&self, _: &'static str, _: &str) {}
}

/// Holds requests to `qps` per second with bursts of `burst`.
#[derive(Clone)]
pub struct Throttle {
    bucket: Arc<DefaultDirectRateLimiter>,
    observer: Arc<dyn Accounting>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle").finish_non_exhaustive()
    }
}

impl Throttle {
    pub fn new(qps: NonZeroU32, burst: NonZeroU32, observer: Arc<dyn Accounting>) -> Self {
        let quota = Quota::per_second(qps).allow_burst(burst);
        Self {
            bucket: Arc::new(RateLimiter::direct(quota)),
            observer,
        }
    }

    /// Waits for a token, as a request through the layer does: for a
    /// plugin's work that does not pass its client (outbound HTTP).
    pub async fn acquire(&self) {
        if self.bucket.check().is_err() {
            self.observer.limited("Throttled", THROTTLED);
            self.bucket.until_ready().await;
        }
    }
}

/// What a plugin over its budget is told (once per wait, in its counters).
const THROTTLED: &str = "requests over the plugin's apiQPS wait their turn";

impl<S> Layer<S> for Throttle {
    type Service = Throttled<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Throttled {
            inner,
            throttle: self.clone(),
            token: false,
            waiting: None,
        }
    }
}

/// A service behind a [`Throttle`]. The token is taken in `poll_ready`,
/// so the client's buffer holds this plugin's requests (and only these)
/// while the bucket is empty.
pub struct Throttled<S> {
    inner: S,
    throttle: Throttle,
    /// A token is held for the next `call`.
    token: bool,
    waiting: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<S> std::fmt::Debug for Throttled<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttled")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

type IntoBox<E> = fn(E) -> BoxError;

impl<S, Request> Service<Request> for Throttled<S>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = MapErr<S::Future, IntoBox<S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.token {
            if self.waiting.is_none() {
                if self.throttle.bucket.check().is_ok() {
                    self.token = true;
                } else {
                    self.throttle.observer.limited("Throttled", THROTTLED);
                    let bucket = self.throttle.bucket.clone();
                    self.waiting = Some(Box::pin(async move { bucket.until_ready().await }));
                }
            }
            if let Some(waiting) = &mut self.waiting {
                std::task::ready!(waiting.as_mut().poll(cx));
                self.waiting = None;
                self.token = true;
            }
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.token = false;
        self.throttle.observer.sent();
        self.inner.call(request).map_err(Into::into as IntoBox<_>)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use tower::ServiceExt;

    use super::*;

    #[derive(Default)]
    struct Count {
        sent: AtomicUsize,
        throttled: AtomicUsize,
    }

    impl Accounting for Count {
        fn sent(&self) {
            self.sent.fetch_add(1, Ordering::SeqCst);
        }
        fn limited(&self, reason: &'static str, _: &str) {
            assert_eq!(reason, "Throttled");
            self.throttled.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_burst_passes_at_once_and_the_rest_wait_for_their_tokens() {
        let count = Arc::new(Count::default());
        let throttle = Throttle::new(
            NonZeroU32::new(20).unwrap(),
            NonZeroU32::new(5).unwrap(),
            count.clone(),
        );
        let started = Instant::now();
        for _ in 0..5 {
            throttle
                .layer(tower::service_fn(|()| async { Ok::<(), BoxError>(()) }))
                .oneshot(())
                .await
                .unwrap();
        }
        assert_eq!(
            count.throttled.load(Ordering::SeqCst),
            0,
            "the burst waited"
        );
        for _ in 0..10 {
            throttle
                .layer(tower::service_fn(|()| async { Ok::<(), BoxError>(()) }))
                .oneshot(())
                .await
                .unwrap();
        }
        // Ten more at 20 per second: at least ~0.5 s; only a lower bound is
        // asserted, so a slow machine cannot fail it.
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(count.sent.load(Ordering::SeqCst), 15);
        assert!(count.throttled.load(Ordering::SeqCst) >= 9);
    }
}
