//! One Leasehold replica: what `leasehold run` starts.
//!
//! Every replica serves the API and announces itself in the replica
//! directory; the elected one also runs the leader-only roles. Shutdown has
//! one order: stop leader-only work, release the Lease, drain the API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::admission::{self, Reviews, WebhookConfigs};
use crate::api::{self, AppState};
use crate::controllers::Controllers;
use crate::election::activity::{self, ActivityLog};
use crate::election::directory::Directory;
use crate::election::roles::LeaderRoles;
use crate::election::{self, Elector, LeaseClient, Status};
use crate::metrics::Metrics;
use crate::placement::{self, Placement, Spread};
use crate::plugins::{
    self, AccountPolicy, Catalog, Fetcher, LoadedPlugin, PluginWatcher, ServiceAccount,
};
use crate::runtime::{self, Compiler, Runtime};

/// Options of `leasehold run`.
#[derive(Clone, Debug, clap::Args)]
#[group(id = "run-options")]
pub struct Options {
    #[command(flatten)]
    pub election: election::Options,

    #[command(flatten)]
    pub api: api::Options,

    #[command(flatten)]
    pub plugins: plugins::Options,

    #[command(flatten)]
    pub placement: placement::Options,

    #[command(flatten)]
    pub admission: admission::Options,

    /// Append `<term> <unix-micros>` to this file each time leader-only work
    /// acts (a diagnostic for failover tests and benchmarks).
    #[arg(long, env = "LEASEHOLD_ACTIVITY_LOG")]
    pub activity_log: Option<PathBuf>,

    /// Set by the Helm chart from the downward API; the default identity.
    #[arg(long, env = "POD_NAME", hide = true)]
    pub pod_name: Option<String>,
}

/// Validated settings of a replica.
#[derive(Clone, Debug)]
pub struct Config {
    pub election: election::Config,
    pub listen: SocketAddr,
    /// Serve the API over HTTPS with these files.
    pub tls: Option<api::Https>,
    pub activity_log: Option<PathBuf>,
    pub plugins: plugins::Options,
    pub placement: Placement,
    /// Where the webhook configurations point, if anywhere.
    pub admission_endpoint: Option<admission::Endpoint>,
    /// The CA bundle written into them (read at start).
    pub admission_ca_file: Option<PathBuf>,
}

/// Why a replica could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or environment was invalid.
    #[error("invalid election settings")]
    Election(#[from] election::ConfigError),
    /// Neither in-cluster configuration nor a kubeconfig could be loaded.
    #[error("failed to load Kubernetes client configuration (in-cluster or $KUBECONFIG)")]
    KubeConfig(#[source] kube::config::InferConfigError),
    /// The Kubernetes client could not be built from its configuration.
    #[error("failed to build the Kubernetes client")]
    Client(#[source] kube::Error),
    /// The Lease client could not be built.
    #[error("failed to build the lease client")]
    Lease(#[source] election::LeaseError),
    /// The API address is taken or invalid.
    #[error("failed to listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The admission options were unusable.
    #[error("invalid admission settings")]
    Admission(#[from] admission::OptionsError),
    /// The API's certificate or key could not be loaded.
    #[error("failed to load the API's TLS certificate")]
    Tls(#[source] api::TlsError),
    /// The certificate the replicas issue could not be settled in its Secret.
    #[error("failed to settle the API's TLS certificate")]
    Issue(#[source] api::IssueError),
    /// `--tls-secret` was given nothing to certify.
    #[error(
        "--tls-secret needs a name to certify: give --admission-service, --admission-url or --tls-san"
    )]
    NothingToCertify,
    /// The API server stopped on its own.
    #[error("the API server stopped unexpectedly")]
    ApiServerDied(#[source] Option<std::io::Error>),
    /// The wasm runtime could not start.
    #[error("failed to start the wasm runtime")]
    Runtime(#[source] runtime::Error),
    /// A plugin could not be loaded.
    #[error("failed to load plugins")]
    Plugins(#[source] plugins::Error),
    /// The election task stopped while the replica was not shutting down.
    #[error("the election task stopped unexpectedly")]
    ElectionDied(#[source] Option<tokio::task::JoinError>),
}

impl Options {
    pub fn into_config(self) -> Result<Config, Error> {
        let election = self.election.into_config(self.pod_name, &hostname())?;
        let mut tls = self.api.tls();
        let admission_endpoint = self.admission.endpoint(tls.is_some())?;
        if let Some(api::Https {
            certificate: api::Certificate::Issued(issuing),
            ..
        }) = &mut tls
        {
            for name in admission_endpoint
                .iter()
                .flat_map(admission::Endpoint::names)
            {
                if !issuing.names.contains(&name) {
                    issuing.names.push(name);
                }
            }
            if issuing.names.is_empty() {
                return Err(Error::NothingToCertify);
            }
        }
        Ok(Config {
            election,
            listen: self.api.listen,
            admission_endpoint,
            admission_ca_file: self.admission.admission_ca_file,
            tls,
            activity_log: self.activity_log,
            plugins: self.plugins,
            placement: self.placement.placement(),
        })
    }
}

/// How long a replica waits for the plugins it knows at start to compile
/// before it reports ready and campaigns anyway: a catalogue that cannot
/// finish (the Plugin CRD missing, a watch that keeps failing) must not keep
/// every replica from leading. Fetches have deadlines of their own, so this
/// is only the backstop.
const PREPARE_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Sets `prepared` once every plugin in `catalog` is past fetching and
/// compiling (or after [`PREPARE_LIMIT`]). It stays set: a plugin added
/// later does not make a serving replica unready.
async fn wait_until_prepared(mut catalog: watch::Receiver<Catalog>, prepared: watch::Sender<bool>) {
    let waited = tokio::time::timeout(PREPARE_LIMIT, async {
        // Err: the catalogue's sender is gone, so it will never change.
        let _ = catalog.wait_for(Catalog::is_prepared).await;
    })
    .await;
    match waited {
        Ok(_) => info!("plugins compiled; ready to serve and to lead"),
        Err(_) => warn!(
            preparing = ?catalog.borrow().preparing(),
            limit = ?PREPARE_LIMIT,
            "plugins still being prepared; ready anyway"
        ),
    }
    prepared.send_replace(true);
}

/// `leasehold/<version> (<identity>)`: the API server's audit log and
/// metrics then say which replica made each request (every client of the
/// process derives from this configuration, impersonating ones included).
fn user_agent(identity: &str) -> http::HeaderValue {
    let agent = format!("leasehold/{} ({identity})", env!("CARGO_PKG_VERSION"));
    // An identity is a Kubernetes name or a hostname; anything else falls
    // back to the bare product name rather than failing the start.
    http::HeaderValue::from_str(&agent)
        .unwrap_or_else(|_| http::HeaderValue::from_static("leasehold"))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "leasehold".to_owned())
}

/// A connected replica, ready to run.
pub struct Replica {
    config: Config,
    kube_config: kube::Config,
    client: kube::Client,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The certificate files to serve again when they change.
    renewal: Option<api::Renewal>,
    admission_ca_bundle: Option<Vec<u8>>,
    // Holds the runtime, kept alive for the compiled plugins (its epoch
    // ticker bounds them); the catalogue and the API compile through it.
    compiler: Compiler,
    /// Plugins given as manifests, compiled.
    manifests: Vec<LoadedPlugin>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("config", &self.config)
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// Loads the Kubernetes configuration, compiles every plugin (every
    /// replica does, so a takeover never waits for a compiler) and binds the
    /// API address.
    pub async fn new(config: Config) -> Result<Self, Error> {
        let runtime = Runtime::with_profiler(
            config.plugins.compile_cache.clone(),
            config.plugins.profiler(),
        );
        let runtime = Arc::new(runtime.map_err(Error::Runtime)?);
        let compiler = Compiler::new(runtime);
        let paths = config.plugins.manifest_paths().map_err(Error::Plugins)?;
        let manifests = plugins::load_all(&compiler, &paths)
            .await
            .map_err(Error::Plugins)?;
        let mut kube_config = kube::Config::infer().await.map_err(Error::KubeConfig)?;
        kube_config.headers.push((
            http::header::USER_AGENT,
            user_agent(&config.election.identity),
        ));
        let client = kube::Client::try_from(kube_config.clone()).map_err(Error::Client)?;
        let mut admission_ca_bundle = config
            .admission_ca_file
            .as_deref()
            .map(admission::read_ca_bundle)
            .transpose()?;
        // Served files, read again while the replica runs.
        let mut renewal = None;
        let tls = match &config.tls {
            None => None,
            Some(api::Https {
                certificate: api::Certificate::Files { cert, key },
                http2,
            }) => {
                let (config, serving) =
                    api::Renewal::load(cert, key, *http2).map_err(Error::Tls)?;
                renewal = Some(serving);
                Some(config)
            }
            Some(api::Https {
                certificate: api::Certificate::Issued(issuing),
                http2,
            }) => {
                let issued = api::settle_certificate_patiently(client.clone(), issuing)
                    .await
                    .map_err(Error::Issue)?;
                // Clap keeps --admission-ca-file out: the CA is the Secret's.
                admission_ca_bundle = Some(issued.ca.clone().into_bytes());
                let secret = format!("{}/{}", issuing.namespace, issuing.name);
                Some(api::serve_issued(&issued, &secret, *http2).map_err(Error::Tls)?)
            }
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Listen {
                addr: config.listen,
                source,
            })?;
        Ok(Self {
            config,
            kube_config,
            client,
            listener,
            tls,
            renewal,
            admission_ca_bundle,
            compiler,
            manifests,
        })
    }

    /// Runs until SIGTERM or Ctrl-C, then shuts down in order.
    pub async fn run(self) -> Result<(), Error> {
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        self.run_until(shutdown).await
    }

    /// Runs until `shutdown` is cancelled, then shuts down in order.
    pub async fn run_until(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Self {
            config,
            kube_config,
            client,
            listener,
            tls,
            renewal,
            admission_ca_bundle,
            compiler,
            manifests,
        } = self;
        let election_config = config.election;
        let leases = LeaseClient::dedicated(
            kube_config.clone(),
            &election_config.namespace,
            &election_config.lease_name,
            election_config.request_timeout(),
        )
        .map_err(Error::Lease)?;
        let (status_tx, status) = watch::channel(Status::default());
        let metrics = Arc::new(Metrics::new());
        metrics.fencing.set(i64::from(election_config.fencing));
        let directory = Directory::new(
            client.clone(),
            &election_config,
            config.placement.announced(),
        );

        let api_stop = CancellationToken::new();
        let (prepared_tx, prepared) = watch::channel(false);
        // Every replica keeps the catalog (fetched, compiled); the leader
        // runs it, and every replica answers its admission reviews.
        let (catalog_tx, catalog) = watch::channel(Catalog::of_manifests(&manifests));
        let state = AppState {
            election: Arc::new(election_config.clone()),
            status,
            metrics: metrics.clone(),
            directory: directory.clone(),
            auth: api::Authenticator::new(client.clone()),
            client: client.clone(),
            kube_config: Arc::new(kube_config.clone()),
            validator: api::Validator::new(compiler.clone()),
            prepared: prepared.clone(),
            reviews: Arc::new(Reviews::new(
                catalog.clone(),
                compiler.runtime().clone(),
                kube_config.clone(),
                election_config.identity.clone(),
                metrics.admission.clone(),
            )),
        };
        let tls = tls.map(api::RustlsConfig::from_config);
        if let (Some(serving), Some(renewal)) = (&tls, renewal) {
            tokio::spawn(renewal.run(serving.clone(), api::RENEWAL_CHECK, api_stop.clone()));
        }
        let mut api = tokio::spawn(api::serve(
            listener,
            tls,
            api::router(state),
            api_stop.clone(),
        ));
        let announce = tokio::spawn(directory.clone().announce(shutdown.clone()));

        let watch_plugins = config.plugins.watch_plugins;
        tokio::spawn(wait_until_prepared(catalog.clone(), prepared_tx));
        let mut roles = LeaderRoles::new();
        match config.admission_endpoint {
            Some(endpoint) => {
                let (ca_bundle_tx, ca_bundle) = watch::channel(admission_ca_bundle);
                if let Some(path) = &config.admission_ca_file {
                    tokio::spawn(admission::follow_ca_bundle(
                        path.clone(),
                        ca_bundle_tx,
                        api::RENEWAL_CHECK,
                        shutdown.clone(),
                    ));
                }
                roles = roles.with(WebhookConfigs::new(
                    catalog.clone(),
                    kube_config.clone(),
                    endpoint,
                    ca_bundle,
                    format!(
                        "{}/{}",
                        election_config.namespace, election_config.lease_name
                    ),
                ));
            }
            None => info!(
                "no --admission-url or --admission-service: Plugins' admission webhooks are served but no webhook configuration points at them"
            ),
        }
        let runs_plugins = watch_plugins || !manifests.is_empty();
        let own_account = if runs_plugins {
            own_account(&client).await
        } else {
            None
        };
        let mut spread = None;
        if runs_plugins {
            let controllers = Controllers::new(
                catalog.clone(),
                client.clone(),
                kube_config.clone(),
                election_config.identity.clone(),
                metrics.plugins.clone(),
                election_config.fencing,
                own_account.clone(),
            );
            match config.placement {
                Placement::Leader => {
                    let (agreed_tx, agreed) = watch::channel(false);
                    tokio::spawn(placement::agreement::watch_leader_agreement(
                        leases.clone(),
                        election_config.clone(),
                        agreed_tx,
                        shutdown.clone(),
                    ));
                    roles = roles.with(controllers.gated_by(agreed));
                }
                Placement::Spread { shards } => {
                    let spread_placement = Spread::new(
                        election_config.clone(),
                        shards,
                        leases.clone(),
                        catalog,
                        controllers,
                        prepared.clone(),
                        metrics.election.clone(),
                        metrics.shards_led.clone(),
                    );
                    spread = Some(tokio::spawn(spread_placement.run(shutdown.clone())));
                }
            }
        }
        let accounts = AccountPolicy::new(config.plugins.denied_accounts.clone(), own_account);
        let plugin_watcher = watch_plugins.then(|| {
            let fetcher = Fetcher::new(
                client.clone(),
                kube_config,
                config.plugins.plugin_root.clone(),
                config.plugins.max_component_size,
            );
            let watcher = PluginWatcher::new(
                client.clone(),
                config.plugins.plugin_namespace.as_deref(),
                compiler,
                fetcher,
                accounts,
                catalog_tx,
            );
            tokio::spawn(watcher.run(shutdown.clone()))
        });
        if let Some(path) = config.activity_log {
            roles = roles.with(ActivityLog::new(path, activity::DEFAULT_PERIOD));
        }
        info!(
            identity = %election_config.identity,
            lease = %election_config.lease_name,
            listen = %config.listen,
            placement = %config.placement,
            "replica started"
        );
        let elector = Elector::new(election_config, leases, status_tx, metrics.election.clone())
            .ready_when(prepared);
        let mut election = tokio::spawn(elector.run(roles, shutdown.clone()));

        tokio::select! {
            result = &mut election => {
                // The elector returns only after shutdown, having stopped the
                // leader-only work and released the Lease.
                if !shutdown.is_cancelled() {
                    error!("election task stopped unexpectedly; exiting");
                    api_stop.cancel();
                    return Err(Error::ElectionDied(result.err()));
                }
            }
            result = &mut api => {
                error!("API server stopped unexpectedly; exiting");
                shutdown.cancel();
                let _ = election.await;
                return Err(Error::ApiServerDied(result.ok().and_then(Result::err)));
            }
        }
        if let Some(spread) = spread {
            let _ = spread.await;
        }
        // Only now, with every plugin stopped, does the replica leave the
        // directory: the others see it until it runs nothing.
        let _ = announce.await;
        directory.leave().await;
        if let Some(plugin_watcher) = plugin_watcher {
            let _ = plugin_watcher.await;
        }
        api_stop.cancel();
        let _ = api.await;
        info!("replica stopped");
        Ok(())
    }
}

/// The first SIGTERM or Ctrl-C starts an orderly shutdown; a second one
/// exits at once.
async fn watch_signals(shutdown: CancellationToken) {
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        warn!("cannot listen for SIGTERM; only Ctrl-C stops this replica");
        let _ = tokio::signal::ctrl_c().await;
        shutdown.cancel();
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    info!(
        "shutting down: stopping leader-only work, then releasing the lease (signal again to exit at once)"
    );
    shutdown.cancel();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    warn!("second signal: exiting without an orderly shutdown");
    std::process::exit(130);
}

/// The ServiceAccount this replica runs as, asked of the API server (a
/// SelfSubjectReview), so Plugins naming it are refused. `None` when it runs
/// as something else (a user's kubeconfig) or cannot tell.
async fn own_account(client: &kube::Client) -> Option<ServiceAccount> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let reviews: kube::Api<SelfSubjectReview> = kube::Api::all(client.clone());
    match reviews
        .create(&Default::default(), &SelfSubjectReview::default())
        .await
    {
        Ok(review) => {
            let username = review.status?.user_info?.username?;
            AccountPolicy::account_of(&username)
        }
        Err(error) => {
            warn!(%error, "cannot ask the API server who this replica is; only --deny-service-account guards the host's own account, and statuses are fenced by the clock alone");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_the_replica_in_their_user_agent() {
        let agent = user_agent("leasehold-6c9f7d8b5-x7k2q");
        assert_eq!(
            agent.to_str().unwrap(),
            format!(
                "leasehold/{} (leasehold-6c9f7d8b5-x7k2q)",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert_eq!(user_agent("bad\nidentity"), "leasehold");
    }
}
