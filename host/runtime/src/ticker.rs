//! The epoch ticker: what turns a plugin's wall-clock budget into an
//! interruption.
//!
//! Every store's deadline is one epoch ahead, and a thread of its own
//! advances the engines' epochs every [`EPOCH_TICK`], so a plugin spinning
//! on a tokio worker cannot delay the tick that interrupts it. The thread
//! ticks only while plugin code may run: after [`IDLE_TICKS`] ticks with
//! none, it parks, and the next call wakes it. An idle replica (most
//! followers, most of the time) then makes no wakeups for it, where it made
//! two hundred a second.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::Engine;

/// How often the engine's epoch advances: the granularity of every timeout.
/// Kubewarden ticks once a second; a fine tick lets a 50 ms budget mean 50 ms.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Ticks without any plugin code running before the ticker parks: a
/// second, so a replica answering reviews or reconciling now and then
/// does not park and wake between them.
pub(crate) const IDLE_TICKS: u32 = 200;

/// Ticks the engines' epochs while any [`Running`] is held; stops when
/// dropped.
pub(crate) struct EpochTicker {
    shared: Arc<Shared>,
}

/// What the ticker and the calls share: cheap to clone into every
/// compiled plugin and instance.
#[derive(Clone)]
pub(crate) struct Ticking {
    shared: Arc<Shared>,
}

struct Shared {
    stop: AtomicBool,
    /// Calls and instantiations that may be running plugin code now.
    running: AtomicUsize,
    /// The ticker has parked, or is about to: the next call wakes it.
    parked: AtomicBool,
    /// Epochs advanced so far (for tests and `Debug`).
    ticks: AtomicU64,
    thread: OnceLock<Thread>,
}

/// Held while plugin code may run: the ticker does not park meanwhile.
#[must_use = "the ticker may park while no Running is held"]
pub(crate) struct Running<'a> {
    shared: &'a Shared,
}

impl EpochTicker {
    /// Starts the thread that ticks `engines`, parking after `idle_ticks`
    /// ticks with nothing running.
    pub(crate) fn start(engines: [Engine; 2], idle_ticks: u32) -> Self {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            running: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
            thread: OnceLock::new(),
        });
        let ticking = shared.clone();
        let thread = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || tick(&ticking, &engines, idle_ticks))
            .expect("spawning the epoch thread");
        // Set before any call can start: the runtime is not returned yet.
        let _ = shared.thread.set(thread.thread().clone());
        Self { shared }
    }

    /// A handle for the calls to say they run.
    pub(crate) fn ticking(&self) -> Ticking {
        Ticking {
            shared: self.shared.clone(),
        }
    }
}

fn tick(shared: &Shared, engines: &[Engine; 2], idle_ticks: u32) {
    let mut idle = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        std::thread::sleep(EPOCH_TICK);
        for engine in engines {
            engine.increment_epoch();
        }
        shared.ticks.fetch_add(1, Ordering::Relaxed);
        if shared.running.load(Ordering::SeqCst) > 0 {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle < idle_ticks {
            continue;
        }
        // Said before looking again: a call starting now either is seen
        // running here or sees `parked` and unparks this thread (an unpark
        // before the park makes the park return at once).
        shared.parked.store(true, Ordering::SeqCst);
        if shared.running.load(Ordering::SeqCst) == 0 && !shared.stop.load(Ordering::SeqCst) {
            std::thread::park();
        }
        shared.parked.store(false, Ordering::SeqCst);
        idle = 0;
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.shared.thread.get() {
            thread.unpark();
        }
    }
}

impl Ticking {
    /// Says plugin code may run until the returned guard is dropped, and
    /// wakes the ticker if it parked: the call's first tick then comes
    /// within [`EPOCH_TICK`], as on a ticker that never parked.
    pub(crate) fn running(&self) -> Running<'_> {
        self.shared.running.fetch_add(1, Ordering::SeqCst);
        if self.shared.parked.load(Ordering::SeqCst)
            && let Some(thread) = self.shared.thread.get()
        {
            thread.unpark();
        }
        Running {
            shared: &self.shared,
        }
    }

    /// Whether the ticker is parked (or about to): nothing has run for
    /// [`IDLE_TICKS`] ticks.
    pub(crate) fn parked(&self) -> bool {
        self.shared.parked.load(Ordering::SeqCst)
    }

    /// Epochs advanced so far.
    pub(crate) fn ticks(&self) -> u64 {
        self.shared.ticks.load(Ordering::Relaxed)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.shared.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Ticking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticking")
            .field("running", &self.shared.running.load(Ordering::Relaxed))
            .field("parked", &self.parked())
            .field("ticks", &self.ticks())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn engines() -> [Engine; 2] {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).unwrap();
        [engine.clone(), engine]
    }

    /// Waits for `condition`, failing after `limit`: only a broken ticker
    /// takes that long.
    fn eventually(limit: Duration, what: &str, condition: impl Fn() -> bool) {
        let give_up = Instant::now() + limit;
        while !condition() {
            assert!(Instant::now() < give_up, "not within {limit:?}: {what}");
            std::thread::sleep(EPOCH_TICK);
        }
    }

    #[test]
    fn an_idle_ticker_parks_and_a_call_wakes_it() {
        let ticker = EpochTicker::start(engines(), 2);
        let ticking = ticker.ticking();
        eventually(Duration::from_secs(30), "parked", || ticking.parked());
        let parked_at = ticking.ticks();

        let running = ticking.running();
        eventually(Duration::from_secs(30), "ticking again", || {
            ticking.ticks() > parked_at
        });
        // It keeps ticking while the call runs, however long.
        let ticked = ticking.ticks();
        eventually(Duration::from_secs(30), "ticking on", || {
            ticking.ticks() > ticked + 8
        });
        assert!(!ticking.parked(), "{ticking:?}");
        drop(running);
        eventually(Duration::from_secs(30), "parked again", || ticking.parked());
    }

    #[test]
    fn a_dropped_ticker_stops_even_when_parked() {
        let ticker = EpochTicker::start(engines(), 1);
        let ticking = ticker.ticking();
        eventually(Duration::from_secs(30), "parked", || ticking.parked());
        drop(ticker);
        eventually(Duration::from_secs(30), "the thread gone", || {
            Arc::strong_count(&ticking.shared) == 1
        });
    }
}
