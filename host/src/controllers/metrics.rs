//! Per-plugin metrics: how often each plugin is instantiated, how its
//! reconciles end and how long they take, its calls to the cluster by verb
//! and outcome, reconciles waiting for an instance slot and running, and
//! the largest memory an instance grew to. Instantiations happen only on
//! the leader, which the end-to-end tests check through `/metrics`.
//!
//! The work queue itself belongs to kube-runtime's controller, which does
//! not expose its length; `plugin_reconciles_waiting` counts reconciles the
//! queue has released that wait for one of the plugin's instance slots.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    plugin: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    plugin: String,
    /// As the contract names it: `get`, `list`, `update-status`, ...
    call: &'static str,
    /// 200, or the error's status (0: refused before the API server).
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    plugin: String,
    result: &'static str,
}

/// Metrics of every plugin, labelled by plugin name.
#[derive(Clone, Debug)]
pub struct PluginMetrics {
    instantiations: Family<PluginLabel, Counter>,
    reconciles: Family<ResultLabel, Counter>,
    limited: Family<ReasonLabel, Counter>,
    api_requests: Family<PluginLabel, Counter>,
    cached_reads: Family<PluginLabel, Counter>,
    host_calls: Family<CallLabels, Counter>,
    durations: Family<PluginLabel, Histogram>,
    waiting: Family<PluginLabel, Gauge>,
    running: Family<PluginLabel, Gauge>,
    memory_peak: Family<PluginLabel, Gauge>,
}

impl Default for PluginMetrics {
    fn default() -> Self {
        Self {
            instantiations: Family::default(),
            reconciles: Family::default(),
            limited: Family::default(),
            api_requests: Family::default(),
            cached_reads: Family::default(),
            host_calls: Family::default(),
            // 1 ms to about 16 s: past a reconcile's longest timeout.
            durations: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 15))
            }),
            waiting: Family::default(),
            running: Family::default(),
            memory_peak: Family::default(),
        }
    }
}

/// Holds a gauge up by one while it lives.
#[derive(Debug)]
pub struct Held(Gauge);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl PluginMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "plugin_instantiations",
            "Plugin instances created (only the leader creates any)",
            self.instantiations.clone(),
        );
        registry.register(
            "plugin_reconciles",
            "Plugin calls by result: ok, error (the plugin returned one) or trap (trap, timeout, memory)",
            self.reconciles.clone(),
        );
        registry.register(
            "plugin_limited",
            "Things a plugin did that a bound refused or cut, by reason (TooManyCalls, RequestTooLarge, ResponseTooLarge, Timeout, Throttled, RequeueFloored, LogsDropped, OutboundDenied)",
            self.limited.clone(),
        );
        registry.register(
            "plugin_api_requests",
            "Requests sent to the API server for a plugin (its calls, discovery, its finalizers)",
            self.api_requests.clone(),
        );
        registry.register(
            "plugin_host_calls",
            "A plugin's calls by call (get, list, create, replace, apply, patch, delete, update-status, emit-event; http for an outbound request) and code (200 or the response's status, the error's, or 0 when refused before it was sent)",
            self.host_calls.clone(),
        );
        registry.register(
            "plugin_reconcile_duration_seconds",
            "Time of one reconcile (or cleanup) of a plugin, instantiation included",
            self.durations.clone(),
        );
        registry.register(
            "plugin_reconciles_waiting",
            "Reconciles of a plugin waiting for one of its instance slots (maxConcurrentReconciles)",
            self.waiting.clone(),
        );
        registry.register(
            "plugin_reconciles_running",
            "Reconciles of a plugin running now",
            self.running.clone(),
        );
        registry.register(
            "plugin_memory_peak_bytes",
            "The largest linear memory an instance of a plugin has grown to since this replica started it",
            self.memory_peak.clone(),
        );
        registry.register(
            "plugin_cached_reads",
            "A plugin's get and list calls answered from the host's watch caches, without a request",
            self.cached_reads.clone(),
        );
    }

    pub fn host_call(&self, plugin: &str, call: &'static str, code: u16) {
        self.host_calls
            .get_or_create(&CallLabels {
                plugin: plugin.to_owned(),
                call,
                code,
            })
            .inc();
    }

    pub fn took(&self, plugin: &str, took: std::time::Duration) {
        self.durations
            .get_or_create(&label(plugin))
            .observe(took.as_secs_f64());
    }

    /// Counts a reconcile waiting for a slot until the result is dropped.
    pub fn waiting(&self, plugin: &str) -> Held {
        held(self.waiting.get_or_create(&label(plugin)).clone())
    }

    /// Counts a running reconcile until the result is dropped.
    pub fn running(&self, plugin: &str) -> Held {
        held(self.running.get_or_create(&label(plugin)).clone())
    }

    pub fn memory_peak(&self, plugin: &str, bytes: usize) {
        let gauge = self.memory_peak.get_or_create(&label(plugin));
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        // A racing larger peak may be overwritten by a smaller one; the
        // next reconcile of that size restores it.
        if bytes > gauge.get() {
            gauge.set(bytes);
        }
    }

    pub fn cached_read(&self, plugin: &str) {
        self.cached_reads
            .get_or_create(&PluginLabel {
                plugin: plugin.to_owned(),
            })
            .inc();
    }

    pub fn limited(&self, plugin: &str, reason: &'static str) {
        self.limited
            .get_or_create(&ReasonLabel {
                plugin: plugin.to_owned(),
                reason,
            })
            .inc();
    }

    pub fn api_request(&self, plugin: &str) {
        self.api_requests
            .get_or_create(&PluginLabel {
                plugin: plugin.to_owned(),
            })
            .inc();
    }

    pub fn instantiated(&self, plugin: &str) {
        self.instantiations
            .get_or_create(&PluginLabel {
                plugin: plugin.to_owned(),
            })
            .inc();
    }

    pub fn reconciled(&self, plugin: &str, result: &'static str) {
        self.reconciles
            .get_or_create(&ResultLabel {
                plugin: plugin.to_owned(),
                result,
            })
            .inc();
    }
}

fn label(plugin: &str) -> PluginLabel {
    PluginLabel {
        plugin: plugin.to_owned(),
    }
}

fn held(gauge: Gauge) -> Held {
    gauge.inc();
    Held(gauge)
}
