//! Plugins written in JavaScript run in the real host against the real API
//! server, within the default limits, using the Kubernetes, log and config
//! imports: the example on the JavaScript SDK
//! (`plugins/examples/labeler-js`, contract 0.2), and the same labeler on
//! raw componentize-js bindings for the previous contract
//! (`tests/fixtures/labeler-v0.1-js`), which the host still runs and names
//! deprecated. The example's admission half (the SDK's `exportAdmission`)
//! labels and refuses ConfigMaps through the real API server's webhooks.
//! The example also passes its own offline tests (`leasehold plugin test`,
//! which runs `npm test`).

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use leasehold_tests::admission::serving_certificate;
use leasehold_tests::fixtures::{apply_plugin, install_plugin_crd, rule, service_account_with};
use leasehold_tests::js_plugin::{js_plugin_component, js_plugins_dir, js_v01_plugin_component};
use leasehold_tests::{
    ReplicaProcess, ReplicaSettings, TestCluster, eventually, free_address, repo_root, unique_name,
};
use serde_json::json;

/// Until the first reconcile: the host compiles the 12 MB component first,
/// about 30 s on a busy 2-core machine when the compile cache is cold.
const FIRST_RECONCILE: Duration = Duration::from_secs(240);
const PATIENCE: Duration = Duration::from_secs(60);

/// A ServiceAccount that may label ConfigMaps and record Events, and nothing
/// more; returns `namespace/name` for the manifest.
async fn labeler_account(cluster: &TestCluster, namespace: &str) -> anyhow::Result<String> {
    let name = service_account_with(
        cluster,
        namespace,
        vec![
            rule(&[""], &["configmaps"], &["get", "list", "watch", "patch"]),
            rule(&["", "events.k8s.io"], &["events"], &["create", "patch"]),
        ],
    )
    .await?;
    Ok(format!("{namespace}/{name}"))
}

fn config_map(name: &str, label: Option<(&str, &str)>, keys: &[&str]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: label.map(|(key, value)| [(key.to_owned(), value.to_owned())].into()),
            ..ObjectMeta::default()
        },
        data: Some(
            keys.iter()
                .map(|key| ((*key).to_owned(), "value".to_owned()))
                .collect(),
        ),
        ..ConfigMap::default()
    }
}

/// `Some` once `name` carries `label` and the key-count annotation `keys`.
async fn labelled(
    config_maps: &Api<ConfigMap>,
    name: &str,
    label: (&str, &str),
    keys: &str,
) -> Option<()> {
    let metadata = config_maps.get_opt(name).await.ok()??.metadata;
    let has_label = metadata.labels?.get(label.0).map(String::as_str) == Some(label.1);
    let has_keys = metadata
        .annotations?
        .get("leasehold.dev/keys")
        .map(String::as_str)
        == Some(keys);
    (has_label && has_keys).then_some(())
}

async fn labelled_event(client: &Client, namespace: &str, name: &str) -> Option<()> {
    let events = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .ok()?;
    events
        .items
        .iter()
        .any(|event| {
            event.reason.as_deref() == Some("Labelled")
                && event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .then_some(())
}

#[tokio::test]
async fn javascript_labeler_on_the_sdk_labels_selected_config_maps_and_follows_their_keys()
-> anyhow::Result<()> {
    labels_selected_config_maps_and_follows_their_keys(js_plugin_component()).await
}

#[tokio::test]
async fn javascript_labeler_built_for_contract_0_1_still_labels_on_this_host() -> anyhow::Result<()>
{
    labels_selected_config_maps_and_follows_their_keys(js_v01_plugin_component()).await
}

async fn labels_selected_config_maps_and_follows_their_keys(
    component: std::path::PathBuf,
) -> anyhow::Result<()> {
    let cluster = TestCluster::shared().await;
    let admin = cluster.client()?;
    let plugins_ns = cluster.namespace("plugins").await?;
    let account = labeler_account(cluster, &plugins_ns).await?;
    let group = unique_name("labeler");
    let selector = ("leasehold.dev/labeler", group.as_str());

    let workdir = tempfile::tempdir()?;
    let manifest = workdir.path().join("labeler-js.json");
    // No limits: the JavaScript engine fits the defaults (64 MiB, 2 s).
    std::fs::write(
        &manifest,
        serde_json::to_vec_pretty(&json!({
            "name": "labeler-js",
            "component": component,
            "serviceAccount": account,
            "config": {
                "selector": format!("{}={}", selector.0, selector.1),
                "labels": {"tier": "config"},
            },
        }))?,
    )?;
    let mut settings = ReplicaSettings::fast(&plugins_ns, "leasehold");
    settings.extra_args.extend([
        "--plugin".into(),
        manifest.display().to_string(),
        // Kept across runs (keyed by the component's bytes and the engine's
        // configuration): compiling SpiderMonkey is the slow part.
        "--compile-cache".into(),
        js_plugins_dir().join("compile-cache").display().to_string(),
    ]);
    let replica =
        ReplicaProcess::start("js-host", &settings, cluster.kubeconfig(), workdir.path()).await?;

    let work_ns = cluster.namespace("labeler-js").await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &work_ns);
    config_maps
        .create(
            &PostParams::default(),
            &config_map("selected", Some(selector), &["colour", "size"]),
        )
        .await?;
    config_maps
        .create(
            &PostParams::default(),
            &config_map("ignored", None, &["colour"]),
        )
        .await?;

    eventually(
        FIRST_RECONCILE,
        "the selected ConfigMap to be labelled",
        || labelled(&config_maps, "selected", ("tier", "config"), "2"),
    )
    .await
    .map_err(|error| error.context(replica.log()))?;

    config_maps
        .patch(
            "selected",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"shape": "round"}})),
        )
        .await?;
    eventually(PATIENCE, "the key count to follow the data", || {
        labelled(&config_maps, "selected", ("tier", "config"), "3")
    })
    .await
    .map_err(|error| error.context(replica.log()))?;
    eventually(PATIENCE, "an Event about the labelling", || {
        labelled_event(&admin, &work_ns, "selected")
    })
    .await
    .map_err(|error| error.context(replica.log()))?;

    let ignored = config_maps.get("ignored").await?.metadata;
    assert!(
        ignored.annotations.unwrap_or_default().is_empty() && ignored.labels.is_none(),
        "a ConfigMap outside the selector is left alone"
    );
    // The plugin logs after its write returns: the API server can show
    // the write before the host's log has the line.
    let logged = eventually(PATIENCE, "the plugin's log line", || async {
        let log = replica.log();
        (log.contains("labelled") && log.contains("keys=3")).then_some(())
    })
    .await;
    let log = replica.log();
    assert!(
        logged.is_ok(),
        "the plugin's own log lines reach the host's log:\n{log}"
    );
    assert!(
        log.lines().any(|line| line.contains("stdout")
            && line.contains(&format!(
                "labeler-js labels ConfigMaps matching {}={}",
                selector.0, selector.1
            ))),
        "console.log reaches the host's log as the plugin's stdout:\n{log}"
    );
    if let Some(compiled) = log.lines().find(|line| line.contains("plugin compiled")) {
        eprintln!("{compiled}");
    }
    Ok(())
}

/// The example's admission half through the API server's own webhook
/// calls: one replica serving TLS on loopback runs the Plugin (from
/// `--plugin-root`, the component being too large for a ConfigMap), whose
/// rules send it every labelled ConfigMap of its namespace; the plugin
/// checks its own selector, which is narrower.
#[tokio::test]
async fn javascript_labeler_labels_config_maps_as_they_are_created_and_refuses_a_changed_label()
-> anyhow::Result<()> {
    let cluster = TestCluster::shared().await;
    install_plugin_crd(&cluster.client()?).await?;
    let namespace = cluster.namespace("labeler-js-admission").await?;
    let account = service_account_with(
        cluster,
        &namespace,
        vec![
            rule(&[""], &["configmaps"], &["get", "list", "watch", "patch"]),
            rule(&["", "events.k8s.io"], &["events"], &["create", "patch"]),
        ],
    )
    .await?;
    let component = js_plugin_component();
    let workdir = tempfile::tempdir()?;
    let (cert, key) = serving_certificate(workdir.path())?;
    let listen = free_address()?;
    let mut settings = ReplicaSettings::fast(&namespace, "leasehold");
    settings.listen = Some(listen);
    let path = |path: &std::path::Path| path.display().to_string();
    settings.extra_args = vec![
        "--tls-cert-file".into(),
        path(&cert),
        "--tls-private-key-file".into(),
        path(&key),
        "--admission-url".into(),
        format!("https://{listen}"),
        // Self-signed: the certificate is its own authority.
        "--admission-ca-file".into(),
        path(&cert),
        "--plugin-root".into(),
        path(component.parent().expect("the component's directory")),
        "--compile-cache".into(),
        path(&js_plugins_dir().join("compile-cache")),
    ];
    let replica = ReplicaProcess::start(
        "js-admission",
        &settings,
        cluster.kubeconfig(),
        workdir.path(),
    )
    .await?;

    let group = unique_name("labeler");
    let selector = format!("leasehold.dev/labeler={group}");
    let webhook = json!({
        "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""],
                   "apiVersions": ["v1"], "resources": ["configmaps"]}],
        "failurePolicy": "Fail",
        "timeoutSeconds": 10,
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "objectSelector": {"matchExpressions": [{"key": "leasehold.dev/labeler", "operator": "Exists"}]},
    });
    let resource = kube::discovery::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("leasehold.dev", "v1alpha1", "Plugin"),
        "plugins",
    );
    let plugins: Api<DynamicObject> =
        Api::namespaced_with(cluster.client()?, &namespace, &resource);
    apply_plugin(
        &plugins,
        "labeler-js",
        json!({
            "source": {"image": {"path": component.file_name().expect("a file").to_string_lossy()}},
            "serviceAccountName": account,
            "config": {"selector": selector, "labels": {"tier": "config"}},
            "admission": {"mutating": webhook, "validating": webhook},
        }),
    )
    .await?;

    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client()?, &namespace);
    let create = |name: &str, labels: &[(&str, &str)], dry_run: bool| {
        let config_maps = config_maps.clone();
        let object = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        async move {
            let params = PostParams {
                dry_run,
                ..PostParams::default()
            };
            config_maps.create(&params, &object).await
        }
    };
    let refusal = format!(
        "label tier must be \"config\", not \"other\": labeler-js sets the labels of ConfigMaps matching {selector}"
    );
    // The leader writes the webhook configurations once it has compiled the
    // component; until the API server calls them, nothing is refused.
    eventually(
        FIRST_RECONCILE,
        "the labeler's webhooks in force",
        || async {
            match create(
                "probe",
                &[("leasehold.dev/labeler", &group), ("tier", "other")],
                true,
            )
            .await
            {
                Err(kube::Error::Api(status)) if status.message.contains(&refusal) => Some(()),
                _ => None,
            }
        },
    )
    .await
    .map_err(|error| error.context(replica.log()))?;

    let created = create("fresh", &[("leasehold.dev/labeler", &group)], false).await?;
    assert_eq!(
        created.labels().get("tier").map(String::as_str),
        Some("config"),
        "mutate labelled the ConfigMap before it was stored: {:?}",
        created.labels()
    );
    let unselected = create(
        "unselected",
        &[("leasehold.dev/labeler", "elsewhere")],
        false,
    )
    .await?;
    assert_eq!(
        unselected.labels().get("tier"),
        None,
        "reviewed (the rules send every labelled ConfigMap) but outside the plugin's selector"
    );

    match create(
        "refused",
        &[("leasehold.dev/labeler", &group), ("tier", "other")],
        false,
    )
    .await
    {
        Err(kube::Error::Api(status)) => {
            assert!(status.message.contains(&refusal), "{}", status.message);
            assert_eq!(status.code, 403, "a denial without a code is 403");
        }
        other => panic!("expected the plugin's denial, got {other:?}"),
    }
    // An update that changes the managed label is refused too.
    let changed = config_maps
        .patch(
            "fresh",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "other"}}})),
        )
        .await;
    match changed {
        Err(kube::Error::Api(status)) => {
            assert!(status.message.contains(&refusal), "{}", status.message)
        }
        other => panic!("expected the plugin's denial of the update, got {other:?}"),
    }
    Ok(())
}

async fn validate(component: &std::path::Path) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(leasehold_tests::leasehold_binary())
        .args(["plugin", "validate"])
        .arg(component)
        .output()
        .await?;
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(report)
}

/// The fixture is built for the previous contract (0.1) on purpose: the
/// test above runs it unchanged on this 0.2 host, and the host names its
/// version as deprecated.
#[tokio::test]
async fn a_component_built_for_the_previous_contract_is_named_deprecated() -> anyhow::Result<()> {
    let report = validate(&js_v01_plugin_component()).await?;
    assert!(
        report.contains("contract:  leasehold:controller@0.1.0 (deprecated"),
        "{report}"
    );
    assert!(report.contains("admission: (none)"), "{report}");
    Ok(())
}

#[tokio::test]
async fn the_javascript_example_on_the_sdk_is_built_for_the_current_contract() -> anyhow::Result<()>
{
    let report = validate(&js_plugin_component()).await?;
    assert!(
        report.contains("contract:  leasehold:controller@0.2.0\n"),
        "{report}"
    );
    assert!(report.contains("name:      labeler-js"), "{report}");
    assert!(
        report.contains("selector:  leasehold.dev/labeler\n"),
        "{report}"
    );
    assert!(report.contains("admission: validate, mutate"), "{report}");
    Ok(())
}

/// What an author runs: `npm install` when needed, `npm test` (which
/// builds the component first, then runs test/labeler.test.js on the
/// harness through `leasehold plugin run`).
#[tokio::test]
async fn the_javascript_example_passes_its_own_offline_tests() -> anyhow::Result<()> {
    let mut command = tokio::process::Command::new(leasehold_tests::leasehold_binary());
    command
        .args(["plugin", "test", "--path"])
        .arg(repo_root().join("plugins/examples/labeler-js"));
    let stdout = succeeded(command).await?;
    assert!(stdout.contains("# pass 7\n"), "{stdout}");
    assert!(stdout.contains("# fail 0\n"), "{stdout}");
    Ok(())
}

/// The JavaScript SDK's own unit tests (its modules under Node with the
/// contract's imports faked), so `cargo test` runs them too.
#[tokio::test]
async fn the_javascript_sdk_passes_its_own_unit_tests() -> anyhow::Result<()> {
    let mut command = tokio::process::Command::new("npm");
    command
        .arg("test")
        .current_dir(repo_root().join("plugins/sdk-js"));
    let stdout = succeeded(command).await?;
    assert!(stdout.contains("# fail 0\n"), "{stdout}");
    Ok(())
}

/// What `command` printed, once it exited with success (else its output
/// is the failure's message).
async fn succeeded(mut command: tokio::process::Command) -> anyhow::Result<String> {
    let output = command.output().await?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}
