//! Admission plugins on the real API server: the leader writes the webhook
//! configurations (pointing by URL at a loopback balancer in front of the
//! replicas, retrying a review on the next replica as a mesh would), and the
//! API server's own webhook calls reach the plugin's `validate` and
//! `mutate` on whichever replica the balancer picks.
//!
//! The misbehaving fixture reviews ConfigMaps by their `data.admission`:
//! `allow`, `deny`, `label` (mutate adds `leasehold.dev/mutated=true`),
//! `trap`, `loop`, `error` and `bad-patch`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{DeleteParams, DynamicObject, PostParams};
use kube::{Api, Client, ResourceExt};
use leasehold_tests::admission::{client_trusting, review_of, serving_certificate};
use leasehold_tests::fixtures::{apply_plugin, config_map, plugin_namespace, store_component};
use leasehold_tests::{
    Balancer, ReplicaProcess, ReplicaSettings, TestCluster, eventually, free_address, gone,
    plugin_component,
};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);

/// The label that puts a ConfigMap under a plugin's webhooks.
const REVIEWED_BY: &str = "leasehold.dev/admission";

/// Replicas serving HTTPS behind a balancer, with Plugins that declare
/// admission for the ConfigMaps of one namespace.
struct Fixture {
    cluster: &'static TestCluster,
    namespace: String,
    account: String,
    workdir: tempfile::TempDir,
    balancer: Balancer,
    settings: ReplicaSettings,
    replicas: Vec<ReplicaProcess>,
}

/// How the fixture's replicas get their certificate.
enum Serving {
    /// From files, behind the balancer (which presents the same certificate).
    Balanced,
    /// Issued by the replicas into Secret `leasehold-tls`; the API server
    /// calls the first replica directly.
    Issued,
}

impl Fixture {
    async fn start(prefix: &str, replicas: usize) -> anyhow::Result<Self> {
        Self::start_serving(prefix, replicas, Serving::Balanced).await
    }

    async fn start_serving(
        prefix: &str,
        replicas: usize,
        serving: Serving,
    ) -> anyhow::Result<Self> {
        let cluster = TestCluster::shared().await;
        let (namespace, account) =
            plugin_namespace(cluster, prefix, &["get", "list", "watch"]).await?;
        let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client()?, &namespace);
        let component = std::fs::read(plugin_component("misbehaving"))?;
        store_component(&config_maps, "misbehaving-component", component).await?;
        let workdir = tempfile::tempdir()?;
        let (cert, key) = serving_certificate(workdir.path())?;
        let balancer = Balancer::start(&cert, &key).await?;
        let mut settings = ReplicaSettings::fast(&namespace, "leasehold");
        settings.extra_args = match serving {
            Serving::Balanced => vec![
                "--tls-cert-file".into(),
                cert.display().to_string(),
                "--tls-private-key-file".into(),
                key.display().to_string(),
                "--admission-url".into(),
                format!("https://{}", balancer.address()),
                // Self-signed: the certificate is its own authority.
                "--admission-ca-file".into(),
                cert.display().to_string(),
            ],
            Serving::Issued => {
                let listen = free_address()?;
                settings.listen = Some(listen);
                vec![
                    "--tls-secret".into(),
                    format!("{namespace}/leasehold-tls"),
                    "--admission-url".into(),
                    format!("https://{listen}"),
                ]
            }
        };
        settings.extra_args.extend([
            "--compile-cache".into(),
            workdir.path().join("cache").display().to_string(),
        ]);
        let mut fixture = Self {
            cluster,
            namespace,
            account,
            workdir,
            balancer,
            settings,
            replicas: Vec::new(),
        };
        for index in 0..replicas {
            fixture.add_replica(&format!("{prefix}-{index}")).await?;
        }
        Ok(fixture)
    }

    async fn add_replica(&mut self, identity: &str) -> anyhow::Result<()> {
        let replica = ReplicaProcess::start(
            identity,
            &self.settings,
            self.cluster.kubeconfig(),
            self.workdir.path(),
        )
        .await?;
        self.replicas.push(replica);
        self.balancer
            .route_to(self.replicas.iter().map(|replica| replica.api).collect());
        Ok(())
    }

    fn client(&self) -> anyhow::Result<Client> {
        self.cluster.client()
    }

    fn plugins(&self) -> anyhow::Result<Api<DynamicObject>> {
        let resource = kube::discovery::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("leasehold.dev", "v1alpha1", "Plugin"),
            "plugins",
        );
        Ok(Api::namespaced_with(
            self.client()?,
            &self.namespace,
            &resource,
        ))
    }

    /// Deploys the misbehaving fixture as Plugin `name`, reviewing (mutate
    /// and validate) the ConfigMaps labelled for it, under `policy`.
    async fn deploy(&self, name: &str, policy: &str) -> anyhow::Result<()> {
        self.deploy_with(name, policy, json!({})).await
    }

    /// [`deploy`](Self::deploy) with more configuration for the plugin.
    async fn deploy_with(&self, name: &str, policy: &str, config: Value) -> anyhow::Result<()> {
        let mut config = config;
        // Its reconciler watches nothing the tests create.
        config["selector"] = json!("leasehold.dev/misbehave=never");
        let webhook = json!({
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""],
                       "apiVersions": ["v1"], "resources": ["configmaps"]}],
            "failurePolicy": policy,
            "timeoutSeconds": 5,
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.namespace}},
            "objectSelector": {"matchLabels": {REVIEWED_BY: name}},
        });
        apply_plugin(
            &self.plugins()?,
            name,
            json!({
                "source": {"configMap": {"name": "misbehaving-component"}},
                "serviceAccountName": self.account,
                "config": config,
                "admission": {"mutating": webhook, "validating": webhook},
            }),
        )
        .await?;
        Ok(())
    }

    /// Creates (for real, or as a dry run) a ConfigMap reviewed by
    /// `plugin` in `mode`: what the API server answered.
    async fn create(
        &self,
        plugin: &str,
        name: &str,
        mode: &str,
        dry_run: bool,
    ) -> Result<ConfigMap, kube::Error> {
        let config_maps: Api<ConfigMap> = Api::namespaced(
            self.client()
                .map_err(|error| kube::Error::Service(error.into()))?,
            &self.namespace,
        );
        let params = PostParams {
            dry_run,
            ..PostParams::default()
        };
        config_maps
            .create(
                &params,
                &config_map(name, &[(REVIEWED_BY, plugin)], &[("admission", mode)]),
            )
            .await
    }

    /// Waits until the API server sends `plugin`'s reviews (its webhook
    /// configurations written and seen): a denial comes back.
    async fn reviewing(&self, plugin: &str) -> anyhow::Result<()> {
        eventually(
            PATIENCE,
            &format!("{plugin}'s webhooks in force"),
            || async {
                match self.create(plugin, "probe", "deny", true).await {
                    Err(kube::Error::Api(status))
                        if status.message.contains("misbehaving denies") =>
                    {
                        Some(())
                    }
                    _ => None,
                }
            },
        )
        .await
    }

    /// The replica holding the election Lease.
    async fn leader(&self) -> anyhow::Result<usize> {
        let leases: Api<Lease> = Api::namespaced(self.client()?, &self.namespace);
        eventually(PATIENCE, "a leader", || async {
            let lease = leases.get_opt("leasehold").await.ok()??;
            let holder = lease.spec?.holder_identity?;
            self.replicas
                .iter()
                .position(|replica| replica.identity == holder)
        })
        .await
    }
}

fn denial(result: Result<ConfigMap, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) => status.message,
        Err(other) => panic!("expected a denial, got {other}"),
        Ok(stored) => panic!("expected a denial, but {} was admitted", stored.name_any()),
    }
}

#[tokio::test]
async fn a_plugin_denies_and_mutates_requests_through_the_real_api_server() -> anyhow::Result<()> {
    let fixture = Fixture::start("admission", 1).await?;
    fixture.deploy("checker", "Fail").await?;
    fixture.reviewing("checker").await?;

    let message = denial(fixture.create("checker", "refused", "deny", false).await);
    assert!(
        message.contains("misbehaving denies refused"),
        "the plugin's message reaches the requester: {message}"
    );
    let mutated = fixture
        .create("checker", "defaulted", "label", false)
        .await?;
    assert_eq!(
        mutated
            .labels()
            .get("leasehold.dev/mutated")
            .map(String::as_str),
        Some("true"),
        "the mutating webhook's patch was applied"
    );
    fixture.create("checker", "fine", "allow", false).await?;
    // Every review in an instance of its own, though the replica makes the
    // next one ahead of its review: the plugin denies a second review in
    // one instance.
    for n in 0..5 {
        fixture
            .create("checker", &format!("fresh-{n}"), "once", false)
            .await?;
    }

    // The configurations point at the balancer with the CA bundle, and go
    // with the Plugin.
    let name = format!("{}.checker.plugins.leasehold.dev", fixture.namespace);
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(fixture.client()?);
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(fixture.client()?);
    let config = validating.get(&name).await?;
    let webhook = &config.webhooks.as_ref().unwrap()[0];
    assert_eq!(
        webhook.client_config.url.as_deref(),
        Some(
            format!(
                "https://{}/admission/{}/checker/validate",
                fixture.balancer.address(),
                fixture.namespace
            )
            .as_str()
        )
    );
    assert!(webhook.client_config.ca_bundle.is_some());
    assert_eq!(webhook.side_effects, "None");
    fixture
        .plugins()?
        .delete("checker", &DeleteParams::default())
        .await?;
    eventually(PATIENCE, "the validating configuration gone", || {
        gone(&validating, &name)
    })
    .await?;
    eventually(PATIENCE, "the mutating configuration gone", || {
        gone(&mutating, &name)
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn reviews_sent_by_hand_are_refused_with_a_reason_the_caller_can_act_on() -> anyhow::Result<()>
{
    let fixture = Fixture::start("admission-by-hand", 1).await?;
    // Validating only: asked to mutate, it has nothing to say.
    let mut webhook = json!({
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                   "resources": ["configmaps"]}],
        "failurePolicy": "Fail",
        "objectSelector": {"matchLabels": {REVIEWED_BY: "validator"}},
    });
    webhook["namespaceSelector"] =
        json!({"matchLabels": {"kubernetes.io/metadata.name": fixture.namespace}});
    apply_plugin(
        &fixture.plugins()?,
        "validator",
        json!({
            "source": {"configMap": {"name": "misbehaving-component"}},
            "serviceAccountName": fixture.account,
            "config": {"selector": "leasehold.dev/misbehave=never"},
            "admission": {"validating": webhook},
        }),
    )
    .await?;
    let client = client_trusting(&fixture.workdir.path().join("tls.crt"))?;
    let url = |plugin: &str, review: &str| {
        format!(
            "https://{}/admission/{}/{plugin}/{review}?timeout=2s",
            fixture.replicas[0].api, fixture.namespace
        )
    };
    let review = review_of(&fixture.namespace, "by-hand", "deny");
    // Once ready, the plugin answers what is sent by hand as it would the
    // API server.
    let answer: Value = eventually(PATIENCE, "the validator ready", || async {
        let sent = client
            .post(url("validator", "validate"))
            .json(&review)
            .send()
            .await
            .ok()?;
        sent.status()
            .is_success()
            .then_some(sent.json().await.ok()?)
    })
    .await?;
    assert_eq!(answer["response"]["allowed"], false, "{answer}");

    let refusal = |plugin: &'static str, review: &'static str, body: Vec<u8>| {
        let (client, url) = (&client, url(plugin, review));
        async move {
            let sent = client.post(url).body(body).send().await.unwrap();
            (sent.status().as_u16(), sent.text().await.unwrap())
        }
    };
    let body = serde_json::to_vec(&review)?;
    let (status, said) = refusal("validator", "mutate", body.clone()).await;
    assert_eq!(status, 404, "{said}");
    assert!(
        said.contains("declares no mutate webhook in spec.admission"),
        "{said}"
    );
    let (status, said) = refusal("validator", "approve", body.clone()).await;
    assert_eq!(status, 404, "{said}");
    assert!(said.contains("ends in /mutate or /validate"), "{said}");
    let (status, said) = refusal("validator", "validate", b"{not json".to_vec()).await;
    assert_eq!(status, 400, "{said}");
    assert!(said.contains("not an AdmissionReview"), "{said}");
    let (status, said) = refusal("nobody", "validate", body).await;
    assert_eq!(status, 404, "{said}");
    assert!(said.contains("no plugin"), "{said}");
    Ok(())
}

/// cert-manager renews a serving certificate in place (kubelet rewrites the
/// mounted Secret's files): a running replica serves the new one from its
/// next connection on, without a restart, and the leader writes the new CA
/// into the webhook configurations (the fixture's certificate is
/// self-signed, its own CA, as with cert-manager's self-signed issuer).
#[tokio::test]
async fn a_renewed_serving_certificate_is_served_without_a_restart() -> anyhow::Result<()> {
    let fixture = Fixture::start("admission-renewal", 1).await?;
    fixture.deploy("checker", "Fail").await?;
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(fixture.client()?);
    let configuration = format!("{}.checker.plugins.leasehold.dev", fixture.namespace);
    let ca_bundle = || async {
        let config = validating.get_opt(&configuration).await.ok()??;
        let webhook = config.webhooks?.into_iter().next()?;
        webhook.client_config.ca_bundle.map(|ca| ca.0)
    };
    let served = fixture.workdir.path();
    let first = std::fs::read(served.join("tls.crt"))?;
    eventually(PATIENCE, "the webhook configuration", || async {
        (ca_bundle().await? == first).then_some(())
    })
    .await?;
    let before = tempfile::tempdir()?;
    std::fs::copy(served.join("tls.crt"), before.path().join("tls.crt"))?;
    let renewed = tempfile::tempdir()?;
    let (cert, key) = serving_certificate(renewed.path())?;
    let healthz = format!("https://{}/healthz", fixture.replicas[0].api);
    // A fresh client per attempt: a new connection, a new handshake.
    let answers = |trusted: PathBuf| {
        let healthz = healthz.clone();
        async move {
            let client = client_trusting(&trusted).unwrap();
            client.get(&healthz).send().await.is_ok()
        }
    };
    eventually(PATIENCE, "the replica serving", || async {
        answers(before.path().join("tls.crt")).await.then_some(())
    })
    .await?;
    assert!(
        !answers(cert.clone()).await,
        "the renewed certificate served before its renewal"
    );

    // As kubelet does: written aside, then swapped in.
    for (from, name) in [(&cert, "tls.crt"), (&key, "tls.key")] {
        let staged = served.join(format!("{name}.new"));
        std::fs::copy(from, &staged)?;
        std::fs::rename(&staged, served.join(name))?;
    }
    eventually(PATIENCE, "the renewed certificate served", || async {
        answers(cert.clone()).await.then_some(())
    })
    .await?;
    assert!(
        !answers(before.path().join("tls.crt")).await,
        "the previous certificate still served after the renewal"
    );
    let renewed_ca = std::fs::read(&cert)?;
    eventually(
        PATIENCE,
        "the renewed CA in the webhook configuration",
        || async { (ca_bundle().await? == renewed_ca).then_some(()) },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn replicas_without_a_certificate_issue_one_into_a_secret_that_the_api_server_trusts()
-> anyhow::Result<()> {
    let mut fixture = Fixture::start_serving("admission-issued", 1, Serving::Issued).await?;
    fixture.deploy("checker", "Fail").await?;
    fixture.reviewing("checker").await?;
    let message = denial(fixture.create("checker", "refused", "deny", false).await);
    assert!(
        message.contains("misbehaving denies refused"),
        "the API server called the replica over the certificate it issued: {message}"
    );

    let secrets: Api<Secret> = Api::namespaced(fixture.client()?, &fixture.namespace);
    let issued = secrets.get("leasehold-tls").await?;
    assert_eq!(issued.type_.as_deref(), Some("kubernetes.io/tls"));
    let field = |secret: &Secret, key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .map(|bytes| bytes.0.clone())
            .unwrap_or_default()
    };
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(fixture.client()?);
    let config = validating
        .get(&format!(
            "{}.checker.plugins.leasehold.dev",
            fixture.namespace
        ))
        .await?;
    assert_eq!(
        config.webhooks.unwrap()[0]
            .client_config
            .ca_bundle
            .as_ref()
            .map(|ca| ca.0.clone()),
        Some(field(&issued, "ca.crt")),
        "the webhook configuration carries the Secret's CA"
    );

    // A second replica finds the certificate and serves the same one.
    fixture.settings.listen = Some(free_address()?);
    fixture.add_replica("admission-issued-1").await?;
    let second = fixture.replicas[1].api;
    let ca_file = fixture.workdir.path().join("issued-ca.crt");
    std::fs::write(&ca_file, field(&issued, "ca.crt"))?;
    let trusting = client_trusting(&ca_file)?;
    eventually(
        PATIENCE,
        "the second replica serving the issued certificate",
        || {
            let trusting = trusting.clone();
            async move {
                let response = trusting
                    .get(format!("https://{second}/healthz"))
                    .send()
                    .await
                    .ok()?;
                response.status().is_success().then_some(())
            }
        },
    )
    .await?;
    let after = secrets.get("leasehold-tls").await?;
    assert_eq!(
        after.metadata.resource_version, issued.metadata.resource_version,
        "a replica finding a good certificate leaves the Secret alone"
    );
    Ok(())
}

#[tokio::test]
async fn replicas_starting_at_once_settle_on_one_certificate_and_renew_it_from_the_same_ca()
-> anyhow::Result<()> {
    use leasehold::api::{Issuing, settle_certificate};

    let cluster = TestCluster::shared().await;
    let issuing = Issuing {
        namespace: cluster.namespace("issued-race").await?,
        name: "leasehold-tls".into(),
        names: vec!["leasehold.ops.svc".into()],
    };
    let now = std::time::SystemTime::now();
    let client = cluster.client()?;
    let settled = futures::future::join_all(
        (0..4).map(|_| settle_certificate(client.clone(), &issuing, now)),
    )
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    assert!(
        settled.iter().all(|issued| issued.cert == settled[0].cert),
        "four replicas starting at once serve one certificate"
    );

    // A replica that must also answer on an address renews it, from the CA
    // the webhook configurations already trust.
    let wider = Issuing {
        names: vec!["leasehold.ops.svc".into(), "10.0.0.7".into()],
        ..issuing.clone()
    };
    let renewed = settle_certificate(client.clone(), &wider, now).await?;
    assert_ne!(renewed.cert, settled[0].cert);
    assert_eq!(renewed.ca, settled[0].ca);
    let again = settle_certificate(client, &issuing, now).await?;
    assert_eq!(
        again.cert, renewed.cert,
        "the renewed certificate covers the first replica's names too"
    );
    Ok(())
}

#[tokio::test]
async fn a_plugin_that_cannot_answer_is_judged_by_its_failure_policy() -> anyhow::Result<()> {
    let fixture = Fixture::start("admission-failing", 1).await?;
    fixture.deploy("strict", "Fail").await?;
    fixture.deploy("lenient", "Ignore").await?;
    fixture.reviewing("strict").await?;
    fixture.reviewing("lenient").await?;

    for (mode, cause) in [
        ("trap", "plugin trapped"),
        ("loop", "plugin trapped"),
        ("error", "it could not decide"),
        ("bad-patch", "not an RFC 6902 JSON patch"),
    ] {
        let message = denial(fixture.create("strict", mode, mode, true).await);
        assert!(
            message.contains("plugin") && message.contains("could not review the request"),
            "{mode}: {message}"
        );
        assert!(message.contains(cause), "{mode}: {cause:?} in {message}");
        assert!(message.contains("failurePolicy Fail"), "{mode}: {message}");
        fixture
            .create("lenient", mode, mode, true)
            .await
            .map_err(|error| anyhow::anyhow!("{mode} under Ignore was refused: {error}"))?;
    }
    Ok(())
}

#[tokio::test]
async fn admission_keeps_answering_while_the_leader_is_killed() -> anyhow::Result<()> {
    let fixture = Fixture::start("admission-ha", 3).await?;
    fixture.deploy("checker", "Fail").await?;
    fixture.reviewing("checker").await?;
    let leader = fixture.leader().await?;
    let fixture = Arc::new(fixture);

    // Two clients create (dry run) without pause, alternating a request the
    // plugin denies and one it allows; anything else is a failed request.
    let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut load = Vec::new();
    for worker in 0..2 {
        let (fixture, answered, failed) = (fixture.clone(), answered.clone(), failed.clone());
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.is_cancelled() {
                n += 1;
                let (mode, denied) = if n % 2 == 0 {
                    ("deny", true)
                } else {
                    ("allow", false)
                };
                let result = fixture
                    .create("checker", &format!("w{worker}-{n}"), mode, true)
                    .await;
                let as_expected = match &result {
                    Err(kube::Error::Api(status)) => {
                        denied && status.message.contains("misbehaving denies")
                    }
                    Err(_) => false,
                    Ok(_) => !denied,
                };
                if as_expected {
                    answered.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("unexpected answer to {mode}: {result:?}");
                }
            }
        }));
    }
    let answered_at_least = |count: u64| {
        let answered = answered.clone();
        move || {
            let answered = answered.clone();
            async move { (answered.load(Ordering::Relaxed) >= count).then_some(()) }
        }
    };
    eventually(PATIENCE, "reviews flowing", answered_at_least(50)).await?;
    fixture.replicas[leader].signal(Signal::SIGKILL)?;
    // Until another replica leads, and well after: the dead one stays in the
    // balancer (as in a Service until its endpoints change).
    let leases: Api<Lease> = Api::namespaced(fixture.client()?, &fixture.namespace);
    let dead = fixture.replicas[leader].identity.clone();
    eventually(PATIENCE, "a new leader", || async {
        let holder = leases
            .get_opt("leasehold")
            .await
            .ok()??
            .spec?
            .holder_identity?;
        (holder != dead).then_some(())
    })
    .await?;
    let so_far = answered.load(Ordering::Relaxed);
    eventually(
        PATIENCE,
        "reviews after the takeover",
        answered_at_least(so_far + 100),
    )
    .await?;
    stop.cancel();
    for worker in load {
        worker.await?;
    }
    let (answered, failed) = (
        answered.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    eprintln!("admission across a leader kill: {answered} answered as expected, {failed} not");
    assert_eq!(failed, 0, "requests failed while the leader died");
    Ok(())
}

#[tokio::test]
async fn a_hot_reload_changes_admission_without_a_restart_or_a_dropped_review() -> anyhow::Result<()>
{
    let fixture = Arc::new(Fixture::start("admission-reload", 1).await?);
    fixture.deploy("checker", "Fail").await?;
    fixture.reviewing("checker").await?;
    fixture.create("checker", "before", "allow", true).await?;

    // Reviews keep coming while the Plugin changes: each is answered by
    // the old version or the new one, never failed.
    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let (fixture, stop) = (fixture.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.is_cancelled() {
                n += 1;
                match fixture
                    .create("checker", &format!("during-{n}"), "allow", true)
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(status))
                        if status.message.contains("misbehaving denies") => {}
                    Err(error) => anyhow::bail!("a review failed during the reload: {error}"),
                }
            }
            anyhow::Ok(n)
        })
    };
    // The new configuration denies everything.
    fixture
        .deploy_with("checker", "Fail", json!({"admission": "deny"}))
        .await?;
    eventually(PATIENCE, "the reloaded plugin to deny", || async {
        let denied = fixture.create("checker", "after", "allow", true).await;
        matches!(denied, Err(kube::Error::Api(status)) if status.message.contains("misbehaving denies after"))
            .then_some(())
    })
    .await?;
    stop.cancel();
    let reviewed = load.await??;
    assert!(reviewed > 0, "no review ran during the reload");
    assert!(
        fixture.replicas[0].log().matches("replica started").count() == 1,
        "the replica restarted"
    );
    Ok(())
}

#[tokio::test]
async fn a_bad_admission_declaration_is_refused_with_a_clear_reason() -> anyhow::Result<()> {
    let fixture = Fixture::start("admission-bad", 1).await?;
    let plugins = fixture.plugins()?;
    let spec = |admission: Value| {
        json!({
            "source": {"configMap": {"name": "misbehaving-component"}},
            "serviceAccountName": fixture.account,
            "admission": admission,
        })
    };
    let rule = json!({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                      "resources": ["configmaps"]});

    // What the schema can say, the API server refuses at once.
    let refused = apply_plugin(
        &plugins,
        "slow",
        spec(json!({"validating": {"rules": [rule], "timeoutSeconds": 31}})),
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("timeoutSeconds"), "{refused}");
    let refused = apply_plugin(&plugins, "empty", spec(json!({})))
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("set mutating, validating or both"),
        "{refused}"
    );

    // The rest the replicas refuse, on the Plugin's status.
    let mut patching = rule.clone();
    patching["operations"] = json!(["PATCH"]);
    apply_plugin(
        &plugins,
        "patching",
        spec(json!({"validating": {"rules": [patching]}})),
    )
    .await?;
    let message = eventually(PATIENCE, "patching's status", || {
        condition(&plugins, "patching", "Fetched", "InvalidSpec")
    })
    .await?;
    assert!(
        message.contains("admission.validating") && message.contains("\"PATCH\" is not one of"),
        "{message}"
    );

    // A component without the admission export cannot serve what is declared.
    let config_maps: Api<ConfigMap> = Api::namespaced(fixture.client()?, &fixture.namespace);
    store_component(
        &config_maps,
        "mirror-component",
        std::fs::read(plugin_component("configmap-mirror"))?,
    )
    .await?;
    let mut mirror = spec(json!({"validating": {"rules": [rule]}}));
    mirror["source"] = json!({"configMap": {"name": "mirror-component"}});
    apply_plugin(&plugins, "mirror", mirror).await?;
    let message = eventually(PATIENCE, "mirror's status", || {
        condition(&plugins, "mirror", "Compiled", "NoAdmissionExport")
    })
    .await?;
    assert!(
        message.contains("exports no leasehold:controller/admission"),
        "{message}"
    );
    Ok(())
}

/// The message of condition `kind` once it is False with `reason`.
async fn condition(
    plugins: &Api<DynamicObject>,
    name: &str,
    kind: &str,
    reason: &str,
) -> Option<String> {
    let plugin = plugins.get(name).await.ok()?;
    let conditions = plugin.data["status"]["conditions"].as_array()?.clone();
    conditions.iter().find_map(|condition| {
        (condition["type"] == kind
            && condition["status"] == "False"
            && condition["reason"] == reason)
            .then(|| condition["message"].as_str().unwrap_or_default().to_owned())
    })
}
