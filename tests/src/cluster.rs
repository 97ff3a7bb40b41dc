//! The shared control plane and per-test namespaces and identities.

use std::path::{Path, PathBuf};

use anyhow::Context;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use tokio::sync::OnceCell;

use crate::unique_name;

/// A running kube-apiserver with etcd, reached as cluster-admin through a
/// client certificate. RBAC is on for every other identity.
#[derive(Debug)]
pub struct TestCluster {
    kubeconfig: PathBuf,
    config: kube::Config,
}

static SHARED: OnceCell<TestCluster> = OnceCell::const_new();

impl TestCluster {
    /// The control plane of this test run: started if absent, reused if up.
    ///
    /// Clients are built per call ([`client`](Self::client)) because each
    /// `#[tokio::test]` has its own runtime and a client's connections
    /// belong to the runtime that made them.
    pub async fn shared() -> &'static TestCluster {
        SHARED
            .get_or_try_init(Self::start)
            .await
            .unwrap_or_else(|error| panic!("cannot start the test control plane: {error:#}"))
    }

    async fn start() -> anyhow::Result<TestCluster> {
        let kubeconfig = PathBuf::from(crate::tool_up("cluster.sh").await?);
        let config = kube::Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&kubeconfig)?,
            &KubeConfigOptions::default(),
        )
        .await?;
        Ok(TestCluster { kubeconfig, config })
    }

    /// The admin kubeconfig, for processes the tests start.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The control plane's certificates and keys (`ca.crt`, `admin.crt`,
    /// `admin.key`), in its state directory beside the kubeconfig.
    pub fn pki(&self) -> PathBuf {
        self.state_dir().join("pki")
    }

    /// The API server's audit log (`tools/cluster.sh` says what it records).
    pub fn audit_log(&self) -> PathBuf {
        self.state_dir().join("audit.log")
    }

    fn state_dir(&self) -> &Path {
        self.kubeconfig.parent().unwrap_or(Path::new("."))
    }

    /// The admin client configuration.
    pub fn config(&self) -> &kube::Config {
        &self.config
    }

    /// A new cluster-admin client.
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::try_from(self.config.clone())?)
    }

    /// The API server's own `/metrics` (Prometheus text), read as the
    /// admin: `apiserver_request_total` counts every request it served, by
    /// verb and resource.
    pub async fn apiserver_metrics(&self) -> anyhow::Result<String> {
        let request = http::Request::get("/metrics").body(Vec::new())?;
        Ok(self.client()?.request_text(request).await?)
    }

    /// A fresh namespace named `<prefix>-<unique>`. It is left behind: with
    /// no controller-manager, a deleted namespace would stay Terminating.
    pub async fn namespace(&self, prefix: &str) -> anyhow::Result<String> {
        let name = unique_name(prefix);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(self.client()?)
            .create(&PostParams::default(), &namespace)
            .await?;
        Ok(name)
    }

    /// Creates a ServiceAccount and returns a client that authenticates as
    /// it (a bound token from the TokenRequest API), with no RBAC granted.
    pub async fn service_account_client(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Client> {
        let token = self.service_account_token(namespace, name).await?;
        Ok(Client::try_from(self.token_config(&token))?)
    }

    /// Creates a ServiceAccount (if missing) and returns a bearer token for it.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<String> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client()?, namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match accounts.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let issued = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await?;
        issued
            .status
            .map(|status| status.token)
            .context("token request returned no token")
    }

    /// A client configuration that authenticates with `token` only.
    pub fn token_config(&self, token: &str) -> kube::Config {
        let mut config = kube::Config::new(self.config.cluster_url.clone());
        config.root_cert = self.config.root_cert.clone();
        config.auth_info.token = Some(token.to_owned().into());
        config
    }
}
