//! Plugin objects on the real API server: each kind of source runs, status
//! tells the user what happened, a change reloads one plugin without a
//! restart, suspend and delete stop it, and every bad input is reported on
//! the Plugin while the other plugins keep working.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use leasehold::oci;
use leasehold::plugins::{Plugin, PluginStatus};
use leasehold_tests::fixtures::{
    apply_plugin, config_map, counter, grant, meta, plugin_namespace, rule, serve_files,
    service_account_with, store_component,
};
use leasehold_tests::{
    ReplicaProcess, ReplicaSettings, TestCluster, TestRegistry, eventually, plugin_component,
    unique_name,
};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PATIENCE: Duration = Duration::from_secs(60);

/// One test's namespace, with a ServiceAccount that may handle ConfigMaps
/// (what the misbehaving fixture plugin does in mode `ok`).
struct Setup {
    cluster: &'static TestCluster,
    admin: Client,
    namespace: String,
    account: String,
    plugins: Api<Plugin>,
    config_maps: Api<ConfigMap>,
    workdir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> anyhow::Result<Self> {
        let cluster = TestCluster::shared().await;
        let admin = cluster.client()?;
        let (namespace, account) = plugin_namespace(
            cluster,
            "plugin-objects",
            &["get", "list", "watch", "create"],
        )
        .await?;
        Ok(Self {
            plugins: Api::namespaced(admin.clone(), &namespace),
            config_maps: Api::namespaced(admin.clone(), &namespace),
            cluster,
            admin,
            namespace,
            account,
            workdir: tempfile::tempdir()?,
        })
    }

    /// Starts one replica watching this test's namespace.
    async fn replica(&self, identity: &str, extra: &[&str]) -> anyhow::Result<ReplicaProcess> {
        let mut settings = ReplicaSettings::fast(&self.namespace, "leasehold");
        settings
            .extra_args
            .extend(extra.iter().map(|arg| (*arg).to_owned()));
        ReplicaProcess::start(
            identity,
            &settings,
            self.cluster.kubeconfig(),
            self.workdir.path(),
        )
        .await
    }

    /// Stores `bytes` in a ConfigMap's binaryData under `component.wasm`.
    async fn component(&self, name: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        store_component(&self.config_maps, name, bytes).await
    }

    /// Creates or updates a Plugin acting as this test's ServiceAccount
    /// unless `spec` names another.
    async fn apply(&self, name: &str, mut spec: Value) -> Result<Plugin, kube::Error> {
        if spec.get("serviceAccountName").is_none() {
            spec["serviceAccountName"] = json!(self.account);
        }
        apply_plugin(&self.plugins, name, spec).await
    }

    /// Waits until the Plugin's condition `type_` has `status` and `reason`.
    async fn wait_for(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
        replica: &ReplicaProcess,
    ) -> anyhow::Result<PluginStatus> {
        let what = format!("{name}: {type_}={status} ({reason})");
        let last_seen = std::sync::Mutex::new(None);
        eventually(PATIENCE, &what, || async {
            let found = self.plugins.get(name).await.ok()?.status?;
            *last_seen.lock().unwrap() = Some(found.clone());
            let condition = found
                .conditions
                .iter()
                .find(|condition| condition.type_ == type_)?;
            (condition.status == status && condition.reason == reason).then_some(found.clone())
        })
        .await
        .map_err(|error| {
            let seen =
                serde_json::to_string_pretty(&*last_seen.lock().unwrap()).unwrap_or_default();
            error.context(format!("last status: {seen}\n{}", replica.log()))
        })
    }

    /// A ConfigMap for the misbehaving plugin of `group`, in mode `ok`.
    async fn work(&self, group: &str) -> anyhow::Result<String> {
        let name = unique_name("work");
        self.config_maps
            .create(
                &PostParams::default(),
                &config_map(
                    &name,
                    &[("leasehold.dev/misbehave", group)],
                    &[("mode", "ok")],
                ),
            )
            .await?;
        Ok(name)
    }

    /// Whether the plugin handled a work item (it creates `<name>-handled`).
    async fn handled(&self, work: &str) -> bool {
        matches!(
            self.config_maps.get_opt(&format!("{work}-handled")).await,
            Ok(Some(_))
        )
    }

    async fn wait_handled(&self, work: &str, replica: &ReplicaProcess) -> anyhow::Result<()> {
        eventually(PATIENCE, &format!("{work} to be handled"), || async {
            self.handled(work).await.then_some(())
        })
        .await
        .map_err(|error| error.context(replica.log()))
    }
}

fn misbehaving() -> Vec<u8> {
    std::fs::read(plugin_component("misbehaving")).expect("the misbehaving fixture is built")
}

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// A Plugin spec running the misbehaving fixture from ConfigMap `holder`
/// for work labelled with `group`.
fn from_config_map(holder: &str, group: &str) -> Value {
    json!({
        "source": {"configMap": {"name": holder}},
        "config": {"selector": format!("leasehold.dev/misbehave={group}")},
    })
}

#[tokio::test]
async fn a_plugin_from_a_configmap_runs_on_the_leader_and_reports_ready() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    let bytes = misbehaving();
    setup.component("handler-component", bytes.clone()).await?;
    let group = unique_name("group");
    setup
        .apply("handler", from_config_map("handler-component", &group))
        .await?;
    let replica = setup.replica("solo", &[]).await?;

    let status = setup
        .wait_for("handler", "Ready", "True", "Ready", &replica)
        .await?;
    assert_eq!(status.running_on.as_deref(), Some("solo"));
    assert_eq!(status.digest, Some(format!("sha256:{}", sha256(&bytes))));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        status.source.as_deref(),
        Some("configMap:handler-component/component.wasm")
    );
    let work = setup.work(&group).await?;
    setup.wait_handled(&work, &replica).await?;
    eventually(PATIENCE, "the reconcile to be counted", || async {
        let status = setup.plugins.get("handler").await.ok()?.status?;
        (status.reconciles?.ok >= 1).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_plugin_whose_account_may_not_watch_its_kind_is_not_ready_until_granted()
-> anyhow::Result<()> {
    let setup = Setup::new().await?;
    setup.component("blind-component", misbehaving()).await?;
    let blind = service_account_with(setup.cluster, &setup.namespace, Vec::new()).await?;
    let mut spec = from_config_map("blind-component", &unique_name("group"));
    spec["serviceAccountName"] = json!(blind);
    setup.apply("blind", spec).await?;
    let replica = setup.replica("solo", &[]).await?;

    let status = setup
        .wait_for("blind", "Ready", "False", "WatchForbidden", &replica)
        .await?;
    let message = status
        .last_error
        .expect("the denial is the last error")
        .message;
    assert_eq!(
        message,
        format!(
            "ServiceAccount {}/{blind} may not list configmaps in all namespaces; \
             grant it list and watch on what the plugin registers",
            setup.namespace
        )
    );

    grant(
        &setup.admin,
        &setup.namespace,
        &blind,
        vec![rule(&[""], &["configmaps"], &["get", "list", "watch"])],
    )
    .await?;
    setup
        .wait_for("blind", "Ready", "True", "Ready", &replica)
        .await?;
    Ok(())
}

#[tokio::test]
async fn changing_a_plugin_reloads_it_alone_without_restarting_the_host() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    setup.component("shared-component", misbehaving()).await?;
    let (first, second, moved) = (
        unique_name("first"),
        unique_name("second"),
        unique_name("moved"),
    );
    setup
        .apply("first", from_config_map("shared-component", &first))
        .await?;
    setup
        .apply("second", from_config_map("shared-component", &second))
        .await?;
    let replica = setup.replica("solo", &[]).await?;
    setup
        .wait_for("first", "Ready", "True", "Ready", &replica)
        .await?;
    let second_before = setup
        .wait_for("second", "Ready", "True", "Ready", &replica)
        .await?;
    let warm_up = setup.work(&second).await?;
    setup.wait_handled(&warm_up, &replica).await?;

    // A new configuration is a new version of `first`: it now handles `moved`.
    setup
        .apply("first", from_config_map("shared-component", &moved))
        .await?;
    let reloaded = setup.work(&moved).await?;
    setup.wait_handled(&reloaded, &replica).await?;
    // The status is written apart from the reconcile (every 250 ms).
    eventually(
        PATIENCE,
        "first's status to observe generation 2",
        || async {
            let status = setup.plugins.get("first").await.ok()?.status?;
            (status.observed_generation == Some(2)).then_some(())
        },
    )
    .await
    .map_err(|error| error.context(replica.log()))?;

    // `second` kept running the whole time: same Running transition, and
    // its reconcile count did not restart from zero.
    let second_now = setup
        .plugins
        .get("second")
        .await?
        .status
        .unwrap_or_default();
    let running_since = |status: &PluginStatus| {
        status
            .conditions
            .iter()
            .find(|condition| condition.type_ == "Running")
            .map(|condition| condition.last_transition_time.clone())
    };
    assert_eq!(running_since(&second_now), running_since(&second_before));
    let after = setup.work(&second).await?;
    setup.wait_handled(&after, &replica).await?;
    assert_eq!(
        replica.role().await?,
        "leader",
        "the same host process kept leading throughout"
    );
    Ok(())
}

#[tokio::test]
async fn suspending_pauses_a_plugin_and_deleting_it_stops_it() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    setup.component("pausable-component", misbehaving()).await?;
    let group = unique_name("group");
    let spec = from_config_map("pausable-component", &group);
    setup.apply("pausable", spec.clone()).await?;
    let replica = setup.replica("solo", &[]).await?;
    setup
        .wait_for("pausable", "Ready", "True", "Ready", &replica)
        .await?;

    let mut suspended = spec.clone();
    suspended["suspend"] = json!(true);
    setup.apply("pausable", suspended).await?;
    let status = setup
        .wait_for("pausable", "Running", "False", "Suspended", &replica)
        .await?;
    assert_eq!(status.running_on, None);
    let waiting = setup.work(&group).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !setup.handled(&waiting).await,
        "a suspended plugin reconciled"
    );

    setup.apply("pausable", spec).await?;
    setup.wait_handled(&waiting, &replica).await?;

    // Its story so far, as Events on the Plugin (`kubectl describe`).
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(setup.admin.clone(), &setup.namespace);
    eventually(PATIENCE, "the Plugin's lifecycle Events", || async {
        let listed = events.list(&Default::default()).await.ok()?;
        let reasons: Vec<&str> = listed
            .items
            .iter()
            .filter(|event| {
                event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("pausable")
            })
            .filter(|event| event.reporting_controller.as_deref() == Some("leasehold"))
            .filter_map(|event| event.reason.as_deref())
            .collect();
        ["Fetched", "Compiled", "Started", "Suspended"]
            .iter()
            .all(|reason| reasons.contains(reason))
            .then_some(())
    })
    .await
    .map_err(|error| error.context(replica.log()))?;

    // The suspension logged a stop already: wait for one more.
    let stops = || replica.log().matches("plugin stopped").count();
    let stopped_before = stops();
    setup
        .plugins
        .delete("pausable", &DeleteParams::default())
        .await?;
    eventually(PATIENCE, "the plugin to stop", || async {
        (stops() > stopped_before).then_some(())
    })
    .await?;
    let orphan = setup.work(&group).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!setup.handled(&orphan).await, "a deleted plugin reconciled");
    Ok(())
}

#[tokio::test]
async fn bad_plugins_say_why_on_their_status_and_a_good_one_keeps_working() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    let bytes = misbehaving();
    setup.component("good-component", bytes.clone()).await?;
    setup
        .component("text-component", b"hello, not wasm".to_vec())
        .await?;
    // The smallest valid component: it exports nothing.
    setup
        .component("empty-component", wat::parse_str("(component)")?)
        .await?;
    let newer =
        wat::parse_str(r#"(component (import "leasehold:controller/log@0.3.0" (instance)))"#)?;
    setup.component("newer-component", newer).await?;
    let group = unique_name("good");
    setup
        .apply("good", from_config_map("good-component", &group))
        .await?;
    let bad = [
        (
            "not-a-component",
            json!({"source": {"configMap": {"name": "text-component"}}}),
        ),
        (
            "other-world",
            json!({"source": {"configMap": {"name": "empty-component"}}}),
        ),
        (
            "newer-contract",
            json!({"source": {"configMap": {"name": "newer-component"}}}),
        ),
        (
            "wrong-digest",
            json!({"source": {"configMap": {"name": "good-component", "sha256": "0".repeat(64)}}}),
        ),
        (
            "unreachable",
            json!({"source": {"http": {"url": "http://127.0.0.1:9/plugin.wasm", "sha256": sha256(&bytes)}}}),
        ),
        (
            "too-much-memory",
            json!({"source": {"configMap": {"name": "good-component"}}, "limits": {"memory": "lots"}}),
        ),
        (
            "no-account",
            json!({"source": {"configMap": {"name": "good-component"}}, "serviceAccountName": "missing"}),
        ),
        (
            "late-source",
            json!({"source": {"configMap": {"name": "late-component"}}}),
        ),
        (
            "schemeless-host",
            json!({"source": {"configMap": {"name": "good-component"}}, "allowedOutboundHosts": ["api.example.com"]}),
        ),
    ];
    // Each selects work of its own that never comes: once healed, a plugin
    // with the fixture's default selector would reconcile every test's work.
    let idle = unique_name("idle");
    for (name, spec) in &bad {
        let mut spec = spec.clone();
        spec["config"] = json!({"selector": format!("leasehold.dev/misbehave={idle}")});
        setup.apply(name, spec).await?;
    }
    let replica = setup.replica("solo", &[]).await?;

    let expect = [
        ("not-a-component", "Compiled", "NotAComponent"),
        ("other-world", "Compiled", "WrongWorld"),
        ("newer-contract", "Compiled", "IncompatibleContract"),
        ("wrong-digest", "Fetched", "DigestMismatch"),
        ("unreachable", "Fetched", "SourceUnreachable"),
        ("too-much-memory", "Fetched", "InvalidSpec"),
        ("no-account", "Running", "ServiceAccountNotFound"),
        ("late-source", "Fetched", "SourceNotFound"),
        ("schemeless-host", "Fetched", "InvalidSpec"),
    ];
    for (name, type_, reason) in expect {
        let status = setup
            .wait_for(name, type_, "False", reason, &replica)
            .await?;
        let ready = status
            .conditions
            .iter()
            .find(|condition| condition.type_ == "Ready")
            .expect("a Ready condition");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reason)
        );
        let error = status.last_error.expect("the error is kept on the status");
        assert!(!error.message.is_empty(), "{name}: empty error message");
    }
    let schemeless = setup.plugins.get("schemeless-host").await?.status.unwrap();
    assert_eq!(
        schemeless.last_error.unwrap().message,
        r#"field allowedOutboundHosts: entry "api.example.com": name a scheme, as in https://api.example.com"#
    );
    let newer = setup.plugins.get("newer-contract").await?.status.unwrap();
    assert!(
        newer.last_error.unwrap().message.contains("@0.3.0"),
        "the message names the version the component was built for"
    );

    // The good plugin was never disturbed.
    setup
        .wait_for("good", "Ready", "True", "Ready", &replica)
        .await?;
    let work = setup.work(&group).await?;
    setup.wait_handled(&work, &replica).await?;

    // What heals by itself does: the missing account (with its RBAC) and
    // ConfigMap appear.
    Api::<ServiceAccount>::namespaced(setup.admin.clone(), &setup.namespace)
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: meta("missing", &[]),
                ..ServiceAccount::default()
            },
        )
        .await?;
    grant(
        &setup.admin,
        &setup.namespace,
        "missing",
        vec![rule(&[""], &["configmaps"], &["get", "list", "watch"])],
    )
    .await?;
    setup.component("late-component", bytes).await?;
    setup
        .wait_for("no-account", "Ready", "True", "Ready", &replica)
        .await?;
    setup
        .wait_for("late-source", "Ready", "True", "Ready", &replica)
        .await?;
    Ok(())
}

#[tokio::test]
async fn the_api_server_refuses_plugins_the_schema_rules_out() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    let cases = [
        (
            json!({"source": {"configMap": {"name": "a"}, "image": {"path": "b.wasm"}}}),
            "set exactly one of configMap, http, oci, image",
        ),
        (json!({"source": {}}), "set exactly one of"),
        (
            json!({"source": {"http": {"url": "ftp://example/p.wasm", "sha256": "0".repeat(64)}}}),
            "must be an http:// or https:// URL",
        ),
        (
            json!({"source": {"http": {"url": "https://example/p.wasm", "sha256": "abc"}}}),
            "must be 64 lowercase hex digits",
        ),
        (
            json!({"source": {"image": {"path": "p.wasm"}}, "config": [1, 2]}),
            "spec.config",
        ),
        (
            json!({"source": {"image": {"path": "p.wasm"}}, "limits": {"maxConcurrentReconciles": 0}}),
            "maxConcurrentReconciles",
        ),
    ];
    for (mut spec, expected) in cases {
        spec["serviceAccountName"] = json!(setup.account);
        let plugin: Plugin = serde_json::from_value(json!({
            "apiVersion": "leasehold.dev/v1alpha1",
            "kind": "Plugin",
            "metadata": {"name": unique_name("refused")},
            "spec": spec,
        }))?;
        let error = setup
            .plugins
            .create(&PostParams::default(), &plugin)
            .await
            .expect_err("the API server refuses it");
        let message = match &error {
            kube::Error::Api(response) => {
                assert_eq!(response.code, 422, "{spec}: {error}");
                response.message.clone()
            }
            other => panic!("{spec}: unexpected {other}"),
        };
        assert!(message.contains(expected), "{spec}: {message}");
    }
    Ok(())
}

#[tokio::test]
async fn plugins_come_from_http_with_a_digest_and_from_the_host_image() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    let bytes = misbehaving();
    let server = serve_files(vec![
        ("/handler.wasm", bytes.clone()),
        ("/huge.wasm", vec![0; 3 << 20]),
    ])
    .await?;
    let root = setup.workdir.path().join("plugin-root");
    std::fs::create_dir_all(root.join("examples"))?;
    std::fs::write(root.join("examples/handler.wasm"), &bytes)?;
    let (over_http, from_image) = (unique_name("http"), unique_name("image"));
    setup
        .apply(
            "over-http",
            json!({
                "source": {"http": {"url": format!("http://{server}/handler.wasm"), "sha256": sha256(&bytes)}},
                "config": {"selector": format!("leasehold.dev/misbehave={over_http}")},
            }),
        )
        .await?;
    setup
        .apply(
            "from-image",
            json!({
                "source": {"image": {"path": "examples/handler.wasm"}},
                "config": {"selector": format!("leasehold.dev/misbehave={from_image}")},
            }),
        )
        .await?;
    setup
        .apply(
            "too-large",
            json!({"source": {"http": {"url": format!("http://{server}/huge.wasm"), "sha256": "0".repeat(64)}}}),
        )
        .await?;
    setup
        .apply(
            "escaping",
            json!({"source": {"image": {"path": "../handler.wasm"}}}),
        )
        .await?;
    let root_arg = root.display().to_string();
    let replica = setup
        .replica(
            "solo",
            &["--plugin-root", &root_arg, "--max-component-size", "2Mi"],
        )
        .await?;

    for (name, group) in [("over-http", &over_http), ("from-image", &from_image)] {
        let status = setup
            .wait_for(name, "Ready", "True", "Ready", &replica)
            .await?;
        assert_eq!(status.digest, Some(format!("sha256:{}", sha256(&bytes))));
        let work = setup.work(group).await?;
        setup.wait_handled(&work, &replica).await?;
    }
    setup
        .wait_for("too-large", "Fetched", "False", "TooLarge", &replica)
        .await?;
    setup
        .wait_for("escaping", "Fetched", "False", "InvalidSource", &replica)
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_new_leader_takes_over_running_plugins_and_their_status() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    setup.component("ha-component", misbehaving()).await?;
    let group = unique_name("group");
    setup
        .apply("ha", from_config_map("ha-component", &group))
        .await?;
    let alpha = setup.replica("alpha", &[]).await?;
    let bravo = setup.replica("bravo", &[]).await?;
    let status = setup
        .wait_for("ha", "Ready", "True", "Ready", &alpha)
        .await?;
    let leader = status.running_on.expect("running somewhere");
    let (old, new) = if leader == "alpha" {
        (alpha, bravo)
    } else {
        (bravo, alpha)
    };
    old.signal(Signal::SIGKILL)?;
    eventually(PATIENCE, "the successor to run the plugin", || async {
        let status = setup.plugins.get("ha").await.ok()?.status?;
        (status.running_on.as_deref() == Some(new.identity.as_str())).then_some(())
    })
    .await
    .map_err(|error| error.context(new.log()))?;
    let work = setup.work(&group).await?;
    setup.wait_handled(&work, &new).await?;
    Ok(())
}

#[tokio::test]
async fn a_plugin_from_an_oci_registry_runs_and_a_missing_tag_is_reported() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    let registry = TestRegistry::shared().await?;
    let bytes = misbehaving();
    let reference = format!("{}:v1", registry.repository("plugins"));
    oci::push(
        &oci::parse(&reference)?,
        &bytes,
        &oci::PushOptions::default(),
    )
    .await?;
    let group = unique_name("oci");
    setup
        .apply(
            "from-registry",
            json!({
                "source": {"oci": {"reference": reference}},
                "config": {"selector": format!("leasehold.dev/misbehave={group}")},
            }),
        )
        .await?;
    let missing = format!("{}:v1", registry.repository("never-pushed"));
    setup
        .apply(
            "missing-tag",
            json!({"source": {"oci": {"reference": missing}}}),
        )
        .await?;
    let replica = setup.replica("solo", &[]).await?;

    let status = setup
        .wait_for("from-registry", "Ready", "True", "Ready", &replica)
        .await?;
    assert_eq!(status.digest, Some(format!("sha256:{}", sha256(&bytes))));
    let work = setup.work(&group).await?;
    setup.wait_handled(&work, &replica).await?;
    setup
        .wait_for(
            "missing-tag",
            "Fetched",
            "False",
            "SourceNotFound",
            &replica,
        )
        .await?;
    Ok(())
}

/// A pull Secret is read as the Plugin's account, never as the host: until
/// the account may `get` it, the Plugin reports that it cannot read it (the
/// host, which may read every Secret here, would have read it at once).
#[tokio::test]
async fn a_pull_secret_is_read_as_the_plugins_account() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    let registry = TestRegistry::shared().await?;
    let reference = format!("{}:v1", registry.repository("with-secret"));
    oci::push(
        &oci::parse(&reference)?,
        &misbehaving(),
        &oci::PushOptions::default(),
    )
    .await?;
    let login = json!({"auths": {registry.address(): {"username": "u", "password": "p"}}});
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(setup.admin.clone(), &setup.namespace)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "registry-login"},
                "type": "kubernetes.io/dockerconfigjson",
                "stringData": {".dockerconfigjson": login.to_string()},
            }))?,
        )
        .await?;
    setup
        .apply(
            "with-secret",
            json!({"source": {"oci": {"reference": reference, "pullSecret": "registry-login"}}}),
        )
        .await?;
    let replica = setup.replica("solo", &[]).await?;
    let refused = setup
        .wait_for(
            "with-secret",
            "Fetched",
            "False",
            "SourceUnauthorized",
            &replica,
        )
        .await?;
    let message = &refused
        .conditions
        .iter()
        .find(|c| c.type_ == "Fetched")
        .unwrap()
        .message;
    assert!(
        message.contains(&format!(
            "as ServiceAccount {}/{}",
            setup.namespace, setup.account
        )),
        "{message}"
    );
    grant(
        &setup.admin,
        &setup.namespace,
        &setup.account,
        vec![rule(&[""], &["secrets"], &["get"])],
    )
    .await?;
    setup
        .wait_for("with-secret", "Ready", "True", "Ready", &replica)
        .await?;
    Ok(())
}

/// An account the operator denies is refused by name before anything is
/// fetched as it; a Plugin of the same namespace naming another runs.
#[tokio::test]
async fn a_plugin_naming_a_denied_account_is_refused_with_its_reason() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    setup.component("good-component", misbehaving()).await?;
    let source = json!({"configMap": {"name": "good-component"}});
    setup
        .apply(
            "as-admin",
            json!({"source": source, "serviceAccountName": "admin"}),
        )
        .await?;
    setup.apply("as-itself", json!({"source": source})).await?;
    let denied = format!("--deny-service-account={}/admin", setup.namespace);
    let replica = setup.replica("solo", &[&denied]).await?;
    let refused = setup
        .wait_for("as-admin", "Fetched", "False", "AccountDenied", &replica)
        .await?;
    let message = &refused
        .conditions
        .iter()
        .find(|c| c.type_ == "Fetched")
        .unwrap()
        .message;
    assert!(
        message.contains("denied to plugins by the operator"),
        "{message}"
    );
    setup
        .wait_for("as-itself", "Ready", "True", "Ready", &replica)
        .await?;
    Ok(())
}

/// The instance pool (256 slots) is shared: four plugins at 64 concurrent
/// reconciles fill it, and a fifth says so on its status instead of
/// trapping when it cannot get an instance.
#[tokio::test]
async fn a_plugin_that_would_overfill_the_instance_pool_reports_it() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    setup.component("shared-component", misbehaving()).await?;
    let names: Vec<String> = (1..=5).map(|i| format!("wide-{i}")).collect();
    for name in &names {
        let mut spec = from_config_map("shared-component", &unique_name("wide"));
        spec["limits"] = json!({"maxConcurrentReconciles": 64});
        setup.apply(name, spec).await?;
    }
    let replica = setup.replica("solo", &[]).await?;
    let reasons = eventually(PATIENCE, "four running and one refused", || async {
        let mut reasons = Vec::new();
        for name in &names {
            let status = setup.plugins.get(name).await.ok()?.status?;
            let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
            reasons.push((ready.reason.clone(), ready.message.clone()));
        }
        let running = reasons
            .iter()
            .filter(|(reason, _)| reason == "Ready")
            .count();
        (running == 4
            && reasons
                .iter()
                .any(|(reason, _)| reason == "InstancePoolFull"))
        .then_some(reasons)
    })
    .await
    .map_err(|error| error.context(replica.log()))?;
    let (_, message) = reasons
        .iter()
        .find(|(reason, _)| reason == "InstancePoolFull")
        .unwrap();
    assert!(message.contains("0 free slots"), "{message}");
    Ok(())
}

/// An HTTP server on loopback that answers every request with `pong` and
/// counts them.
struct PingServer {
    address: std::net::SocketAddr,
    requests: Arc<AtomicUsize>,
    _serving: tokio::task::JoinHandle<()>,
}

impl PingServer {
    async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        let app = axum::Router::new().fallback(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            std::future::ready("pong")
        });
        Ok(Self {
            address: listener.local_addr()?,
            requests,
            _serving: tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }),
        })
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_plugin_reaches_only_the_hosts_its_plugin_allows() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    setup.component("fetcher-component", misbehaving()).await?;
    let allowed = PingServer::start().await?;
    let other = PingServer::start().await?;
    let group = unique_name("fetch");
    let mut spec = from_config_map("fetcher-component", &group);
    spec["allowedOutboundHosts"] = json!([format!("http://{}", allowed.address)]);
    setup.apply("fetcher", spec).await?;
    let replica = setup.replica("solo", &[]).await?;
    setup
        .wait_for("fetcher", "Ready", "True", "Ready", &replica)
        .await?;

    let fetched = |url: String| {
        let setup = &setup;
        let group = &group;
        let replica = &replica;
        async move {
            let name = unique_name("fetch");
            setup
                .config_maps
                .create(
                    &PostParams::default(),
                    &config_map(
                        &name,
                        &[("leasehold.dev/misbehave", group)],
                        &[("mode", "http"), ("url", &url)],
                    ),
                )
                .await?;
            let what = format!("{name}-fetched to record what GET {url} brought");
            eventually(PATIENCE, &what, || async {
                setup
                    .config_maps
                    .get_opt(&format!("{name}-fetched"))
                    .await
                    .ok()??
                    .data
            })
            .await
            .map_err(|error| error.context(replica.log()))
        }
    };

    let answer = fetched(format!("http://{}/ping", allowed.address)).await?;
    assert_eq!(
        answer.get("status").map(String::as_str),
        Some("200"),
        "{answer:?}"
    );
    assert_eq!(answer.get("body").map(String::as_str), Some("pong"));
    assert_eq!(allowed.requests(), 1);

    // Another port on the same host is another host: refused before it
    // leaves, as an error value the plugin can tell apart.
    let refused = fetched(format!("http://{}/ping", other.address)).await?;
    assert_eq!(
        refused.get("denied").map(String::as_str),
        Some("true"),
        "{refused:?}"
    );
    assert!(
        refused["error"].contains("allowedOutboundHosts"),
        "{refused:?}"
    );
    assert_eq!(other.requests(), 0, "a denied request reached the server");

    // The operator sees both, by plugin and outcome, and why one was
    // refused.
    let (_, metrics) = replica.get("/metrics").await?;
    let http_calls = |code: &str| {
        counter(
            &metrics,
            &format!(
                r#"leasehold_plugin_host_calls_total{{plugin="{}/fetcher",call="http",code="{code}"}}"#,
                setup.namespace
            ),
        )
    };
    assert_eq!(
        (http_calls("200"), http_calls("0")),
        (1.0, 1.0),
        "{metrics}"
    );
    let status = setup.plugins.get("fetcher").await?.status.unwrap();
    let said = status
        .last_error
        .expect("the refusal is on the status")
        .message;
    assert_eq!(
        said,
        format!(
            "OutboundDenied: GET http://{}: not in the Plugin's allowedOutboundHosts; add the host there to allow it",
            other.address
        )
    );
    Ok(())
}
