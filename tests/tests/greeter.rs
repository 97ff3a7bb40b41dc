//! The greeter example plugin, run by `leasehold run` against the real API
//! server: a Greeting gets a ConfigMap it owns and a status, and both follow
//! its spec.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::{Api, Client, ResourceExt};
use leasehold_tests::fixtures::{apply_crd, rule, service_account_with};
use leasehold_tests::{
    ReplicaProcess, ReplicaSettings, TestCluster, eventually, gone, plugin_component, repo_root,
};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);

/// The Greeting kind, as the CRD in `plugins/examples/greeter` serves it.
fn greetings(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("examples.leasehold.dev", "v1alpha1", "Greeting");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "greetings");
    Api::namespaced_with(client.clone(), namespace, &resource)
}

fn greeting(name: &str, spec: Value) -> anyhow::Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "examples.leasehold.dev/v1alpha1",
        "kind": "Greeting",
        "metadata": {"name": name},
        "spec": spec,
    }))?)
}

/// Installs (or updates) the Greeting CRD from the committed `crd.json` and
/// waits until it is served. Applied, not created, so a control plane
/// reused from an earlier run gets the current schema.
async fn install_greeting_crd(cluster: &TestCluster) -> anyhow::Result<()> {
    let path = repo_root().join("plugins/examples/greeter/crd.json");
    let crd: CustomResourceDefinition = serde_json::from_slice(&std::fs::read(path)?)?;
    apply_crd(&cluster.client()?, &crd).await
}

/// A ServiceAccount that may do what the greeter does and nothing more:
/// read Greetings, write their status, and manage ConfigMaps.
async fn greeter_account(cluster: &TestCluster, namespace: &str) -> anyhow::Result<String> {
    let group = ["examples.leasehold.dev"];
    let name = service_account_with(
        cluster,
        namespace,
        vec![
            rule(&group, &["greetings"], &["get", "list", "watch"]),
            rule(&group, &["greetings/status"], &["get", "update", "patch"]),
            rule(
                &[""],
                &["configmaps"],
                &["get", "list", "watch", "create", "update", "patch"],
            ),
            rule(&["", "events.k8s.io"], &["events"], &["create", "patch"]),
        ],
    )
    .await?;
    Ok(format!("{namespace}/{name}"))
}

/// `leasehold run` with the greeter plugin loaded from a manifest.
async fn start_greeter(cluster: &TestCluster, workdir: &Path) -> anyhow::Result<ReplicaProcess> {
    let plugins_ns = cluster.namespace("plugins").await?;
    let account = greeter_account(cluster, &plugins_ns).await?;
    let manifest = workdir.join("greeter.json");
    std::fs::write(
        &manifest,
        serde_json::to_vec_pretty(&json!({
            "name": "greeter",
            "component": plugin_component("greeter"),
            "serviceAccount": account,
        }))?,
    )?;
    let mut settings = ReplicaSettings::fast(&plugins_ns, "leasehold");
    settings.extra_args = vec![
        "--plugin".into(),
        manifest.display().to_string(),
        "--compile-cache".into(),
        workdir.join("cache").display().to_string(),
    ];
    ReplicaProcess::start("greeter-host", &settings, cluster.kubeconfig(), workdir).await
}

/// The greeting text in the ConfigMap, once it is owned by `owner_uid`.
async fn owned_greeting(
    config_maps: &Api<ConfigMap>,
    name: &str,
    owner_uid: &str,
) -> Option<String> {
    let config_map = config_maps.get_opt(name).await.ok()??;
    let owned = config_map.owner_references().iter().any(|owner| {
        owner.kind == "Greeting" && owner.uid == owner_uid && owner.controller == Some(true)
    });
    if !owned {
        return None;
    }
    config_map.data?.get("greeting").cloned()
}

/// The Greeting's status once it describes `generation`.
async fn status_at(greetings: &Api<DynamicObject>, name: &str, generation: i64) -> Option<Value> {
    let greeting = greetings.get(name).await.ok()?;
    let status = greeting.data.get("status")?.clone();
    (status["observedGeneration"] == json!(generation)).then_some(status)
}

#[tokio::test]
async fn a_greeting_gets_an_owned_config_map_and_a_status_that_follow_its_spec()
-> anyhow::Result<()> {
    let cluster = TestCluster::shared().await;
    install_greeting_crd(cluster).await?;
    let workdir = tempfile::tempdir()?;
    let replica = start_greeter(cluster, workdir.path()).await?;
    let admin = cluster.client()?;
    let namespace = cluster.namespace("greetings").await?;
    let greetings = greetings(&admin, &namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &namespace);

    let created = greetings
        .create(
            &PostParams::default(),
            &greeting("hello", json!({"name": "Ada"}))?,
        )
        .await?;
    let uid = created.uid().expect("a created object has a uid");
    let text = eventually(PATIENCE, "a ConfigMap owned by the Greeting", || {
        owned_greeting(&config_maps, "hello-greeting", &uid)
    })
    .await
    .map_err(|error| error.context(replica.log()))?;
    assert_eq!(text, "Hello, Ada!");
    let status = eventually(PATIENCE, "the Greeting's status", || {
        status_at(&greetings, "hello", 1)
    })
    .await?;
    assert_eq!(status["ready"], json!(true));
    assert_eq!(status["configMap"], json!("hello-greeting"));

    greetings
        .patch(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"name": "Grace"}})),
        )
        .await?;
    eventually(PATIENCE, "the ConfigMap to follow the new spec", || async {
        let text = owned_greeting(&config_maps, "hello-greeting", &uid).await?;
        (text == "Hello, Grace!").then_some(())
    })
    .await
    .map_err(|error| error.context(replica.log()))?;
    let status = eventually(PATIENCE, "the status to describe the new spec", || {
        status_at(&greetings, "hello", 2)
    })
    .await?;
    assert_eq!(status["ready"], json!(true));

    // The greeter owns the ConfigMap: one deleted by hand comes back.
    config_maps
        .delete("hello-greeting", &DeleteParams::default())
        .await?;
    eventually(PATIENCE, "the deleted ConfigMap to be put back", || async {
        let text = owned_greeting(&config_maps, "hello-greeting", &uid).await?;
        (text == "Hello, Grace!").then_some(())
    })
    .await
    .map_err(|error| error.context(replica.log()))?;

    // What the Greeting owned goes with it: the control plane's garbage
    // collector follows the owner reference the plugin set.
    greetings.delete("hello", &DeleteParams::default()).await?;
    eventually(
        PATIENCE,
        "the owned ConfigMap to go with its Greeting",
        || gone(&config_maps, "hello-greeting"),
    )
    .await
    .map_err(|error| error.context(replica.log()))?;
    Ok(())
}

#[tokio::test]
async fn a_greeting_that_says_not_whom_to_greet_is_refused_by_the_api_server() -> anyhow::Result<()>
{
    // The greeter itself validates nothing: its CRD's schema requires a
    // string `spec.name`, so such a Greeting never reaches it.
    let cluster = TestCluster::shared().await;
    install_greeting_crd(cluster).await?;
    let namespace = cluster.namespace("greetings").await?;
    let greetings = greetings(&cluster.client()?, &namespace);
    for (name, spec) in [("nameless", json!({})), ("numbered", json!({"name": 42}))] {
        let refused = greetings
            .create(&PostParams::default(), &greeting(name, spec)?)
            .await;
        match refused {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 422, "{status:?}"),
            other => panic!("a Greeting {name} was not refused: {other:?}"),
        }
    }
    Ok(())
}
