//! Three `leasehold run` processes on loopback, against the real API server:
//! exactly one leads, leadership survives crashes, handovers, partitions and
//! pauses, and no two replicas ever do leader-only work at the same time.
//!
//! Timing bounds here are deliberately loose (correctness, not speed); the
//! speed of failover is measured by `make bench-failover`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use leasehold_tests::{
    ReplicaProcess, ReplicaSettings, TcpProxy, TestCluster, eventually, kubeconfig_via, now_micros,
    overlapping,
};
use nix::sys::signal::Signal;
use tokio_util::task::AbortOnDropHandle;

/// Failover tests share two cores; running them one at a time keeps their
/// timings meaningful on a busy machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Slack for scheduling delays when checking an instant against a deadline.
const SCHEDULING_SLACK: Duration = Duration::from_millis(250);

struct Group {
    replicas: Vec<ReplicaProcess>,
    settings: ReplicaSettings,
    proxies: Vec<TcpProxy>,
    prober: Prober,
    _workdir: tempfile::TempDir,
}

impl Group {
    /// Starts `count` replicas; with `proxied`, each reaches the API server
    /// through a proxy of its own that the test can cut.
    async fn start(count: usize, proxied: bool) -> anyhow::Result<Self> {
        let cluster = TestCluster::shared().await;
        let namespace = cluster.namespace("election").await?;
        let settings = ReplicaSettings::fast(&namespace, "leasehold");
        let workdir = tempfile::Builder::new()
            .prefix("leasehold-election")
            .tempdir()?;
        let upstream: std::net::SocketAddr = cluster
            .config()
            .cluster_url
            .authority()
            .context("cluster url has an authority")?
            .as_str()
            .parse()?;
        let mut replicas = Vec::new();
        let mut proxies = Vec::new();
        for index in 0..count {
            let identity = format!("replica-{index}");
            let kubeconfig = if proxied {
                let proxy = TcpProxy::start(upstream).await?;
                let path = workdir.path().join(format!("{identity}.kubeconfig"));
                kubeconfig_via(cluster.kubeconfig(), proxy.address(), None, &path)?;
                proxies.push(proxy);
                path
            } else {
                cluster.kubeconfig().to_owned()
            };
            replicas.push(
                ReplicaProcess::start(&identity, &settings, &kubeconfig, workdir.path()).await?,
            );
        }
        let prober = Prober::start(&replicas);
        Ok(Self {
            replicas,
            settings,
            proxies,
            prober,
            _workdir: workdir,
        })
    }

    /// Waits until every replica in `among` agrees on one leader from
    /// `among`, and that leader says it leads. Returns its index.
    async fn agreed_leader(&self, among: &[usize]) -> anyhow::Result<usize> {
        eventually(Duration::from_secs(20), "one agreed leader", || async {
            let mut holders = BTreeSet::new();
            let mut leaders = Vec::new();
            for &index in among {
                let view = self.replicas[index].get_json("/api/v1/leader").await.ok()?;
                holders.insert(view["holder"].as_str()?.to_owned());
                if view["role"] == "leader" {
                    leaders.push(index);
                }
            }
            let [leader] = leaders[..] else { return None };
            (holders.len() == 1 && holders.contains(&self.replicas[leader].identity))
                .then_some(leader)
        })
        .await
        .with_context(|| self.logs())
    }

    fn others(&self, excluded: usize) -> Vec<usize> {
        (0..self.replicas.len())
            .filter(|i| *i != excluded)
            .collect()
    }

    /// No two replicas ever did leader-only work at the same time.
    fn assert_no_overlapping_leadership(&self) {
        let intervals: Vec<_> = self
            .replicas
            .iter()
            .flat_map(ReplicaProcess::activity)
            .collect();
        assert!(!intervals.is_empty(), "no leader-only activity recorded");
        if let Some((a, b)) = overlapping(&intervals) {
            panic!("two replicas led at once: {a:?} and {b:?}\n{}", self.logs());
        }
    }

    /// Every replica that was meant to be up answered its API throughout.
    fn assert_api_always_answered(&self) {
        let failures = self.prober.failures();
        assert!(failures.is_empty(), "API probes failed: {failures:?}");
    }

    fn last_action_of(&self, index: usize) -> u64 {
        self.replicas[index]
            .activity()
            .last()
            .map(|interval| interval.end_micros)
            .unwrap_or_default()
    }

    fn logs(&self) -> String {
        self.replicas
            .iter()
            .map(|r| format!("--- {} ---\n{}", r.identity, r.log()))
            .collect()
    }
}

/// Polls every replica's `/readyz` every 100 ms and records failures, except
/// for replicas the test has taken down on purpose.
struct Prober {
    excluded: Arc<Mutex<BTreeSet<usize>>>,
    failures: Arc<Mutex<Vec<String>>>,
    _task: AbortOnDropHandle<()>,
}

impl Prober {
    fn start(replicas: &[ReplicaProcess]) -> Self {
        let targets: Vec<_> = replicas
            .iter()
            .map(|r| (r.identity.clone(), r.api))
            .collect();
        let excluded = Arc::new(Mutex::new(BTreeSet::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (excluded, failures) = (excluded.clone(), failures.clone());
            async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(2))
                    .build()
                    .expect("http client");
                // Replicas need a moment to bind and connect.
                tokio::time::sleep(Duration::from_secs(2)).await;
                loop {
                    for (index, (identity, api)) in targets.iter().enumerate() {
                        if excluded.lock().unwrap().contains(&index) {
                            continue;
                        }
                        let answer = http.get(format!("http://{api}/readyz")).send().await;
                        let ok = answer.as_ref().is_ok_and(|r| r.status().is_success());
                        if !ok && !excluded.lock().unwrap().contains(&index) {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{identity}: {answer:?}"));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Self {
            excluded,
            failures,
            _task: AbortOnDropHandle::new(task),
        }
    }

    fn exclude(&self, index: usize) {
        self.excluded.lock().unwrap().insert(index);
    }

    fn include(&self, index: usize) {
        self.excluded.lock().unwrap().remove(&index);
    }

    fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn exactly_one_of_three_replicas_leads_and_all_of_them_say_so() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let group = Group::start(3, false).await?;
    let leader = group.agreed_leader(&[0, 1, 2]).await?;
    // Stable: still exactly one leader a few renewals later.
    tokio::time::sleep(group.settings.retry_period * 3).await;
    assert_eq!(group.agreed_leader(&[0, 1, 2]).await?, leader);

    let listed = eventually(Duration::from_secs(10), "three replicas listed", || async {
        let view = group.replicas[group.others(leader)[0]]
            .get_json("/api/v1/replicas")
            .await
            .ok()?;
        let replicas = view["replicas"].as_array()?.clone();
        (replicas.len() == 3).then_some(replicas)
    })
    .await?;
    let leaders: Vec<_> = listed.iter().filter(|r| r["role"] == "leader").collect();
    assert_eq!(leaders.len(), 1);
    assert_eq!(
        leaders[0]["identity"],
        group.replicas[leader].identity.as_str()
    );

    let mut is_leader = Vec::new();
    for replica in &group.replicas {
        let (_, metrics) = replica.get("/metrics").await?;
        is_leader.push(
            metrics
                .lines()
                .any(|line| line == "leasehold_leader_is_leader 1"),
        );
    }
    assert_eq!(
        is_leader.iter().filter(|leading| **leading).count(),
        1,
        "{is_leader:?}"
    );
    group.assert_no_overlapping_leadership();
    group.assert_api_always_answered();
    Ok(())
}

#[tokio::test]
async fn killed_leader_is_replaced_within_the_lease_duration() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let group = Group::start(3, false).await?;
    let leader = group.agreed_leader(&[0, 1, 2]).await?;
    group.prober.exclude(leader);
    let killed_at = now_micros();
    group.replicas[leader].signal(Signal::SIGKILL)?;

    let successor = group.agreed_leader(&group.others(leader)).await?;
    let first_action = eventually(
        Duration::from_secs(10),
        "the successor's first action",
        || async { group.replicas[successor].first_action_after(killed_at) },
    )
    .await?;
    let takeover = Duration::from_micros(first_action - killed_at);
    let bound = group.settings.lease_duration + Duration::from_secs(2);
    ensure!(
        takeover <= bound,
        "takeover took {takeover:?}, more than {bound:?}\n{}",
        group.logs()
    );
    group.assert_no_overlapping_leadership();
    group.assert_api_always_answered();
    Ok(())
}

#[tokio::test]
async fn terminated_leader_hands_over_within_a_second_and_exits_cleanly() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mut group = Group::start(3, false).await?;
    let leader = group.agreed_leader(&[0, 1, 2]).await?;
    group.prober.exclude(leader);
    let terminated_at = now_micros();
    group.replicas[leader].signal(Signal::SIGTERM)?;

    let successor = group.agreed_leader(&group.others(leader)).await?;
    let first_action = eventually(
        Duration::from_secs(10),
        "the successor's first action",
        || async { group.replicas[successor].first_action_after(terminated_at) },
    )
    .await?;
    let handover = Duration::from_micros(first_action - terminated_at);
    ensure!(
        handover <= Duration::from_secs(1),
        "handover took {handover:?}\n{}",
        group.logs()
    );
    assert_eq!(
        group.replicas[leader].wait(Duration::from_secs(10)).await?,
        Some(0)
    );
    assert!(group.replicas[leader].log().contains("released lease"));
    group.assert_no_overlapping_leadership();
    group.assert_api_always_answered();
    Ok(())
}

#[tokio::test]
async fn leader_cut_off_from_the_api_server_stops_within_its_renew_deadline() -> anyhow::Result<()>
{
    let _serial = SERIAL.lock().await;
    let group = Group::start(3, true).await?;
    let leader = group.agreed_leader(&[0, 1, 2]).await?;
    let cut_at = now_micros();
    group.proxies[leader].cut();

    let successor = group.agreed_leader(&group.others(leader)).await?;
    // The partitioned replica keeps serving its API, reporting what it can.
    eventually(
        Duration::from_secs(10),
        "the cut-off leader to step down",
        || async { (group.replicas[leader].role().await.ok()? == "follower").then_some(()) },
    )
    .await?;
    let stopped = Duration::from_micros(group.last_action_of(leader).saturating_sub(cut_at));
    let bound = group.settings.renew_deadline + SCHEDULING_SLACK;
    ensure!(
        stopped <= bound,
        "leader acted {stopped:?} after the cut (bound {bound:?})"
    );

    group.proxies[leader].restore();
    eventually(
        Duration::from_secs(20),
        "the healed replica to follow the new leader",
        || async {
            let view = group.replicas[leader]
                .get_json("/api/v1/leader")
                .await
                .ok()?;
            (view["role"] == "follower"
                && view["holder"] == group.replicas[successor].identity.as_str())
            .then_some(())
        },
    )
    .await?;
    assert_eq!(group.agreed_leader(&[0, 1, 2]).await?, successor);
    group.assert_no_overlapping_leadership();
    group.assert_api_always_answered();
    Ok(())
}

#[tokio::test]
async fn paused_leader_never_acts_while_another_holds_the_lease() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let group = Group::start(3, false).await?;
    let leader = group.agreed_leader(&[0, 1, 2]).await?;
    group.prober.exclude(leader);
    group.replicas[leader].signal(Signal::SIGSTOP)?;

    let successor = group.agreed_leader(&group.others(leader)).await?;
    // Let the successor act for a while before the old leader wakes up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    group.replicas[leader].signal(Signal::SIGCONT)?;

    eventually(
        Duration::from_secs(20),
        "the woken replica to follow",
        || async {
            let view = group.replicas[leader]
                .get_json("/api/v1/leader")
                .await
                .ok()?;
            (view["role"] == "follower").then_some(())
        },
    )
    .await?;
    group.prober.include(leader);
    // Give any wrongly-continued leader-only work time to show itself.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(group.agreed_leader(&[0, 1, 2]).await?, successor);
    group.assert_no_overlapping_leadership();
    group.assert_api_always_answered();
    Ok(())
}
