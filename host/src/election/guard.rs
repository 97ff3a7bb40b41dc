//! The guard that leader-only work checks before every action.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One leadership term, as leader-only work sees it.
///
/// [`check`](Self::check) is the fence: it fails the instant the term's
/// deadline passes, even if the election loop has not yet noticed (for
/// example right after the process is resumed from SIGSTOP).
#[derive(Clone, Debug)]
pub struct LeaderGuard {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    valid_until: Mutex<Instant>,
    revoked: CancellationToken,
    /// The replica is shutting down: take no new work, finish what runs.
    /// The term stays valid (the elector keeps renewing) until the roles
    /// have stopped or the drain's limit passed.
    drain: CancellationToken,
    /// The term as the API server's fencing policy names it:
    /// `<lease namespace>/<lease name>/<holder>/<leaseTransitions>`.
    term: Option<String>,
}

/// Leader-only work may not act: the term ended or its deadline passed.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
#[error("this replica is no longer the leader")]
pub struct NotLeader;

impl LeaderGuard {
    pub(crate) fn new(valid_until: Instant) -> Self {
        Self::with_term(valid_until, None)
    }

    /// A guard for the term `term` names (see [`LeaderGuard::term`]).
    pub fn with_term(valid_until: Instant, term: Option<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                valid_until: Mutex::new(valid_until),
                revoked: CancellationToken::new(),
                drain: CancellationToken::new(),
                term,
            }),
        }
    }

    /// The term this guard stands for, as requests carry it:
    /// `<lease namespace>/<lease name>/<holder>/<leaseTransitions>`. Every
    /// term of a Lease has its own (each acquisition counts a transition).
    pub fn term(&self) -> Option<&str> {
        self.inner.term.as_deref()
    }

    /// Succeeds only while this replica's term is valid. Call it immediately
    /// before each leader-only action.
    pub fn check(&self) -> Result<(), NotLeader> {
        if self.inner.revoked.is_cancelled() || Instant::now() >= self.valid_until() {
            return Err(NotLeader);
        }
        Ok(())
    }

    pub fn is_leading(&self) -> bool {
        self.check().is_ok()
    }

    /// The instant at which this term ends unless it is renewed first.
    pub fn valid_until(&self) -> Instant {
        *self
            .inner
            .valid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves once the term is over: revoked by the elector, or its
    /// deadline passed without renewal.
    pub async fn lost(&self) {
        loop {
            let deadline = self.valid_until();
            tokio::select! {
                () = self.inner.revoked.cancelled() => return,
                () = tokio::time::sleep_until(deadline) => {
                    if self.check().is_err() {
                        return;
                    }
                    // Renewed while we slept: wait for the new deadline.
                }
            }
        }
    }

    /// Resolves once leader-only work should wind down: the replica is
    /// shutting down ([`drain`](Self::drain)) or the term is over. Work that
    /// is in flight may finish while [`check`](Self::check) still passes.
    pub async fn draining(&self) {
        tokio::select! {
            () = self.inner.drain.cancelled() => {}
            () = self.lost() => {}
        }
    }

    /// Asks leader-only work to wind down without ending the term.
    pub(crate) fn drain(&self) {
        self.inner.drain.cancel();
    }

    /// Moves the deadline forward after a successful renewal. A deadline
    /// never moves backward, and a revoked term stays revoked.
    pub(crate) fn extend(&self, until: Instant) {
        let mut valid_until = self
            .inner
            .valid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *valid_until = (*valid_until).max(until);
    }

    /// Ends the term now.
    pub(crate) fn revoke(&self) {
        self.inner.revoked.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn guard_fails_at_its_deadline_without_anyone_revoking_it() {
        let guard = LeaderGuard::new(Instant::now() + Duration::from_secs(10));
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(guard.check(), Ok(()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(guard.check(), Err(NotLeader));
    }

    #[tokio::test(start_paused = true)]
    async fn renewal_moves_the_deadline_forward_only() {
        let start = Instant::now();
        let guard = LeaderGuard::new(start + Duration::from_secs(10));
        guard.extend(start + Duration::from_secs(12));
        guard.extend(start + Duration::from_secs(5));
        assert_eq!(guard.valid_until(), start + Duration::from_secs(12));
    }

    #[tokio::test(start_paused = true)]
    async fn lost_waits_for_renewed_deadlines_then_resolves() {
        let start = Instant::now();
        let guard = LeaderGuard::new(start + Duration::from_secs(10));
        let waiter = tokio::spawn({
            let guard = guard.clone();
            async move {
                guard.lost().await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(8)).await;
        guard.extend(start + Duration::from_secs(18));
        assert_eq!(waiter.await.unwrap(), start + Duration::from_secs(18));
    }

    #[tokio::test(start_paused = true)]
    async fn revoked_guard_fails_at_once() {
        let guard = LeaderGuard::new(Instant::now() + Duration::from_secs(10));
        guard.revoke();
        guard.lost().await;
        assert_eq!(guard.check(), Err(NotLeader));
        guard.extend(Instant::now() + Duration::from_secs(60));
        assert!(!guard.is_leading(), "a revoked term stays revoked");
    }
}
