//! What the host needs to run a plugin, whichever way it was declared: a
//! manifest file or a Plugin object.

use std::sync::Arc;

use kube::ResourceExt;
use serde_json::Value;

use super::limits::{Budget, InvalidField, parse_budget, parse_limits};
use super::resource::Plugin;
use crate::admission::Declaration;
use crate::runtime::{AllowedHosts, Backend, HostContext, Limits};

/// A plugin's identity, configuration and limits (not its component).
#[derive(Clone, Debug, PartialEq)]
pub struct Definition {
    /// Unique among a replica's plugins: a manifest's `name`, or
    /// `namespace/name` of a Plugin object. Labels metrics and logs.
    pub name: String,
    /// Who the plugin acts as.
    pub service_account: ServiceAccount,
    /// The configuration handed to the plugin, as JSON text.
    pub config: Arc<str>,
    pub limits: Limits,
    /// Its use of the API server: rate and requeue floor.
    pub budget: Budget,
    /// The admission webhooks it serves, if any.
    pub admission: Option<Arc<Declaration>>,
    /// Where its outbound HTTP requests may go.
    pub allowed_hosts: Arc<AllowedHosts>,
}

/// A ServiceAccount by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccount {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl ServiceAccount {
    /// `base`, acting as this account: everything sent with it is judged by
    /// the API server against the account's RBAC, not the host's.
    pub fn impersonated_by(&self, base: &kube::Config) -> kube::Config {
        let mut config = base.clone();
        // Only the user: the API server then gives the request the groups a
        // real token of that account carries (system:serviceaccounts, the
        // namespace's, system:authenticated). Naming groups too would need
        // `impersonate` on groups, which would let the host claim any group.
        config.auth_info.impersonate = Some(format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.name
        ));
        config
    }
}

impl std::fmt::Display for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl Definition {
    /// What one instance of the plugin answers its imports with: `backend`
    /// for its calls, while handling `object` (for log lines).
    pub fn context(&self, backend: Arc<dyn Backend>, object: Option<String>) -> HostContext {
        HostContext {
            backend,
            config: self.config.clone(),
            object,
            allowed_hosts: self.allowed_hosts.clone(),
        }
    }

    /// The definition a Plugin object asks for.
    pub fn of(plugin: &Plugin) -> Result<Self, InvalidField> {
        let namespace = plugin.namespace().unwrap_or_default();
        let spec = &plugin.spec;
        if spec.service_account_name.is_empty() {
            return Err(InvalidField::new(
                "serviceAccountName",
                "must name a ServiceAccount",
            ));
        }
        let limits = spec.limits.clone().unwrap_or_default();
        let mut parsed = parse_limits(
            limits.memory.as_deref(),
            limits.timeout.as_deref(),
            limits.max_concurrent_reconciles,
            "limits.maxConcurrentReconciles",
        )?;
        if let Some(calls) = limits.max_calls_per_reconcile {
            if calls == 0 {
                return Err(InvalidField::new(
                    "limits.maxCallsPerReconcile",
                    "must be at least 1",
                ));
            }
            parsed.max_calls = calls;
        }
        Ok(Self {
            name: format!("{namespace}/{}", plugin.name_any()),
            service_account: ServiceAccount::new(&namespace, &spec.service_account_name),
            config: config_text(spec.config.clone())?,
            limits: parsed,
            budget: parse_budget(
                limits.api_qps,
                limits.api_burst,
                limits.min_requeue_after.as_deref(),
            )?,
            admission: spec
                .admission
                .as_ref()
                .map(|spec| Declaration::of(spec).map(Arc::new))
                .transpose()?,
            allowed_hosts: allowed_hosts(&spec.allowed_outbound_hosts)?,
        })
    }
}

/// The hosts a plugin may reach, from its `allowedOutboundHosts`.
pub(super) fn allowed_hosts(entries: &[String]) -> Result<Arc<AllowedHosts>, InvalidField> {
    AllowedHosts::parse(entries)
        .map(Arc::new)
        .map_err(|invalid| InvalidField::new("allowedOutboundHosts", invalid.to_string()))
}

/// A plugin's configuration must be a JSON object; absent means `{}`.
pub(super) fn config_text(config: Option<Value>) -> Result<Arc<str>, InvalidField> {
    match config {
        None => Ok("{}".into()),
        Some(value @ Value::Object(_)) => Ok(value.to_string().into()),
        Some(other) => Err(InvalidField::new(
            "config",
            format!("must be a JSON object, not {}", json_kind(&other)),
        )),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn plugin(spec: Value) -> Plugin {
        serde_json::from_value(json!({
            "apiVersion": "leasehold.dev/v1alpha1",
            "kind": "Plugin",
            "metadata": {"name": "mirror", "namespace": "team-a"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn a_plugin_object_acts_as_an_account_in_its_own_namespace() {
        let definition = Definition::of(&plugin(json!({
            "source": {"image": {"path": "mirror.wasm"}},
            "serviceAccountName": "mirror-sa",
            "config": {"namespaceSelector": "mirror=true"},
            "limits": {"memory": "32Mi", "timeout": "250ms", "maxConcurrentReconciles": 2},
        })))
        .unwrap();
        assert_eq!(definition.name, "team-a/mirror");
        assert_eq!(
            definition.service_account,
            ServiceAccount::new("team-a", "mirror-sa")
        );
        assert_eq!(
            &*definition.config,
            r#"{"namespaceSelector":"mirror=true"}"#
        );
        assert_eq!(
            definition.limits,
            Limits {
                memory_bytes: 32 << 20,
                timeout: Duration::from_millis(250),
                concurrency: 2,
                ..Limits::default()
            }
        );
    }

    #[test]
    fn a_plugin_object_with_bad_values_names_the_field() {
        let field = |spec| Definition::of(&plugin(spec)).unwrap_err().field;
        let source = json!({"image": {"path": "m.wasm"}});
        assert_eq!(
            field(json!({"source": source, "serviceAccountName": "sa", "config": [1, 2]})),
            "config"
        );
        assert_eq!(
            field(
                json!({"source": source, "serviceAccountName": "sa", "limits": {"memory": "1TB"}})
            ),
            "limits.memory"
        );
        assert_eq!(
            field(
                json!({"source": source, "serviceAccountName": "sa", "limits": {"maxConcurrentReconciles": 0}})
            ),
            "limits.maxConcurrentReconciles"
        );
        assert_eq!(
            field(json!({"source": source, "serviceAccountName": ""})),
            "serviceAccountName"
        );
    }

    #[test]
    fn configuration_that_is_not_an_object_says_what_it_is() {
        let error = config_text(Some(json!("text"))).unwrap_err();
        assert_eq!(error.reason, "must be a JSON object, not a string");
    }
}
