//! Three replicas running a plugin that writes without pause, faults
//! injected into whichever leads, and the API server's audit log as the
//! judge (see [`audit`](crate::audit)): shared by the fencing test and
//! `make chaos`.
//!
//! Each replica reaches the API server through an [`ApiProxy`] of its own,
//! so the network can be cut or made to deliver late for one replica only.
//! With fencing, the chart's own fencing policy is rendered with helm and
//! applied for this fleet's Lease.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use nix::sys::signal::Signal;
use serde_json::json;

use crate::audit::{self, Verdict};
use crate::fixtures::{apply_plugin, config_map, grant, plugin_namespace, rule, store_component};
use crate::{
    ApiProxy, Memory, ReplicaProcess, ReplicaSettings, TestCluster, eventually, kube_tools,
    plugin_component, unique_name,
};

/// The election Lease's name (the chart's for a release named `leasehold`).
pub const LEASE: &str = "leasehold";
/// How long a takeover, a restart or the first write may take on a busy
/// 2-core machine before the harness gives up (correctness, not speed).
const PATIENCE: Duration = Duration::from_secs(90);
/// How long the audit log may take to show a write the fleet made.
const AUDIT_PATIENCE: Duration = Duration::from_secs(30);
/// How often a writer writes unless its [`Setup`] says otherwise: often
/// enough that a fault meets a write in flight.
const WRITE_EVERY: Duration = Duration::from_millis(100);

/// A fault, injected into the current leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL, then a new process with the same identity.
    Kill,
    /// SIGTERM (drain and hand over), then a new process.
    Term,
    /// SIGSTOP until another replica leads, then SIGCONT.
    Stop,
    /// Nothing reaches the API server until another replica leads.
    Partition,
    /// Requests are held until another replica leads, then delivered.
    Delay,
}

impl Fault {
    pub const ALL: [Fault; 5] = [
        Fault::Kill,
        Fault::Term,
        Fault::Stop,
        Fault::Partition,
        Fault::Delay,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Term => "term",
            Fault::Stop => "stop",
            Fault::Partition => "partition",
            Fault::Delay => "delay",
        }
    }
}

/// What one injected fault did.
#[derive(Clone, Debug)]
pub struct Injected {
    pub fault: Fault,
    /// The leader the fault hit.
    pub deposed: String,
    /// Who leads after it.
    pub successor: String,
    /// From the fault to the Lease naming the successor.
    pub takeover: Duration,
}

#[derive(Debug)]
struct Member {
    identity: String,
    kubeconfig: PathBuf,
    proxy: ApiProxy,
    process: ReplicaProcess,
}

/// How a [`Fleet`] is made.
#[derive(Clone, Debug)]
pub struct Setup {
    /// `--fencing`, and the chart's fencing policy for the fleet's Leases.
    pub fencing: bool,
    pub replicas: usize,
    /// `--placement spread --shards <n>`; leader placement without.
    pub shards: Option<u32>,
    /// The writing plugins: each writes the Lease `<name>-written`.
    pub writers: Writers,
    /// How often each writer writes (and so reconciles).
    pub write_every: Duration,
}

/// Which writing plugins a fleet runs.
#[derive(Clone, Debug)]
pub enum Writers {
    Named(Vec<String>),
    /// One on each shard (names chosen once the namespace, which is part
    /// of a plugin's hash, is known).
    OnePerShard,
}

impl Setup {
    /// Three replicas in leader placement and one writer, `writer`.
    pub fn leader(fencing: bool) -> Self {
        Self {
            fencing,
            replicas: 3,
            shards: None,
            writers: Writers::Named(vec!["writer".to_owned()]),
            write_every: WRITE_EVERY,
        }
    }

    /// `replicas` replicas in spread placement over `shards` shards, with
    /// fencing and one writer on each shard.
    pub fn spread(replicas: usize, shards: u32) -> Self {
        Self {
            fencing: true,
            replicas,
            shards: Some(shards),
            writers: Writers::OnePerShard,
            write_every: WRITE_EVERY,
        }
    }
}

/// Plugin names in `namespace`, one hashed onto each of `shards` shards.
fn one_per_shard(namespace: &str, shards: u32) -> Vec<String> {
    let mut taken = vec![None; shards as usize];
    for k in 0.. {
        let name = format!("w{k}");
        let shard = leasehold::placement::shard_of(&format!("{namespace}/{name}"), shards);
        taken[shard as usize].get_or_insert(name);
        if taken.iter().all(Option::is_some) {
            break;
        }
    }
    taken.into_iter().flatten().collect()
}

/// Replicas with writing plugins.
#[derive(Debug)]
pub struct Fleet {
    pub namespace: String,
    pub fencing: bool,
    /// `--shards`, in spread placement.
    pub shards: Option<u32>,
    pub writers: Vec<String>,
    /// The plugin's ServiceAccount.
    account: String,
    cluster: &'static TestCluster,
    settings: ReplicaSettings,
    members: Vec<Member>,
    leases: Api<Lease>,
    workdir: tempfile::TempDir,
}

impl Fleet {
    /// Starts three replicas (with `--fencing` and the chart's fencing
    /// policy when `fencing`) and the writing plugin, and waits until the
    /// plugin's writes are committed (and, with fencing, refused when stale).
    pub async fn start(fencing: bool) -> anyhow::Result<Self> {
        Self::start_with(Setup::leader(fencing)).await
    }

    /// Starts the fleet `setup` describes and waits until every writer's
    /// writes are committed (and, with fencing, stale terms refused).
    pub async fn start_with(setup: Setup) -> anyhow::Result<Self> {
        let Setup {
            fencing,
            replicas,
            shards,
            writers,
            write_every,
        } = setup;
        let cluster = TestCluster::shared().await;
        let admin = cluster.client()?;
        let (namespace, account) =
            plugin_namespace(cluster, "fencing", &["get", "list", "watch"]).await?;
        let writers = match writers {
            Writers::Named(names) => names,
            Writers::OnePerShard => one_per_shard(
                &namespace,
                shards.context("one writer per shard needs shards")?,
            ),
        };
        grant(
            &admin,
            &namespace,
            &account,
            vec![rule(
                &["coordination.k8s.io"],
                &["leases"],
                &["get", "create", "update", "patch"],
            )],
        )
        .await?;
        let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &namespace);
        store_component(
            &config_maps,
            "fixture",
            std::fs::read(plugin_component("misbehaving"))?,
        )
        .await?;
        let plugins: Api<DynamicObject> =
            Api::namespaced_with(admin.clone(), &namespace, &plugin_resource());
        let every = write_every.as_millis().to_string();
        for writer in &writers {
            // Its own label value: the plugin watches cluster-wide, and
            // other writers live in the same control plane.
            let label = format!("{writer}.{namespace}");
            let spec = json!({
                "source": {"configMap": {"name": "fixture"}},
                "serviceAccountName": account,
                "config": {"selector": format!("leasehold.dev/misbehave={label}")},
                // Long enough that a held write's call is still waiting when
                // it is delivered (the point is a write that arrives late).
                "limits": {"minRequeueAfter": "100ms", "timeout": "60s"},
            });
            apply_plugin(&plugins, writer, spec).await?;
            config_maps
                .create(
                    &PostParams::default(),
                    &config_map(
                        writer,
                        &[("leasehold.dev/misbehave", label.as_str())],
                        &[("mode", "write"), ("every", every.as_str())],
                    ),
                )
                .await?;
        }
        if fencing {
            install_fencing_policy(cluster, &namespace).await?;
        }

        let mut settings = ReplicaSettings::fast(&namespace, LEASE);
        if fencing {
            settings.extra_args.push("--fencing".to_owned());
        }
        if let Some(shards) = shards {
            settings.extra_args.push("--placement=spread".to_owned());
            settings.extra_args.push(format!("--shards={shards}"));
        }
        let workdir = tempfile::Builder::new()
            .prefix("leasehold-fleet")
            .tempdir()?;
        let mut fleet = Self {
            namespace: namespace.clone(),
            fencing,
            shards,
            writers,
            account,
            cluster,
            settings,
            members: Vec::new(),
            leases: Api::namespaced(admin.clone(), &namespace),
            workdir,
        };
        for _ in 0..replicas {
            fleet.add_replica().await?;
        }
        for writer in &fleet.writers {
            fleet
                .writes_resume_of(writer)
                .await
                .with_context(|| fleet.logs())?;
        }
        if fencing {
            fleet.fencing_enforced().await?;
        }
        Ok(fleet)
    }

    /// Starts one more replica, `replica-<n>`; its identity.
    pub async fn add_replica(&mut self) -> anyhow::Result<String> {
        self.add_replica_with(&[]).await
    }

    /// Starts one more replica with `extra_args` besides the fleet's.
    pub async fn add_replica_with(&mut self, extra_args: &[&str]) -> anyhow::Result<String> {
        let mut settings = self.settings.clone();
        settings
            .extra_args
            .extend(extra_args.iter().map(|arg| (*arg).to_owned()));
        let identity = format!("replica-{}", self.members.len());
        let proxy = ApiProxy::start(self.cluster).await?;
        let kubeconfig = self.workdir.path().join(format!("{identity}.kubeconfig"));
        proxy.kubeconfig(self.cluster.kubeconfig(), &kubeconfig)?;
        let process =
            ReplicaProcess::start(&identity, &settings, &kubeconfig, self.workdir.path()).await?;
        self.members.push(Member {
            identity: identity.clone(),
            kubeconfig,
            proxy,
            process,
        });
        Ok(identity)
    }

    /// Who the Lease names.
    pub async fn holder(&self) -> anyhow::Result<Option<String>> {
        self.holder_of(LEASE).await
    }

    /// Who the Lease `name` names.
    pub async fn holder_of(&self, name: &str) -> anyhow::Result<Option<String>> {
        let lease = self.leases.get_opt(name).await?;
        Ok(lease
            .and_then(|lease| lease.spec?.holder_identity)
            .filter(|holder| !holder.is_empty()))
    }

    /// The shard Lease (spread placement) or the election Lease (leader
    /// placement) that the writer `writer` runs under.
    pub fn lease_of_writer(&self, writer: &str) -> String {
        match self.shards {
            Some(shards) => leasehold::placement::shard_lease_name(
                LEASE,
                leasehold::placement::shard_of(&format!("{}/{writer}", self.namespace), shards),
            ),
            None => LEASE.to_owned(),
        }
    }

    /// Who holds each writer's Lease (its shard's, in spread placement).
    pub async fn holders(&self) -> anyhow::Result<BTreeMap<String, Option<String>>> {
        let mut holders = BTreeMap::new();
        for writer in &self.writers {
            let holder = self.holder_of(&self.lease_of_writer(writer)).await?;
            holders.insert(writer.clone(), holder);
        }
        Ok(holders)
    }

    /// How many writers each replica leads, by the Leases.
    pub async fn shares(&self) -> anyhow::Result<BTreeMap<String, usize>> {
        let mut shares = BTreeMap::new();
        for holder in self.holders().await?.into_values().flatten() {
            *shares.entry(holder).or_default() += 1;
        }
        Ok(shares)
    }

    /// Each writer's `status.runningOn`, as `kubectl get plugins` shows it.
    pub async fn running_on(&self) -> anyhow::Result<BTreeMap<String, Option<String>>> {
        let mut running_on = BTreeMap::new();
        for writer in &self.writers {
            let plugin = self.plugins()?.get_opt(writer).await?;
            let on = plugin.and_then(|plugin| {
                plugin.data["status"]["runningOn"]
                    .as_str()
                    .map(str::to_owned)
            });
            running_on.insert(writer.clone(), on);
        }
        Ok(running_on)
    }

    /// The fleet's Plugin objects, as the admin.
    pub fn plugins(&self) -> anyhow::Result<Api<DynamicObject>> {
        Ok(Api::namespaced_with(
            self.cluster.client()?,
            &self.namespace,
            &plugin_resource(),
        ))
    }

    /// `GET /api/v1/replicas` from replica `identity`.
    pub async fn replica_view(&self, identity: &str) -> anyhow::Result<serde_json::Value> {
        self.member(identity)?
            .process
            .get_json("/api/v1/replicas")
            .await
    }

    /// `GET <path>` from replica `identity`: status and body.
    pub async fn replica_get(&self, identity: &str, path: &str) -> anyhow::Result<(u16, String)> {
        self.member(identity)?.process.get(path).await
    }

    /// Replica `identity`'s log so far.
    pub fn log_of(&self, identity: &str) -> anyhow::Result<String> {
        Ok(self.member(identity)?.process.log())
    }

    /// Every replica's identity, in the order they were started.
    pub fn identities(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|member| member.identity.clone())
            .collect()
    }

    /// The resident memory of replica `identity`.
    pub fn memory(&self, identity: &str) -> anyhow::Result<Memory> {
        self.member(identity)?.process.memory()
    }

    /// Sends `signal` to replica `identity`.
    pub fn signal(&self, identity: &str, signal: Signal) -> anyhow::Result<()> {
        self.member(identity)?.process.signal(signal)
    }

    /// Injects `fault` into the current leader, waits until another
    /// replica leads and the plugin writes again, then heals the fault (a
    /// killed or stopped process is restarted with the same identity).
    pub async fn inject(&mut self, fault: Fault) -> anyhow::Result<Injected> {
        let deposed = eventually(PATIENCE, "a replica to lead", || async {
            self.holder().await.ok().flatten()
        })
        .await?;
        let index = self.index_of(&deposed)?;
        let began = Instant::now();
        let member = &self.members[index];
        match fault {
            Fault::Kill => member.process.signal(Signal::SIGKILL)?,
            Fault::Term => member.process.signal(Signal::SIGTERM)?,
            Fault::Stop => member.process.signal(Signal::SIGSTOP)?,
            Fault::Partition => member.proxy.cut(),
            Fault::Delay => member.proxy.hold(),
        }
        let successor = eventually(PATIENCE, "another replica to lead", || async {
            self.holder()
                .await
                .ok()
                .flatten()
                .filter(|holder| *holder != deposed)
        })
        .await
        .with_context(|| self.logs())?;
        let takeover = began.elapsed();
        let member = &mut self.members[index];
        match fault {
            Fault::Kill | Fault::Term => {
                member.process.wait(PATIENCE).await?;
                member.process = ReplicaProcess::start(
                    &member.identity,
                    &self.settings,
                    &member.kubeconfig,
                    self.workdir.path(),
                )
                .await?;
            }
            Fault::Stop => member.process.signal(Signal::SIGCONT)?,
            Fault::Partition => member.proxy.restore(),
            Fault::Delay => member.proxy.deliver(),
        }
        self.writes_resume().await.with_context(|| self.logs())?;
        Ok(Injected {
            fault,
            deposed,
            successor,
            takeover,
        })
    }

    /// Changes what the writer does (its ConfigMap's `data`, merged).
    pub async fn set_writer(&self, data: &[(&str, &str)]) -> anyhow::Result<()> {
        let data: serde_json::Map<String, serde_json::Value> = data
            .iter()
            .map(|(key, value)| ((*key).to_owned(), json!(value)))
            .collect();
        Api::<ConfigMap>::namespaced(self.cluster.client()?, &self.namespace)
            .patch(
                "writer",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({ "data": data })),
            )
            .await?;
        Ok(())
    }

    /// When the plugin last wrote (its Lease's annotation), if it has.
    pub async fn last_written(&self) -> anyhow::Result<Option<String>> {
        self.last_written_by("writer").await
    }

    /// When the writer `writer` last wrote, if it has.
    pub async fn last_written_by(&self, writer: &str) -> anyhow::Result<Option<String>> {
        self.written_annotation(writer, "leasehold.dev/written-at")
            .await
    }

    /// What the plugin's last write said it was doing: `sleeping` (a slow
    /// reconcile has begun) or `written`.
    pub async fn last_phase(&self) -> anyhow::Result<Option<String>> {
        self.written_annotation("writer", "leasehold.dev/phase")
            .await
    }

    async fn written_annotation(&self, writer: &str, key: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .leases
            .get_opt(&format!("{writer}-written"))
            .await?
            .and_then(|written| written.metadata.annotations?.remove(key)))
    }

    /// Stops (SIGTERM) every replica but the leader and waits for them to
    /// exit; returns the leader.
    pub async fn leave_the_leader_alone(&mut self) -> anyhow::Result<String> {
        let leader = self.holder().await?.context("nobody leads")?;
        for member in &mut self.members {
            if member.identity != leader {
                member.process.signal(Signal::SIGTERM)?;
                member.process.wait(PATIENCE).await?;
            }
        }
        Ok(leader)
    }

    /// Sends `signal` to the replica the Lease names; returns its identity.
    pub async fn signal_leader(&self, signal: Signal) -> anyhow::Result<String> {
        let leader = self.holder().await?.context("nobody leads")?;
        self.member(&leader)?.process.signal(signal)?;
        Ok(leader)
    }

    /// Waits for the process of replica `identity` to exit; its exit code.
    pub async fn exited(&mut self, identity: &str) -> anyhow::Result<Option<i32>> {
        let index = self.index_of(identity)?;
        self.members[index].process.wait(PATIENCE).await
    }

    fn member(&self, identity: &str) -> anyhow::Result<&Member> {
        Ok(&self.members[self.index_of(identity)?])
    }

    fn index_of(&self, identity: &str) -> anyhow::Result<usize> {
        self.members
            .iter()
            .position(|member| member.identity == identity)
            .with_context(|| format!("{identity} is not one of the fleet"))
    }

    /// Waits until the plugin's Lease changes twice: someone leads and
    /// its plugin is writing.
    pub async fn writes_resume(&self) -> anyhow::Result<()> {
        self.writes_resume_of("writer").await
    }

    /// Waits until the Lease of writer `writer` changes twice.
    pub async fn writes_resume_of(&self, writer: &str) -> anyhow::Result<()> {
        let seen = std::sync::Mutex::new(Vec::new());
        let seen = &seen;
        let what = format!("{writer} to write again");
        eventually(PATIENCE, &what, || async move {
            let at = self.last_written_by(writer).await.ok().flatten()?;
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.last() != Some(&at) {
                seen.push(at);
            }
            (seen.len() >= 3).then_some(())
        })
        .await
    }

    /// What the audit log says of this fleet's plugin writes so far, each
    /// judged against the Lease its writer runs under.
    pub fn judge(&self) -> anyhow::Result<Verdict> {
        let log = std::fs::read_to_string(self.cluster.audit_log())
            .context("reading the API server's audit log")?;
        let mut leases: Vec<String> = self
            .writers
            .iter()
            .map(|writer| self.lease_of_writer(writer))
            .collect();
        leases.push(LEASE.to_owned());
        Ok(audit::judge_by(&log, &self.namespace, &leases, |object| {
            let writer = object.strip_suffix("-written").unwrap_or(object);
            self.lease_of_writer(writer)
        }))
    }

    /// Waits until the audit log's verdict satisfies `check`; returns it.
    pub async fn judged(
        &self,
        what: &str,
        check: impl Fn(&Verdict) -> bool,
    ) -> anyhow::Result<Verdict> {
        eventually(AUDIT_PATIENCE, what, || async {
            let verdict = self.judge().ok()?;
            check(&verdict).then_some(verdict)
        })
        .await
    }

    /// Every replica's log, for a failure's context.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|member| {
                let log = member.process.log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {} ---\n{}", member.identity, tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until the API server refuses a plugin write of a term that is
    /// not the Lease's (the policy is loaded and bound to this Lease).
    async fn fencing_enforced(&self) -> anyhow::Result<()> {
        let probe = Api::<Lease>::namespaced(self.probe_client()?, &self.namespace);
        let params = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        eventually(
            PATIENCE,
            "the fencing policy to refuse stale terms",
            || async {
                let mut object = Lease::default();
                object.metadata.name = Some(unique_name("probe"));
                match probe.create(&params, &object).await {
                    Err(kube::Error::Api(status))
                        if status.message.contains("stale leadership term") =>
                    {
                        Some(())
                    }
                    _ => None,
                }
            },
        )
        .await
    }

    /// The admin as the plugin's account, with a term nobody holds.
    fn probe_client(&self) -> anyhow::Result<kube::Client> {
        let mut config = self.cluster.config().clone();
        config.auth_info.impersonate = Some(format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.account
        ));
        config.headers.push((
            http::HeaderName::from_static("impersonate-extra-leasehold.dev%2fterm"),
            http::HeaderValue::from_str(&format!("{}/{LEASE}/nobody/0", self.namespace))?,
        ));
        Ok(kube::Client::try_from(config)?)
    }
}

fn plugin_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "leasehold.dev",
        "v1alpha1",
        "Plugin",
    ))
}

/// Renders the chart's fencing policy for a release in `namespace` (its
/// binding names this fleet's Lease) and applies it.
async fn install_fencing_policy(cluster: &TestCluster, namespace: &str) -> anyhow::Result<()> {
    let chart = crate::repo_root().join("charts/leasehold");
    let rendered = tokio::process::Command::new(&kube_tools().helm)
        .arg("template")
        .arg(LEASE)
        .arg(&chart)
        .args(["--namespace", namespace])
        .args(["--show-only", "templates/fencing.yaml"])
        .args(["--set", "fencing.enabled=true"])
        .output()
        .await?;
    ensure!(
        rendered.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let mut apply = tokio::process::Command::new(&kube_tools().kubectl)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(["apply", "--server-side", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = apply.stdin.take().context("kubectl's stdin is piped")?;
        stdin.write_all(&rendered.stdout).await?;
    }
    let applied = apply.wait_with_output().await?;
    ensure!(
        applied.status.success(),
        "kubectl apply of the fencing policy failed: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    Ok(())
}
