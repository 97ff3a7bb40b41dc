//! A diagnostic leader-only role: it appends a line to a file each time it
//! acts, so tests and benchmarks can see exactly when each replica believed
//! it led (`leasehold run --activity-log PATH`).
//!
//! Each line is `<term> <unix-micros>`: the term counts this process's
//! leadership terms from 1, the time is taken right after the guard check.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;

use crate::election::LeaderGuard;
use crate::election::roles::LeaderRole;

/// Often enough to measure a handover to within a few milliseconds.
pub const DEFAULT_PERIOD: Duration = Duration::from_millis(10);

/// Appends a timestamped line per action while leading.
#[derive(Debug, Clone)]
pub struct ActivityLog {
    path: Arc<PathBuf>,
    period: Duration,
    terms: Arc<AtomicU64>,
}

impl ActivityLog {
    pub fn new(path: PathBuf, period: Duration) -> Self {
        Self {
            path: Arc::new(path),
            period,
            terms: Arc::default(),
        }
    }
}

impl LeaderRole for ActivityLog {
    fn name(&self) -> &str {
        "activity-log"
    }

    fn lead(&self, guard: LeaderGuard) -> BoxFuture<'static, ()> {
        let term = self.terms.fetch_add(1, Ordering::Relaxed) + 1;
        let (path, period) = (self.path.clone(), self.period);
        Box::pin(async move {
            let mut file = match OpenOptions::new().create(true).append(true).open(&*path) {
                Ok(file) => file,
                Err(error) => {
                    tracing::error!(%error, path = %path.display(), "cannot open activity log");
                    return;
                }
            };
            while guard.check().is_ok() {
                let micros = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_micros();
                if let Err(error) = writeln!(file, "{term} {micros}") {
                    tracing::error!(%error, "cannot write activity log");
                    return;
                }
                tokio::select! {
                    () = guard.draining() => return,
                    () = tokio::time::sleep(period) => {}
                }
            }
        })
    }
}
