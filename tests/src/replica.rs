//! `leasehold run` as a real process: start it, signal it, read what it did.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::repo_root;

/// Election timings and where the replicas meet.
#[derive(Clone, Debug)]
pub struct ReplicaSettings {
    pub namespace: String,
    pub lease_name: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    /// More `leasehold run` flags (plugins, caches).
    pub extra_args: Vec<String>,
    /// Where the replica serves its API; a free loopback port when unset.
    pub listen: Option<SocketAddr>,
}

impl ReplicaSettings {
    /// Short timings so failover tests take seconds, with the same ratios as
    /// client-go's defaults.
    pub fn fast(namespace: &str, lease_name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            lease_name: lease_name.to_owned(),
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(400),
            extra_args: Vec::new(),
            listen: None,
        }
    }
}

/// A running `leasehold run` process with an activity log.
#[derive(Debug)]
pub struct ReplicaProcess {
    pub identity: String,
    pub api: SocketAddr,
    child: Child,
    activity_log: PathBuf,
    log: PathBuf,
    http: reqwest::Client,
}

impl ReplicaProcess {
    /// Starts a `leasehold run` replica that reaches the API server through
    /// `kubeconfig`, keeping its files in `workdir`.
    pub async fn start(
        identity: &str,
        settings: &ReplicaSettings,
        kubeconfig: &Path,
        workdir: &Path,
    ) -> anyhow::Result<Self> {
        Self::start_binary(&leasehold_binary(), identity, settings, kubeconfig, workdir).await
    }

    /// Like [`start`](Self::start) with another binary that takes the same
    /// flags (the client-go baseline of the failover benchmark).
    pub async fn start_binary(
        binary: &Path,
        identity: &str,
        settings: &ReplicaSettings,
        kubeconfig: &Path,
        workdir: &Path,
    ) -> anyhow::Result<Self> {
        let api = match settings.listen {
            Some(address) => address,
            None => free_address()?,
        };
        let activity_log = workdir.join(format!("{identity}.activity"));
        let log = workdir.join(format!("{identity}.log"));
        let log_file = std::fs::File::create(&log)?;
        let millis = |d: Duration| format!("{}ms", d.as_millis());
        let child = Command::new(binary)
            .arg("run")
            .args(["--identity", identity])
            .args(["--lease-namespace", &settings.namespace])
            .args(["--lease-name", &settings.lease_name])
            // Tests share one control plane: each replica runs only the
            // Plugin objects of its own test.
            .args(["--plugin-namespace", &settings.namespace])
            .args(["--lease-duration", &millis(settings.lease_duration)])
            .args(["--renew-deadline", &millis(settings.renew_deadline)])
            .args(["--retry-period", &millis(settings.retry_period)])
            .args(["--listen", &api.to_string()])
            .arg("--activity-log")
            .arg(&activity_log)
            .args(&settings.extra_args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn,leasehold=debug")
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            identity: identity.to_owned(),
            api,
            child,
            activity_log,
            log,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
        })
    }

    /// `GET path` on this replica's API, as JSON.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("http://{}{path}", self.api))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("{path} answered {status}: {body}");
        }
        Ok(body)
    }

    /// `GET path` on this replica's API: status code and body text.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let response = self
            .http
            .get(format!("http://{}{path}", self.api))
            .send()
            .await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    /// This replica's own view of its role: "leader", "follower", "starting".
    pub async fn role(&self) -> anyhow::Result<String> {
        let view = self.get_json("/api/v1/leader").await?;
        Ok(view["role"].as_str().unwrap_or_default().to_owned())
    }

    /// The process's peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        Ok(self.memory()?.peak)
    }

    /// The process's id, while it runs.
    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("replica already exited")
    }

    /// The process's resident memory now and at its peak.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        Memory::of(self.pid()?)
    }

    /// The CPU time the process has used so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time(self.pid()?)
    }

    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        kill(Pid::from_raw(i32::try_from(self.pid()?)?), signal)?;
        Ok(())
    }

    /// Waits for the process to exit and returns its exit code (`None` if it
    /// was killed by a signal).
    pub async fn wait(&mut self, limit: Duration) -> anyhow::Result<Option<i32>> {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .context("replica did not exit in time")??;
        Ok(status.code())
    }

    /// The replica's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every leadership term this process had, as the interval between its
    /// first and last leader-only action.
    pub fn activity(&self) -> Vec<ActivityInterval> {
        let text = std::fs::read_to_string(&self.activity_log).unwrap_or_default();
        let mut intervals: Vec<ActivityInterval> = Vec::new();
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(Ok(term)), Some(Ok(micros))) = (
                parts.next().map(str::parse::<u64>),
                parts.next().map(str::parse::<u64>),
            ) else {
                continue;
            };
            match intervals.last_mut() {
                Some(last) if last.term == term => last.end_micros = micros,
                _ => intervals.push(ActivityInterval {
                    replica: self.identity.clone(),
                    term,
                    start_micros: micros,
                    end_micros: micros,
                }),
            }
        }
        intervals
    }

    /// Unix time (µs) of the last leader-only action, if any.
    pub fn last_action(&self) -> Option<u64> {
        self.activity().last().map(|interval| interval.end_micros)
    }

    /// Unix time (µs) of the first leader-only action at or after `since`.
    pub fn first_action_after(&self, since_micros: u64) -> Option<u64> {
        let text = std::fs::read_to_string(&self.activity_log).unwrap_or_default();
        text.lines()
            .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
            .find(|micros| *micros >= since_micros)
    }
}

/// A process's resident memory, from `/proc/<pid>/status`, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    /// Resident now (`VmRSS`).
    pub resident: u64,
    /// The most it has been resident (`VmHWM`).
    pub peak: u64,
    /// Of `resident`, anonymous memory (`RssAnon`): the heap, stacks and
    /// the instance pool's touched pages.
    pub anonymous: u64,
    /// Of `resident`, pages of files (`RssFile`): the binary and the
    /// compile cache's mapped machine code, clean and reclaimable.
    pub file: u64,
}

impl Memory {
    /// The memory of process `pid` (any process of this user: a replica,
    /// a baseline the benchmark started).
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let kib: u64 = status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
            Ok(kib * 1024)
        };
        Ok(Self {
            resident: field("VmRSS:")?,
            peak: field("VmHWM:")?,
            anonymous: field("RssAnon:")?,
            file: field("RssFile:")?,
        })
    }
}

/// The CPU time process `pid` has used so far, user and system, from
/// `/proc/<pid>/stat` (in clock ticks: 10 ms on Linux).
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = procfs::process::Process::new(i32::try_from(pid)?)?.stat()?;
    let ticks = (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64;
    Ok(Duration::from_secs_f64(ticks))
}

/// One replica's leadership term, by its actions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivityInterval {
    pub replica: String,
    pub term: u64,
    pub start_micros: u64,
    pub end_micros: u64,
}

/// Two intervals of different replicas that overlap in time, if any.
pub fn overlapping(intervals: &[ActivityInterval]) -> Option<(ActivityInterval, ActivityInterval)> {
    for (i, a) in intervals.iter().enumerate() {
        for b in &intervals[i + 1..] {
            if a.replica != b.replica
                && a.start_micros <= b.end_micros
                && b.start_micros <= a.end_micros
            {
                return Some((a.clone(), b.clone()));
            }
        }
    }
    None
}

/// Unix time now, in microseconds (the activity log's clock).
pub fn now_micros() -> u64 {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

pub fn free_address() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// The `leasehold` binary of this build profile, built once per test
/// process so a test never runs a stale binary.
pub fn leasehold_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            // Test binaries live in target/<profile>/deps/.
            let exe = std::env::current_exe().expect("current test executable");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("test binary inside target/<profile>/deps");
            let release = profile_dir
                .file_name()
                .is_some_and(|name| name == "release");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = std::process::Command::new(cargo);
            build.current_dir(repo_root()).args([
                "build",
                "--quiet",
                "-p",
                "leasehold",
                "--bin",
                "leasehold",
            ]);
            if release {
                build.arg("--release");
            }
            let status = build.status().expect("running cargo build");
            assert!(status.success(), "building the leasehold binary failed");
            profile_dir.join("leasehold")
        })
        .clone()
}

/// The component of a plugin crate (an example or a test fixture), built
/// for wasm32-wasip2 the way plugin authors' tests build theirs (the
/// harness's `build_component`: once per crate per test process).
pub fn plugin_component(crate_name: &str) -> PathBuf {
    let crate_dir = match crate_name {
        "misbehaving" | "labeler-rs" => repo_root().join("tests/fixtures").join(crate_name),
        example => repo_root().join("plugins/examples").join(example),
    };
    leasehold_harness::build_component(&crate_dir)
        .unwrap_or_else(|error| panic!("building the {crate_name} plugin: {error}"))
}

/// A copy of `kubeconfig` whose server is `server` (e.g. a [`TcpProxy`]),
/// trusting `authority` instead of the cluster's CA when given (a proxy
/// that terminates TLS itself).
///
/// [`TcpProxy`]: crate::TcpProxy
pub fn kubeconfig_via(
    kubeconfig: &Path,
    server: SocketAddr,
    authority: Option<&Path>,
    out: &Path,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(kubeconfig)?;
    let rewritten: Vec<String> = text
        .lines()
        .map(|line| {
            if let Some(at) = line.find("server: ") {
                format!("{}server: https://{server}", &line[..at])
            } else if let (Some(at), Some(authority)) =
                (line.find("certificate-authority: "), authority)
            {
                format!(
                    "{}certificate-authority: {}",
                    &line[..at],
                    authority.display()
                )
            } else {
                line.to_owned()
            }
        })
        .collect();
    std::fs::write(out, rewritten.join("\n"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_cpu_time_grows_while_it_computes() {
        let me = std::process::id();
        let before = cpu_time(me).unwrap();
        // Spins until the kernel's next tick is counted (10 ms of CPU);
        // the wall-clock bound only ends a reading that never moves.
        let give_up = std::time::Instant::now() + Duration::from_secs(30);
        let mut spins: u64 = 0;
        while cpu_time(me).unwrap() <= before {
            assert!(
                std::time::Instant::now() < give_up,
                "no CPU time counted for 30 s of spinning"
            );
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
        assert!(cpu_time(me).unwrap() < before + Duration::from_secs(60));
    }

    fn interval(replica: &str, start: u64, end: u64) -> ActivityInterval {
        ActivityInterval {
            replica: replica.into(),
            term: 1,
            start_micros: start,
            end_micros: end,
        }
    }

    #[test]
    fn intervals_of_different_replicas_that_touch_overlap() {
        let found = overlapping(&[interval("a", 0, 10), interval("b", 10, 20)]);
        assert!(found.is_some());
    }

    #[test]
    fn back_to_back_terms_do_not_overlap() {
        assert_eq!(
            overlapping(&[
                interval("a", 0, 10),
                interval("b", 11, 20),
                interval("a", 21, 30)
            ]),
            None
        );
    }

    #[test]
    fn one_replicas_own_terms_never_count_as_overlap() {
        assert_eq!(
            overlapping(&[interval("a", 0, 10), interval("a", 5, 20)]),
            None
        );
    }
}
