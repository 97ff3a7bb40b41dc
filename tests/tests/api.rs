//! The plugin API of `leasehold run`, against the real API server: bearer
//! tokens checked by TokenReview, RBAC checked by SubjectAccessReview with
//! real ServiceAccounts, uploads that create and update ConfigMaps and
//! Plugins, bounded bodies, and HTTPS with a certificate made for the test.
//!
//! Each test runs one replica as a follower (another holder keeps the Lease)
//! so that nothing but the test writes Plugin status.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use leasehold::plugins::{Plugin, PluginSpec};
use leasehold_tests::fixtures::install_plugin_crd;
use leasehold_tests::{
    ReplicaProcess, ReplicaSettings, TestCluster, eventually, plugin_component, unique_name,
};
use nix::sys::signal::Signal;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PATIENCE: Duration = Duration::from_secs(60);

/// One replica of the test's own, reached over plain HTTP or HTTPS.
struct Fixture {
    cluster: &'static TestCluster,
    namespace: String,
    replica: ReplicaProcess,
    base: String,
    http: reqwest::Client,
    _workdir: tempfile::TempDir,
}

impl Fixture {
    async fn start(prefix: &str) -> anyhow::Result<Self> {
        Self::start_with(prefix, |_| Ok((Vec::new(), None))).await
    }

    /// `tls` gets the work directory and returns extra flags and, for
    /// HTTPS, the certificate the client should trust.
    async fn start_with(
        prefix: &str,
        tls: impl FnOnce(&Path) -> anyhow::Result<(Vec<String>, Option<String>)>,
    ) -> anyhow::Result<Self> {
        let cluster = TestCluster::shared().await;
        install_plugin_crd(&cluster.client()?).await?;
        let namespace = cluster.namespace(prefix).await?;
        let lease_name = "leasehold";
        hold_lease_elsewhere(cluster, &namespace, lease_name).await?;
        let workdir = tempfile::tempdir()?;
        let (extra_args, trusted) = tls(workdir.path())?;
        let mut settings = ReplicaSettings::fast(&namespace, lease_name);
        settings.extra_args = extra_args;
        let replica = ReplicaProcess::start(
            &unique_name("api"),
            &settings,
            cluster.kubeconfig(),
            workdir.path(),
        )
        .await?;
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(30));
        let scheme = match &trusted {
            Some(pem) => {
                http = http
                    .tls_built_in_root_certs(false)
                    .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes())?);
                "https"
            }
            None => "http",
        };
        let fixture = Self {
            cluster,
            base: format!("{scheme}://{}", replica.api),
            replica,
            namespace,
            http: http.build()?,
            _workdir: workdir,
        };
        fixture.wait_ready().await?;
        Ok(fixture)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let ready = eventually(PATIENCE, "the replica to be ready", || async {
            let response = self.http.get(self.url("/readyz")).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
        ready.map_err(|error| anyhow::anyhow!("{error}\nreplica log:\n{}", self.replica.log()))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path` with an optional bearer token: status and JSON body.
    async fn get(&self, path: &str, token: Option<&str>) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.send().await?).await
    }

    /// `PUT` a component to the upload route of plugin `name`.
    async fn upload(
        &self,
        name: &str,
        query: &str,
        token: Option<&str>,
        bytes: Vec<u8>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let path = format!(
            "/api/v1/namespaces/{}/plugins/{name}/component{query}",
            self.namespace
        );
        let mut request = self
            .http
            .put(self.url(&path))
            .header("content-type", "application/wasm")
            .body(bytes);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.send().await?).await
    }

    /// A ServiceAccount of the test namespace and a token for it, with no
    /// RBAC granted.
    async fn account(&self, name: &str) -> anyhow::Result<String> {
        self.cluster
            .service_account_token(&self.namespace, name)
            .await
    }

    /// Grants the ServiceAccount `account` exactly `rules` in the test
    /// namespace.
    async fn grant(&self, account: &str, rules: Vec<PolicyRule>) -> anyhow::Result<()> {
        let admin = self.cluster.client()?;
        let name = unique_name(account);
        Api::<Role>::namespaced(admin.clone(), &self.namespace)
            .create(
                &PostParams::default(),
                &Role {
                    metadata: named(&name),
                    rules: Some(rules),
                },
            )
            .await?;
        Api::<RoleBinding>::namespaced(admin, &self.namespace)
            .create(
                &PostParams::default(),
                &RoleBinding {
                    metadata: named(&name),
                    role_ref: RoleRef {
                        api_group: "rbac.authorization.k8s.io".into(),
                        kind: "Role".into(),
                        name: name.clone(),
                    },
                    subjects: Some(vec![Subject {
                        kind: "ServiceAccount".into(),
                        name: account.into(),
                        namespace: Some(self.namespace.clone()),
                        ..Subject::default()
                    }]),
                },
            )
            .await?;
        Ok(())
    }

    fn plugins(&self) -> anyhow::Result<Api<Plugin>> {
        Ok(Api::namespaced(self.cluster.client()?, &self.namespace))
    }

    fn config_maps(&self) -> anyhow::Result<Api<ConfigMap>> {
        Ok(Api::namespaced(self.cluster.client()?, &self.namespace))
    }
}

async fn answer(response: reqwest::Response) -> anyhow::Result<(StatusCode, Value)> {
    let status = response.status();
    let text = response.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, body))
}

fn named(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        ..ObjectMeta::default()
    }
}

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

/// The rights an upload needs: both objects, created or updated, and the
/// use of the plugin's account.
fn upload_rules() -> Vec<PolicyRule> {
    vec![
        rule("leasehold.dev", &["plugins"], &["get", "create", "patch"]),
        rule("", &["configmaps"], &["get", "create", "patch"]),
        rule("", &["serviceaccounts"], &["impersonate"]),
    ]
}

/// A Lease held by someone else for an hour: the test's replica stays a
/// follower, which still serves the whole API.
async fn hold_lease_elsewhere(
    cluster: &TestCluster,
    namespace: &str,
    name: &str,
) -> anyhow::Result<()> {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    Api::<Lease>::namespaced(cluster.client()?, namespace)
        .create(
            &PostParams::default(),
            &Lease {
                metadata: named(name),
                spec: Some(LeaseSpec {
                    holder_identity: Some("a-replica-of-another-test".into()),
                    lease_duration_seconds: Some(3600),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            },
        )
        .await?;
    Ok(())
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn component(crate_name: &str) -> anyhow::Result<Vec<u8>> {
    Ok(std::fs::read(plugin_component(crate_name))?)
}

#[tokio::test]
async fn plugin_routes_need_a_valid_bearer_token_while_probes_stay_open() -> anyhow::Result<()> {
    let fixture = Fixture::start("api-authn").await?;

    let (status, body) = fixture.get("/api/v1/plugins", None).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], 401);
    assert_eq!(body["error"]["reason"], "Unauthorized");
    let response = fixture
        .http
        .get(fixture.url("/api/v1/plugins"))
        .send()
        .await?;
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap()),
        Some("Bearer"),
        "a 401 says which scheme to use"
    );

    let (status, body) = fixture
        .get("/api/v1/plugins", Some("not-a-token-the-api-server-issued"))
        .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        body["error"]["message"],
        "the bearer token was not accepted"
    );

    let (status, body) = fixture
        .upload("anything", "", None, b"\0asm".to_vec())
        .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    for open in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/leader",
        "/api/v1/replicas",
    ] {
        let (status, body) = fixture.get(open, None).await?;
        assert_eq!(status, StatusCode::OK, "{open}: {body}");
    }
    Ok(())
}

#[tokio::test]
async fn reading_plugins_needs_get_and_list_and_shows_their_status() -> anyhow::Result<()> {
    let fixture = Fixture::start("api-read").await?;
    let namespace = fixture.namespace.clone();
    let plugins = fixture.plugins()?;
    let mut plugin = Plugin::new(
        "mirror",
        serde_json::from_value::<PluginSpec>(json!({
            "source": {"configMap": {"name": "mirror-component"}},
            "serviceAccountName": "mirror",
        }))?,
    );
    plugin = plugins.create(&PostParams::default(), &plugin).await?;
    let status = json!({"status": {
        "source": "configMap:mirror-component/component.wasm",
        "lastError": {"message": "written by the test", "time": "2025-01-01T00:00:00Z"},
    }});
    plugins
        .patch_status("mirror", &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    let reader = fixture.account("reader").await?;

    let (code, body) = fixture
        .get(
            &format!("/api/v1/plugins?namespace={namespace}"),
            Some(&reader),
        )
        .await?;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "cannot list resource \"plugins\" in API group \"leasehold.dev\" in the namespace \"{namespace}\""
        )),
        "{message}"
    );
    assert!(message.contains("system:serviceaccount"), "{message}");
    let one = format!("/api/v1/namespaces/{namespace}/plugins/mirror");
    let (code, body) = fixture.get(&one, Some(&reader)).await?;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot get")
    );

    fixture
        .grant(
            "reader",
            vec![rule("leasehold.dev", &["plugins"], &["get", "list"])],
        )
        .await?;
    // RBAC reaches the authorizer's cache a moment after the binding.
    let list = eventually(PATIENCE, "the reader to be allowed to list", || async {
        let (code, body) = fixture
            .get(
                &format!("/api/v1/plugins?namespace={namespace}"),
                Some(&reader),
            )
            .await
            .ok()?;
        (code == StatusCode::OK).then_some(body)
    })
    .await?;
    let items = list["items"].as_array().expect("a list of items");
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["metadata"]["name"], "mirror");
    assert_eq!(items[0]["metadata"]["uid"], json!(plugin.uid()));
    assert_eq!(items[0]["spec"]["serviceAccountName"], "mirror");
    assert_eq!(
        items[0]["status"]["lastError"]["message"],
        "written by the test"
    );

    let (code, body) = fixture.get(&one, Some(&reader)).await?;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        body["status"]["source"],
        "configMap:mirror-component/component.wasm"
    );
    assert!(body["metadata"].get("managedFields").is_none());

    let (code, body) = fixture
        .get(
            &format!("/api/v1/namespaces/{namespace}/plugins/absent"),
            Some(&reader),
        )
        .await?;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], 404);

    // A Role grants one namespace, not the cluster.
    let (code, body) = fixture.get("/api/v1/plugins", Some(&reader)).await?;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .ends_with("at the cluster scope"),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn uploading_a_component_creates_its_configmap_and_plugin_and_a_new_one_changes_the_digest()
-> anyhow::Result<()> {
    let fixture = Fixture::start("api-upload").await?;
    let namespace = fixture.namespace.clone();
    let deployer = fixture.account("deployer").await?;
    let greeter = component("greeter")?;
    let mirror = component("configmap-mirror")?;
    let create = "?serviceAccountName=greeter";

    let (code, body) = fixture
        .upload("greeter", create, Some(&deployer), greeter.clone())
        .await?;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot get resource \"plugins\""),
        "{body}"
    );

    // Plugins and ConfigMaps alone are not enough: the plugin would run as
    // an account the deployer may not use.
    fixture
        .grant("deployer", upload_rules()[..2].to_vec())
        .await?;
    let refused = eventually(PATIENCE, "the account to be the one refusal", || async {
        let (code, body) = fixture
            .upload("greeter", create, Some(&deployer), greeter.clone())
            .await
            .ok()?;
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (code == StatusCode::FORBIDDEN && message.contains("serviceaccounts")).then_some(message)
    })
    .await?;
    assert!(refused.contains("impersonate"), "{refused}");

    // One who may write Plugins and use the account but not ConfigMaps is
    // refused by the API server itself, and nothing is written.
    let half = fixture.account("half").await?;
    let mut no_config_maps = upload_rules();
    no_config_maps.remove(1);
    fixture.grant("half", no_config_maps).await?;
    let refused = eventually(PATIENCE, "the ConfigMap write to be refused", || async {
        let (code, body) = fixture
            .upload("half-plugin", create, Some(&half), greeter.clone())
            .await
            .ok()?;
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (code == StatusCode::FORBIDDEN && message.contains("configmaps")).then_some(message)
    })
    .await?;
    assert!(refused.contains("system:serviceaccount:"), "{refused}");
    assert!(fixture.plugins()?.get_opt("half-plugin").await?.is_none());

    fixture.grant("deployer", upload_rules()).await?;
    eventually(PATIENCE, "the deployer to be allowed to upload", || async {
        // Bytes that are not wasm at all: allowed now, and refused as such.
        let (code, _) = fixture
            .upload("greeter", create, Some(&deployer), b"not wasm".to_vec())
            .await
            .ok()?;
        (code != StatusCode::FORBIDDEN).then_some(())
    })
    .await?;

    for (not_a_component, reason) in [
        (b"not wasm".to_vec(), "not a valid wasm component"),
        (
            b"\0asm\x01\0\0\0".to_vec(),
            "a core wasm module, not a component",
        ),
    ] {
        let (code, body) = fixture
            .upload("greeter", create, Some(&deployer), not_a_component)
            .await?;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(reason),
            "{body}"
        );
    }
    assert!(fixture.plugins()?.get_opt("greeter").await?.is_none());
    assert!(
        fixture
            .config_maps()?
            .get_opt("greeter-component")
            .await?
            .is_none()
    );

    let (code, body) = fixture
        .upload("greeter", "", Some(&deployer), greeter.clone())
        .await?;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("serviceAccountName")
    );

    let (code, body) = fixture
        .upload("greeter", create, Some(&deployer), greeter.clone())
        .await?;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(body["kind"], "Plugin");
    assert_eq!(
        body["spec"]["source"]["configMap"]["sha256"],
        digest(&greeter)
    );

    let plugin = fixture.plugins()?.get("greeter").await?;
    let source = plugin
        .spec
        .source
        .config_map
        .clone()
        .expect("a configMap source");
    assert_eq!(source.name, "greeter-component");
    assert_eq!(source.key, "component.wasm");
    assert_eq!(source.sha256, Some(digest(&greeter)));
    assert_eq!(plugin.spec.service_account_name, "greeter");
    let stored = fixture.config_maps()?.get("greeter-component").await?;
    assert_eq!(
        stored_component(&stored),
        greeter,
        "the ConfigMap holds the uploaded bytes"
    );
    assert_eq!(
        stored
            .labels()
            .get("leasehold.dev/plugin")
            .map(String::as_str),
        Some("greeter")
    );
    let owners = stored.owner_references();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(owners[0].kind, "Plugin");
    assert_eq!(owners[0].name, "greeter");
    assert_eq!(Some(&owners[0].uid), plugin.uid().as_ref());

    // A new version: the same objects, the new bytes and digest.
    let (code, body) = fixture
        .upload("greeter", "", Some(&deployer), mirror.clone())
        .await?;
    assert_eq!(code, StatusCode::OK, "{body}");
    let updated = fixture.plugins()?.get("greeter").await?;
    assert_eq!(updated.uid(), plugin.uid());
    let source = updated
        .spec
        .source
        .config_map
        .clone()
        .expect("a configMap source");
    assert_eq!(source.sha256, Some(digest(&mirror)));
    assert_ne!(digest(&mirror), digest(&greeter));
    assert_eq!(
        updated.spec.service_account_name, "greeter",
        "kept when not given"
    );
    let stored = fixture.config_maps()?.get("greeter-component").await?;
    assert_eq!(stored_component(&stored), mirror);
    assert_eq!(stored.owner_references().len(), 1);

    let (code, body) = fixture
        .get(
            &format!("/api/v1/namespaces/{namespace}/plugins/greeter"),
            Some(&deployer),
        )
        .await?;
    assert_eq!(
        code,
        StatusCode::OK,
        "the deployer may read what it uploaded: {body}"
    );
    Ok(())
}

fn stored_component(config_map: &ConfigMap) -> Vec<u8> {
    config_map
        .binary_data
        .as_ref()
        .and_then(|data: &BTreeMap<_, _>| data.get("component.wasm"))
        .map(|bytes| bytes.0.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_component_over_one_mebibyte_is_refused_with_413_and_nothing_is_written()
-> anyhow::Result<()> {
    let fixture = Fixture::start("api-large").await?;
    let deployer = fixture.account("deployer").await?;
    fixture.grant("deployer", upload_rules()).await?;
    let oversized = vec![0u8; (1 << 20) + 1];
    let (code, body) = eventually(PATIENCE, "the deployer to be allowed to upload", || async {
        let answer = fixture
            .upload(
                "big",
                "?serviceAccountName=big",
                Some(&deployer),
                oversized.clone(),
            )
            .await
            .ok()?;
        (answer.0 != StatusCode::FORBIDDEN).then_some(answer)
    })
    .await?;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], 413);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("1048576"),
        "{body}"
    );
    assert!(fixture.plugins()?.get_opt("big").await?.is_none());
    assert!(
        fixture
            .config_maps()?
            .get_opt("big-component")
            .await?
            .is_none()
    );
    Ok(())
}

#[tokio::test]
async fn with_a_certificate_the_api_is_served_over_https_and_still_drains_on_sigterm()
-> anyhow::Result<()> {
    let issued =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    let cert = issued.cert.pem();
    let key = issued.signing_key.serialize_pem();
    let trusted = cert.clone();
    let mut fixture = Fixture::start_with("api-tls", |dir| {
        let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert_file, &cert)?;
        std::fs::write(&key_file, &key)?;
        let args = vec![
            "--tls-cert-file".to_owned(),
            cert_file.display().to_string(),
            "--tls-private-key-file".to_owned(),
            key_file.display().to_string(),
        ];
        Ok((args, Some(trusted)))
    })
    .await?;
    assert!(fixture.base.starts_with("https://"));

    let (code, body) = fixture.get("/api/v1/leader", None).await?;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = fixture.get("/api/v1/plugins", Some("garbage")).await?;
    assert_eq!(
        code,
        StatusCode::UNAUTHORIZED,
        "authentication works over HTTPS: {body}"
    );
    let token = fixture.account("reader").await?;
    fixture
        .grant(
            "reader",
            vec![rule("leasehold.dev", &["plugins"], &["list"])],
        )
        .await?;
    let path = format!("/api/v1/plugins?namespace={}", fixture.namespace);
    let list = eventually(
        PATIENCE,
        "the reader to list plugins over HTTPS",
        || async {
            let (code, body) = fixture.get(&path, Some(&token)).await.ok()?;
            (code == StatusCode::OK).then_some(body)
        },
    )
    .await?;
    assert_eq!(list["items"], json!([]));

    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", fixture.replica.api))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        !plain.is_ok_and(|response| response.status().is_success()),
        "plain HTTP is not served"
    );
    let untrusting = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(5))
        .build()?;
    assert!(
        untrusting
            .get(fixture.url("/healthz"))
            .send()
            .await
            .is_err(),
        "a client that does not trust the certificate refuses it"
    );

    fixture.replica.signal(Signal::SIGTERM)?;
    let code = fixture.replica.wait(Duration::from_secs(20)).await?;
    assert_eq!(code, Some(0), "{}", fixture.replica.log());
    Ok(())
}

#[tokio::test]
async fn a_replica_given_half_a_certificate_or_an_unreadable_one_does_not_start()
-> anyhow::Result<()> {
    let cluster = TestCluster::shared().await;
    let namespace = cluster.namespace("api-tls-bad").await?;
    let workdir = tempfile::tempdir()?;
    let settings = |args: &[&str]| {
        let mut settings = ReplicaSettings::fast(&namespace, "leasehold");
        settings.extra_args = args.iter().map(|arg| (*arg).to_owned()).collect();
        settings
    };
    let cert_file = workdir.path().join("tls.crt");
    std::fs::write(&cert_file, "not a certificate")?;
    let cert = cert_file.display().to_string();
    let absent = workdir.path().join("absent.key").display().to_string();

    let mut half = ReplicaProcess::start(
        "half",
        &settings(&["--tls-cert-file", &cert]),
        cluster.kubeconfig(),
        workdir.path(),
    )
    .await?;
    assert_ne!(half.wait(Duration::from_secs(20)).await?, Some(0));
    assert!(
        half.log().contains("--tls-private-key-file"),
        "{}",
        half.log()
    );

    let mut unreadable = ReplicaProcess::start(
        "unreadable",
        &settings(&["--tls-cert-file", &cert, "--tls-private-key-file", &absent]),
        cluster.kubeconfig(),
        workdir.path(),
    )
    .await?;
    assert_ne!(unreadable.wait(Duration::from_secs(20)).await?, Some(0));
    assert!(
        unreadable.log().contains("absent.key"),
        "{}",
        unreadable.log()
    );

    let key_file = workdir.path().join("tls.key");
    std::fs::write(&key_file, "not a key")?;
    let key = key_file.display().to_string();
    let invalid = ReplicaProcess::start(
        "invalid",
        &settings(&["--tls-cert-file", &cert, "--tls-private-key-file", &key]),
        cluster.kubeconfig(),
        workdir.path(),
    )
    .await;
    let mut invalid = invalid?;
    assert_ne!(invalid.wait(Duration::from_secs(20)).await?, Some(0));
    assert!(
        invalid
            .log()
            .contains("tls.crt holds no valid PEM certificate"),
        "{}",
        invalid.log()
    );
    Ok(())
}
