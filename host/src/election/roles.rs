//! Which parts of a replica run only while it leads.
//!
//! Everything else (the API server, the plugin catalogue, precompilation)
//! runs on every replica for the life of the process. A [`LeaderRole`] is
//! started at the beginning of each leadership term and stopped at its end,
//! any number of times in one process. The elector calls
//! [`LeaderRoles::stop`] and waits for it *before* it reports itself a
//! follower or releases the Lease.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::task::JoinSet;

use crate::election::LeaderGuard;

/// How long a role may take to wind down after its term ends before it is
/// aborted. Its guard already refuses every action from the term's end, so
/// this bounds only clean-up, not safety.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Work that runs only on the leader.
///
/// `lead` is called at the start of every term. It must call
/// [`LeaderGuard::check`] immediately before each leader-only action (or
/// send its requests through a client fenced to the term,
/// [`crate::election::fence::Fence`], which checks every request) and
/// return soon after [`LeaderGuard::lost`] resolves.
pub trait LeaderRole: Send + Sync + 'static {
    /// A short name for logs.
    fn name(&self) -> &str;

    /// Runs the role for one term.
    fn lead(&self, guard: LeaderGuard) -> BoxFuture<'static, ()>;
}

/// The leader-only roles of a replica and the tasks of the current term.
#[derive(Default)]
pub struct LeaderRoles {
    roles: Vec<Arc<dyn LeaderRole>>,
    term: Option<Term>,
}

struct Term {
    guard: LeaderGuard,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for LeaderRoles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.roles.iter().map(|role| role.name()).collect();
        f.debug_struct("LeaderRoles")
            .field("roles", &names)
            .field("running", &self.term.is_some())
            .finish()
    }
}

impl LeaderRoles {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a role; it runs from the next term on.
    pub fn with(mut self, role: impl LeaderRole) -> Self {
        self.roles.push(Arc::new(role));
        self
    }

    /// Starts every role for the term that `guard` represents.
    pub fn start(&mut self, guard: LeaderGuard) {
        debug_assert!(self.term.is_none(), "a term is already running");
        let mut tasks = JoinSet::new();
        for role in &self.roles {
            tracing::debug!(role = role.name(), "starting leader-only role");
            tasks.spawn(role.lead(guard.clone()));
        }
        self.term = Some(Term { guard, tasks });
    }

    /// Resolves once every role of the current term has returned (they do
    /// soon after [`LeaderGuard::draining`]); at once without a term.
    /// Cancel-safe: a role that returned stays counted.
    pub async fn finished(&mut self) {
        if let Some(term) = &mut self.term {
            join_all(&mut term.tasks).await;
        }
    }

    /// Ends the current term and waits until every role has stopped
    /// (aborting any that take longer than [`STOP_GRACE`]).
    pub async fn stop(&mut self) {
        let Some(Term { guard, mut tasks }) = self.term.take() else {
            return;
        };
        guard.revoke();
        let drained = tokio::time::timeout(STOP_GRACE, join_all(&mut tasks)).await;
        if drained.is_err() {
            tracing::warn!(
                remaining = tasks.len(),
                "leader-only roles did not stop within the grace period; aborting them"
            );
            tasks.shutdown().await;
        }
    }
}

/// Waits for every task, saying so when one panicked.
async fn join_all(tasks: &mut JoinSet<()>) {
    while let Some(result) = tasks.join_next().await {
        if let Err(error) = result
            && error.is_panic()
        {
            tracing::error!(%error, "leader-only role panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::time::Instant;

    use super::*;

    /// Records when it starts and stops; optionally ignores its guard.
    #[derive(Clone, Default)]
    struct Recorder {
        events: Arc<Mutex<Vec<&'static str>>>,
        stubborn: bool,
    }

    impl LeaderRole for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }

        fn lead(&self, guard: LeaderGuard) -> BoxFuture<'static, ()> {
            let events = self.events.clone();
            let stubborn = self.stubborn;
            Box::pin(async move {
                events.lock().unwrap().push("started");
                if stubborn {
                    std::future::pending::<()>().await;
                }
                guard.lost().await;
                events.lock().unwrap().push("stopped");
            })
        }
    }

    fn guard() -> LeaderGuard {
        LeaderGuard::new(Instant::now() + Duration::from_secs(10))
    }

    #[tokio::test(start_paused = true)]
    async fn roles_run_once_per_term_and_stop_before_stop_returns() {
        let recorder = Recorder::default();
        let mut roles = LeaderRoles::new().with(recorder.clone());
        for _ in 0..3 {
            roles.start(guard());
            tokio::task::yield_now().await;
            roles.stop().await;
        }
        assert_eq!(
            *recorder.events.lock().unwrap(),
            [
                "started", "stopped", "started", "stopped", "started", "stopped"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_role_that_ignores_its_guard_is_aborted_after_the_grace_period() {
        let recorder = Recorder {
            stubborn: true,
            ..Recorder::default()
        };
        let mut roles = LeaderRoles::new().with(recorder.clone());
        roles.start(guard());
        tokio::task::yield_now().await;
        let began = Instant::now();
        roles.stop().await;
        assert_eq!(began.elapsed(), STOP_GRACE);
        assert_eq!(*recorder.events.lock().unwrap(), ["started"]);
    }
}
