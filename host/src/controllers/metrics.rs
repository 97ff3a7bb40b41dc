//! Per-plugin metrics: how often each plugin is instantiated and how its
//! reconciles end. Instantiations happen only on the leader, which the
//! end-to-end tests check through `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
struct ResultLabel {
    plugin: String,
    result: &'static str,
}

/// Counters for every plugin, labelled by plugin name.
#[derive(Clone, Debug, Default)]
pub struct PluginMetrics {
    instantiations: Family<PluginLabel, Counter>,
    reconciles: Family<ResultLabel, Counter>,
    limited: Family<ReasonLabel, Counter>,
    api_requests: Family<PluginLabel, Counter>,
    cached_reads: Family<PluginLabel, Counter>,
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
            "Things a plugin did that a bound refused or cut, by reason (TooManyCalls, RequestTooLarge, ResponseTooLarge, Timeout, Throttled, RequeueFloored, LogsDropped)",
            self.limited.clone(),
        );
        registry.register(
            "plugin_api_requests",
            "Requests sent to the API server for a plugin (its calls, discovery, its finalizers)",
            self.api_requests.clone(),
        );
        registry.register(
            "plugin_cached_reads",
            "A plugin's get and list calls answered from the host's watch caches, without a request",
            self.cached_reads.clone(),
        );
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
