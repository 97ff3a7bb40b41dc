//! The Helm chart, with the real tools: linted and rendered by `helm`, its
//! output checked for what users rely on, accepted by the real API server,
//! its flags accepted by the host's own parser, its RBAC enough for the host
//! to lead as the chart's ServiceAccount, and bad values refused at install
//! with the reason.
//!
//! helm and kubectl are the ones `tools/cluster.sh install` builds and caches.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ListParams, PostParams};
use leasehold::Cli;
use leasehold::cli::Command as HostCommand;
use leasehold::replica::Config as HostConfig;
use leasehold::telemetry::LogFormat;
use leasehold_tests::{TestCluster, eventually, leasehold_binary, repo_root};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// Every test installs or renders the release under this name; the chart then
/// names its objects (and the election Lease) plainly "leasehold".
const RELEASE: &str = "leasehold";

/// Value sets a user is likely to install with.
const DEFAULTS: &[&str] = &[];
const HA: &[&str] = &["replicaCount=3"];
const MONITORED: &[&str] = &[
    "serviceMonitor.enabled=true",
    "serviceMonitor.labels.release=prom",
];

// === helm and kubectl ===

struct Tools {
    helm: PathBuf,
    kubectl: PathBuf,
}

/// helm and kubectl from the directories `tools/cluster.sh env` puts on PATH.
fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let script = repo_root().join("tools/cluster.sh");
        // Builds and caches them the first time; a no-op afterwards.
        let status = std::process::Command::new(&script)
            .arg("install")
            .stdout(Stdio::null())
            .status()
            .expect("running tools/cluster.sh install");
        assert!(status.success(), "tools/cluster.sh install failed");
        let env = std::process::Command::new(&script)
            .arg("env")
            .output()
            .expect("running tools/cluster.sh env");
        let env = String::from_utf8(env.stdout).expect("utf-8 from tools/cluster.sh env");
        let dirs: Vec<PathBuf> = env
            .lines()
            .find_map(|line| line.strip_prefix("export PATH="))
            .expect("tools/cluster.sh env prints a PATH line")
            .split(':')
            .filter(|dir| !dir.starts_with('$'))
            .map(PathBuf::from)
            .collect();
        let find = |name: &str| {
            dirs.iter()
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
                .unwrap_or_else(|| panic!("no {name} in {dirs:?} (from tools/cluster.sh env)"))
        };
        Tools {
            helm: find("helm"),
            kubectl: find("kubectl"),
        }
    })
}

fn chart() -> PathBuf {
    repo_root().join("charts/leasehold")
}

/// Runs a tool to completion, feeding it `stdin`.
async fn run(program: &Path, args: &[String], stdin: Option<&str>) -> anyhow::Result<Output> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().context("stdin is piped")?;
        pipe.write_all(text.as_bytes()).await?;
        drop(pipe);
    }
    Ok(child.wait_with_output().await?)
}

async fn helm(args: Vec<String>) -> anyhow::Result<Output> {
    run(&tools().helm, &args, None).await
}

fn set_flags(values: &[&str]) -> Vec<String> {
    values
        .iter()
        .flat_map(|value| ["--set".to_owned(), (*value).to_owned()])
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm template` into `namespace` with `values`; its status and output.
async fn template(namespace: &str, values: &[&str]) -> anyhow::Result<Output> {
    let mut args = vec![
        "template".to_owned(),
        RELEASE.to_owned(),
        chart().display().to_string(),
        "--namespace".to_owned(),
        namespace.to_owned(),
    ];
    args.extend(set_flags(values));
    helm(args).await
}

/// Renders the chart; fails the test with helm's message if it refuses.
async fn render(namespace: &str, values: &[&str]) -> anyhow::Result<Rendered> {
    let output = template(namespace, values).await?;
    ensure!(
        output.status.success(),
        "helm template {values:?} failed: {}",
        text(&output.stderr)
    );
    Rendered::parse(&text(&output.stdout))
}

/// What helm says when it refuses `values`.
async fn refusal(values: &[&str]) -> anyhow::Result<String> {
    let output = template("default", values).await?;
    ensure!(
        !output.status.success(),
        "helm template accepted {values:?}, which it must refuse"
    );
    Ok(text(&output.stderr))
}

// === rendered manifests ===

/// The objects `helm template` printed.
struct Rendered {
    yaml: String,
    objects: Vec<Value>,
}

impl Rendered {
    fn parse(yaml: &str) -> anyhow::Result<Self> {
        let objects: Vec<Value> =
            serde_saphyr::from_multiple(yaml).context("parsing helm template output")?;
        Ok(Self {
            yaml: yaml.to_owned(),
            objects,
        })
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|object| object["kind"] == kind)
            .collect()
    }

    fn one(&self, kind: &str) -> &Value {
        match self.all(kind).as_slice() {
            [object] => object,
            found => panic!("expected one {kind}, found {}", found.len()),
        }
    }

    fn pod_spec(&self) -> &Value {
        &self.one("Deployment")["spec"]["template"]["spec"]
    }

    fn pod_labels(&self) -> &Value {
        &self.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    }

    fn container(&self) -> &Value {
        let containers = self.pod_spec()["containers"]
            .as_array()
            .expect("pod spec has containers");
        assert_eq!(containers.len(), 1, "one container per replica");
        &containers[0]
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Parses container args with the host's own command line, and validates
/// them into a replica configuration as `leasehold run` would at start.
fn host_config(args: &[String]) -> anyhow::Result<(Cli, HostConfig)> {
    let cli = Cli::try_parse_from(std::iter::once("leasehold".to_owned()).chain(args.to_vec()))?;
    let config = match &cli.command {
        HostCommand::Run(options) => options.clone().into_config()?,
        #[allow(unreachable_patterns)]
        other => bail!("the chart must start `leasehold run`, not {other:?}"),
    };
    Ok((cli, config))
}

/// `selector` picks objects labelled `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector.as_object().is_some_and(|wanted| {
        !wanted.is_empty() && wanted.iter().all(|(key, value)| labels[key] == *value)
    })
}

/// Whether RBAC `rules` allow `verb` on `resource` in `group`.
fn grants(rules: &Value, group: &str, resource: &str, verb: &str) -> bool {
    rules.as_array().into_iter().flatten().any(|rule| {
        let has = |field: &str, wanted: &str| {
            strings(&rule[field])
                .iter()
                .any(|item| item == wanted || item == "*")
        };
        has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
    })
}

/// Every verb the host uses on Leases (election and replica directory).
const LEASE_VERBS: [&str; 7] = [
    "get", "list", "watch", "create", "update", "patch", "delete",
];

/// (group, resource, verb) that later plugin work needs cluster-wide.
const PLUGIN_PERMISSIONS: [(&str, &str, &str); 11] = [
    ("leasehold.dev", "plugins", "get"),
    ("leasehold.dev", "plugins", "list"),
    ("leasehold.dev", "plugins", "watch"),
    ("leasehold.dev", "plugins/status", "update"),
    ("leasehold.dev", "plugins/status", "patch"),
    ("", "configmaps", "get"),
    ("", "configmaps", "list"),
    ("", "configmaps", "watch"),
    ("", "serviceaccounts", "impersonate"),
    ("authentication.k8s.io", "tokenreviews", "create"),
    ("authorization.k8s.io", "subjectaccessreviews", "create"),
];

// === linting and rendering ===

#[tokio::test]
async fn chart_passes_strict_lint_with_each_value_set() -> anyhow::Result<()> {
    for values in [DEFAULTS, HA, MONITORED] {
        let mut args = vec![
            "lint".to_owned(),
            "--strict".to_owned(),
            chart().display().to_string(),
        ];
        args.extend(set_flags(values));
        let output = helm(args).await?;
        let report = format!("{}{}", text(&output.stdout), text(&output.stderr));
        ensure!(
            output.status.success() && report.contains("0 chart(s) failed"),
            "helm lint --strict {values:?}:\n{report}"
        );
        ensure!(!report.contains("[WARNING]"), "{report}");
    }
    Ok(())
}

#[tokio::test]
async fn one_replica_gets_neither_a_disruption_budget_nor_anti_affinity() -> anyhow::Result<()> {
    let rendered = render("default", DEFAULTS).await?;
    assert_eq!(rendered.one("Deployment")["spec"]["replicas"], 1);
    assert!(
        rendered.all("PodDisruptionBudget").is_empty(),
        "a budget of one replica would only block node drains"
    );
    assert_eq!(rendered.pod_spec()["affinity"], Value::Null);
    Ok(())
}

#[tokio::test]
async fn more_replicas_get_a_disruption_budget_and_spread_over_nodes() -> anyhow::Result<()> {
    let rendered = render("default", HA).await?;
    assert_eq!(rendered.one("Deployment")["spec"]["replicas"], 3);

    let budget = rendered.one("PodDisruptionBudget");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert!(
        selects(
            &budget["spec"]["selector"]["matchLabels"],
            rendered.pod_labels()
        ),
        "the budget must cover the replicas: {budget}"
    );

    let preferred = &rendered.pod_spec()["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"];
    let term = &preferred[0]["podAffinityTerm"];
    assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
    assert!(
        selects(&term["labelSelector"]["matchLabels"], rendered.pod_labels()),
        "anti-affinity must be against the other replicas: {preferred}"
    );
    assert_eq!(
        rendered.pod_spec()["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
        Value::Null,
        "required anti-affinity would leave replicas pending on small clusters"
    );
    Ok(())
}

#[tokio::test]
async fn default_args_are_flags_the_host_accepts() -> anyhow::Result<()> {
    let rendered = render("team-a", DEFAULTS).await?;
    let container = rendered.container();
    let args = strings(&container["args"]);
    let (cli, config) = host_config(&args).with_context(|| format!("args {args:?}"))?;

    assert_eq!(
        config.election.namespace, "team-a",
        "lease in the release namespace"
    );
    assert_eq!(config.election.lease_name, RELEASE);
    assert_eq!(config.election.lease_duration, Duration::from_secs(15));
    assert_eq!(config.election.renew_deadline, Duration::from_secs(10));
    assert_eq!(config.election.retry_period, Duration::from_secs(2));
    assert_eq!(cli.telemetry.log_format, LogFormat::Json);

    let http = container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|port| port["name"] == "http")
        .context("a container port named http")?;
    assert_eq!(
        http["containerPort"],
        config.listen.port(),
        "the host listens where the probes and the Service look"
    );
    assert!(
        config.listen.ip().is_unspecified(),
        "reachable from outside the pod"
    );
    Ok(())
}

#[tokio::test]
async fn election_settings_from_values_reach_the_host() -> anyhow::Result<()> {
    let rendered = render(
        "team-b",
        &[
            "election.leaseName=shared-group",
            "election.leaseDuration=1m",
            "election.renewDeadline=45s",
            "election.retryPeriod=500ms",
            "logFormat=text",
        ],
    )
    .await?;
    let args = strings(&rendered.container()["args"]);
    let (cli, config) = host_config(&args).with_context(|| format!("args {args:?}"))?;
    assert_eq!(config.election.namespace, "team-b");
    assert_eq!(config.election.lease_name, "shared-group");
    assert_eq!(config.election.lease_duration, Duration::from_secs(60));
    assert_eq!(config.election.renew_deadline, Duration::from_secs(45));
    assert_eq!(config.election.retry_period, Duration::from_millis(500));
    assert_eq!(cli.telemetry.log_format, LogFormat::Text);
    Ok(())
}

#[tokio::test]
async fn each_replica_takes_its_identity_from_its_pod_name() -> anyhow::Result<()> {
    let rendered = render("default", HA).await?;
    let container = rendered.container();
    let args = strings(&container["args"]);
    assert!(
        !args.iter().any(|arg| arg.starts_with("--identity")),
        "a fixed --identity would give every replica the same one: {args:?}"
    );
    let pod_name = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|var| var["name"] == "POD_NAME")
        .context("POD_NAME in the container env")?;
    assert_eq!(
        pod_name["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name",
        "{pod_name}"
    );
    Ok(())
}

#[tokio::test]
async fn probes_check_health_and_readiness_on_the_api_port() -> anyhow::Result<()> {
    let rendered = render("default", DEFAULTS).await?;
    let container = rendered.container();
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "http");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "http");

    let service = rendered.one("Service");
    assert!(
        selects(&service["spec"]["selector"], rendered.pod_labels()),
        "the Service must reach the replicas: {service}"
    );
    let port = &service["spec"]["ports"][0];
    assert_eq!(port["name"], "http");
    assert_eq!(port["port"], 8080);
    assert_eq!(port["targetPort"], "http");
    Ok(())
}

#[tokio::test]
async fn replicas_run_locked_down() -> anyhow::Result<()> {
    let rendered = render("default", DEFAULTS).await?;
    let pod = &rendered.pod_spec()["securityContext"];
    assert_eq!(pod["runAsNonRoot"], true);
    assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault");
    let container = &rendered.container()["securityContext"];
    assert_eq!(container["runAsNonRoot"], true);
    assert_eq!(container["readOnlyRootFilesystem"], true);
    assert_eq!(container["allowPrivilegeEscalation"], false);
    assert_eq!(container["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(container["seccompProfile"]["type"], "RuntimeDefault");
    Ok(())
}

#[tokio::test]
async fn every_object_carries_the_standard_labels() -> anyhow::Result<()> {
    for values in [DEFAULTS, HA, MONITORED] {
        let rendered = render("default", values).await?;
        for object in &rendered.objects {
            let labels = &object["metadata"]["labels"];
            for key in [
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/version",
                "app.kubernetes.io/managed-by",
                "helm.sh/chart",
            ] {
                assert!(
                    labels[key].is_string(),
                    "{} {} lacks {key}",
                    object["kind"],
                    object["metadata"]["name"]
                );
            }
            assert_eq!(labels["app.kubernetes.io/instance"], RELEASE);
        }
    }
    Ok(())
}

#[tokio::test]
async fn rbac_grants_the_lease_verbs_and_prepares_plugin_work() -> anyhow::Result<()> {
    let rendered = render("team-c", DEFAULTS).await?;
    let account = rendered.one("ServiceAccount");
    let account_name = &account["metadata"]["name"];
    assert_eq!(rendered.pod_spec()["serviceAccountName"], *account_name);

    let role = rendered.one("Role");
    assert_eq!(role["metadata"]["namespace"], "team-c");
    for verb in LEASE_VERBS {
        assert!(
            grants(&role["rules"], "coordination.k8s.io", "leases", verb),
            "the Role must allow {verb} on leases: {role}"
        );
    }
    let cluster_role = rendered.one("ClusterRole");
    for (group, resource, verb) in PLUGIN_PERMISSIONS {
        assert!(
            grants(&cluster_role["rules"], group, resource, verb),
            "the ClusterRole must allow {verb} on {resource}.{group}"
        );
    }
    assert!(
        !grants(
            &cluster_role["rules"],
            "coordination.k8s.io",
            "leases",
            "update"
        ),
        "Lease access stays namespaced"
    );

    let expected_subject = json!([{
        "kind": "ServiceAccount",
        "name": account_name,
        "namespace": "team-c",
    }]);
    for (binding, granted) in [("RoleBinding", role), ("ClusterRoleBinding", cluster_role)] {
        let binding = rendered.one(binding);
        assert_eq!(binding["subjects"], expected_subject, "{binding}");
        assert_eq!(binding["roleRef"]["kind"], granted["kind"]);
        assert_eq!(binding["roleRef"]["name"], granted["metadata"]["name"]);
    }
    Ok(())
}

#[tokio::test]
async fn service_monitor_is_rendered_only_when_enabled() -> anyhow::Result<()> {
    let plain = render("default", DEFAULTS).await?;
    assert!(plain.all("ServiceMonitor").is_empty());

    let rendered = render("monitoring", MONITORED).await?;
    let monitor = rendered.one("ServiceMonitor");
    let service = rendered.one("Service");
    assert!(
        selects(
            &monitor["spec"]["selector"]["matchLabels"],
            &service["metadata"]["labels"]
        ),
        "the ServiceMonitor must select the Service: {monitor}"
    );
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        json!(["monitoring"])
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], service["spec"]["ports"][0]["name"]);
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(
        monitor["metadata"]["labels"]["release"], "prom",
        "extra labels let a Prometheus select it"
    );
    Ok(())
}

#[tokio::test]
async fn no_custom_resources_are_rendered_before_their_crds_exist() -> anyhow::Result<()> {
    let rendered = render("default", HA).await?;
    for object in &rendered.objects {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        assert!(
            !api_version.contains("leasehold.dev"),
            "no Plugin objects yet: {object}"
        );
    }
    assert!(rendered.all("CustomResourceDefinition").is_empty());
    assert!(!rendered.yaml.contains("kind: Plugin\n"));
    Ok(())
}

// === bad values ===

#[tokio::test]
async fn bad_values_are_refused_at_install_with_the_reason() -> anyhow::Result<()> {
    let cases: &[(&str, &[&str])] = &[
        ("replicaCount=0", &["/replicaCount", "minimum"]),
        ("replicaCount=three", &["/replicaCount", "want integer"]),
        (
            "election.renewDeadline=soon",
            &["/election/renewDeadline", "does not match pattern"],
        ),
        (
            "election.renewDeadline=10",
            &["/election/renewDeadline", "want string"],
        ),
        (
            "election.leaseDuration=1500ms",
            &["/election/leaseDuration", "does not match pattern"],
        ),
        (
            "replicas=3",
            &["additional properties 'replicas' not allowed"],
        ),
        (
            "election.leaseDurration=20s",
            &["'leaseDurration' not allowed"],
        ),
        ("logFormat=xml", &["/logFormat"]),
        (
            "election.renewDeadline=15s",
            &["election.leaseDuration (15s) must be greater than election.renewDeadline (15s)"],
        ),
        (
            "election.retryPeriod=9s",
            &["election.renewDeadline (10s) must be greater than 1.2 × election.retryPeriod (9s)"],
        ),
        (
            "plugins[0].name=example",
            &["plugins: Plugin objects are not supported"],
        ),
    ];
    for (value, reasons) in cases {
        let message = refusal(&[value]).await?;
        for reason in *reasons {
            assert!(
                message.contains(reason),
                "--set {value} was refused, but the message does not say {reason:?}:\n{message}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn chart_and_host_agree_on_which_election_timings_are_valid() -> anyhow::Result<()> {
    // (lease duration, renew deadline, retry period, valid)
    let cases = [
        ("15s", "10s", "2s", true),
        ("4s", "3s", "1s", true),
        ("1m", "45s", "500ms", true),
        ("2h", "1h30m", "1m", true),
        ("15s", "2401ms", "2s", true),
        ("10s", "10s", "2s", false),
        ("10s", "11s", "2s", false),
        ("15s", "2400ms", "2s", false),
        ("15s", "10s", "0s", false),
        ("0s", "10s", "2s", false),
        ("2500ms", "2s", "500ms", false),
    ];
    for (lease, deadline, retry, valid) in cases {
        let values = [
            format!("election.leaseDuration={lease}"),
            format!("election.renewDeadline={deadline}"),
            format!("election.retryPeriod={retry}"),
        ];
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let chart_accepts = template("default", &values).await?.status.success();
        let host_accepts = host_config(&[
            "run".to_owned(),
            format!("--lease-duration={lease}"),
            format!("--renew-deadline={deadline}"),
            format!("--retry-period={retry}"),
        ])
        .is_ok();
        assert_eq!(
            host_accepts, valid,
            "the host's rules changed for {lease}/{deadline}/{retry}; update this table and the chart"
        );
        assert_eq!(
            chart_accepts, host_accepts,
            "chart and host disagree on lease {lease}, deadline {deadline}, retry {retry}"
        );
    }
    Ok(())
}

// === against the real API server ===

/// A ServiceMonitor CRD reduced to the fields the chart sets, typed as the
/// Prometheus Operator types them, so a misspelt or mistyped field is
/// refused (kubectl validates strictly).
async fn install_service_monitor_crd(cluster: &TestCluster) -> anyhow::Result<()> {
    let duration = json!({
        "type": "string",
        "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
    });
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {
                "plural": "servicemonitors", "singular": "servicemonitor",
                "kind": "ServiceMonitor", "listKind": "ServiceMonitorList"
            },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": {
                            "type": "object",
                            "required": ["endpoints", "selector"],
                            "properties": {
                                "selector": {"type": "object", "properties": {
                                    "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}
                                }},
                                "namespaceSelector": {"type": "object", "properties": {
                                    "any": {"type": "boolean"},
                                    "matchNames": {"type": "array", "items": {"type": "string"}}
                                }},
                                "endpoints": {"type": "array", "items": {"type": "object", "properties": {
                                    "port": {"type": "string"},
                                    "path": {"type": "string"},
                                    "interval": duration,
                                    "scrapeTimeout": duration
                                }}}
                            }
                        }
                    }
                }}
            }]
        }
    }))?;
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client()?);
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        // Installed by an earlier run (or a real Prometheus Operator CRD).
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(error.into()),
    }
    eventually(
        Duration::from_secs(30),
        "the ServiceMonitor CRD to be Established",
        || async {
            let crd = crds
                .get("servicemonitors.monitoring.coreos.com")
                .await
                .ok()?;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        },
    )
    .await
}

async fn kubectl(cluster: &TestCluster, args: &[&str], stdin: &str) -> anyhow::Result<Output> {
    let mut all = vec![
        "--kubeconfig".to_owned(),
        cluster.kubeconfig().display().to_string(),
    ];
    all.extend(args.iter().map(|arg| (*arg).to_owned()));
    run(&tools().kubectl, &all, Some(stdin)).await
}

#[tokio::test]
async fn api_server_accepts_the_rendered_manifests_in_a_server_side_dry_run() -> anyhow::Result<()>
{
    let cluster = TestCluster::shared().await;
    install_service_monitor_crd(cluster).await?;
    for values in [DEFAULTS, HA, MONITORED] {
        let namespace = cluster.namespace("chart-dry-run").await?;
        let rendered = render(&namespace, values).await?;
        let output = kubectl(
            cluster,
            &[
                "apply",
                "--dry-run=server",
                "--namespace",
                &namespace,
                "-f",
                "-",
            ],
            &rendered.yaml,
        )
        .await?;
        let report = text(&output.stdout);
        ensure!(
            output.status.success(),
            "the API server refused the chart with {values:?}:\n{}{report}",
            text(&output.stderr)
        );
        let accepted = report
            .lines()
            .filter(|line| line.ends_with("(server dry run)"))
            .count();
        assert_eq!(
            accepted,
            rendered.objects.len(),
            "every rendered object must be accepted:\n{report}"
        );
    }
    Ok(())
}

/// `helm install`s the chart into a fresh namespace; returns the namespace
/// and helm's output (with NOTES).
async fn install(cluster: &TestCluster, values: &[&str]) -> anyhow::Result<(String, String)> {
    let namespace = cluster.namespace("chart-install").await?;
    let mut args = vec![
        "install".to_owned(),
        RELEASE.to_owned(),
        chart().display().to_string(),
        "--namespace".to_owned(),
        namespace.clone(),
        "--kubeconfig".to_owned(),
        cluster.kubeconfig().display().to_string(),
    ];
    args.extend(set_flags(values));
    let output = helm(args).await?;
    ensure!(
        output.status.success(),
        "helm install failed: {}",
        text(&output.stderr)
    );
    Ok((namespace, text(&output.stdout)))
}

async fn upgrade(
    cluster: &TestCluster,
    namespace: &str,
    values: &[&str],
) -> anyhow::Result<Output> {
    let mut args = vec![
        "upgrade".to_owned(),
        RELEASE.to_owned(),
        chart().display().to_string(),
        "--namespace".to_owned(),
        namespace.to_owned(),
        "--kubeconfig".to_owned(),
        cluster.kubeconfig().display().to_string(),
        "--reuse-values".to_owned(),
    ];
    args.extend(set_flags(values));
    helm(args).await
}

#[tokio::test]
async fn replica_count_is_all_it_takes_to_go_ha_and_back() -> anyhow::Result<()> {
    let cluster = TestCluster::shared().await;
    let (namespace, notes) = install(cluster, DEFAULTS).await?;
    for hint in [
        format!("kubectl --namespace {namespace} port-forward svc/{RELEASE} 8080:8080"),
        "curl -s localhost:8080/api/v1/leader".to_owned(),
        format!("kubectl --namespace {namespace} get lease {RELEASE}"),
        "--reuse-values --set replicaCount=3".to_owned(),
    ] {
        assert!(notes.contains(&hint), "NOTES lack {hint:?}:\n{notes}");
    }

    let client = cluster.client()?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client, &namespace);
    let replicas = |deployment: &Deployment| deployment.spec.as_ref().and_then(|s| s.replicas);
    let anti_affinity = |deployment: &Deployment| {
        deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .is_some()
    };
    let deployment = deployments.get(RELEASE).await?;
    assert_eq!(replicas(&deployment), Some(1));
    assert!(budgets.get_opt(RELEASE).await?.is_none());

    let output = upgrade(cluster, &namespace, HA).await?;
    ensure!(output.status.success(), "{}", text(&output.stderr));
    let upgraded = text(&output.stdout);
    assert!(
        !upgraded.contains("--set replicaCount=3"),
        "no HA hint once HA:\n{upgraded}"
    );
    let deployment = deployments.get(RELEASE).await?;
    assert_eq!(replicas(&deployment), Some(3));
    assert!(anti_affinity(&deployment));
    let budget = budgets.get(RELEASE).await?;
    assert_eq!(
        budget.spec.and_then(|s| s.min_available),
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );

    // A bad upgrade is refused by helm and changes nothing.
    let before = deployments.get(RELEASE).await?.metadata.resource_version;
    let output = upgrade(cluster, &namespace, &["election.renewDeadline=20s"]).await?;
    assert!(
        !output.status.success(),
        "renewDeadline 20s > leaseDuration 15s"
    );
    assert!(text(&output.stderr).contains("election.renewDeadline (20s)"));
    assert_eq!(
        deployments.get(RELEASE).await?.metadata.resource_version,
        before
    );

    let output = upgrade(cluster, &namespace, &["replicaCount=1"]).await?;
    ensure!(output.status.success(), "{}", text(&output.stderr));
    let deployment = deployments.get(RELEASE).await?;
    assert_eq!(replicas(&deployment), Some(1));
    assert!(!anti_affinity(&deployment));
    assert!(budgets.get_opt(RELEASE).await?.is_none());
    Ok(())
}

/// Asks the API server whether `user` may do `verb` on `resource`.
async fn allowed(
    cluster: &TestCluster,
    user: &str,
    namespace: &str,
    (group, resource, verb): (&str, &str, &str),
) -> anyhow::Result<bool> {
    let (resource, subresource) = match resource.split_once('/') {
        Some((resource, sub)) => (resource, Some(sub.to_owned())),
        None => (resource, None),
    };
    let account_namespace = user.split(':').nth(2).unwrap_or_default();
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            groups: Some(vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{account_namespace}"),
                "system:authenticated".to_owned(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                subresource,
                verb: Some(verb.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let reviewed = Api::<SubjectAccessReview>::all(cluster.client()?)
        .create(&PostParams::default(), &review)
        .await?;
    Ok(reviewed.status.is_some_and(|status| status.allowed))
}

#[tokio::test]
async fn installed_rbac_grants_the_service_account_what_it_needs_and_no_more() -> anyhow::Result<()>
{
    let cluster = TestCluster::shared().await;
    let (namespace, _) = install(cluster, DEFAULTS).await?;
    let user = format!("system:serviceaccount:{namespace}:{RELEASE}");
    for verb in LEASE_VERBS {
        let permission = ("coordination.k8s.io", "leases", verb);
        assert!(
            allowed(cluster, &user, &namespace, permission).await?,
            "{verb} leases in the release namespace"
        );
        assert!(
            !allowed(cluster, &user, "default", permission).await?,
            "{verb} leases outside the release namespace must be denied"
        );
    }
    for permission in PLUGIN_PERMISSIONS {
        assert!(
            allowed(cluster, &user, "any-namespace", permission).await?,
            "{permission:?} for plugin work"
        );
    }
    for denied in [
        ("", "secrets", "get"),
        ("", "pods", "create"),
        ("leasehold.dev", "plugins", "delete"),
        ("", "users", "impersonate"),
    ] {
        assert!(
            !allowed(cluster, &user, &namespace, denied).await?,
            "{denied:?} must not be granted"
        );
    }
    Ok(())
}

/// A kubeconfig that authenticates with `token` only.
fn token_kubeconfig(admin: &Path, token: &str, out: &Path) -> anyhow::Result<()> {
    let admin = kube::config::Kubeconfig::read_from(admin)?;
    let cluster = admin
        .clusters
        .first()
        .and_then(|named| named.cluster.clone())
        .context("the admin kubeconfig names a cluster")?;
    let server = cluster.server.context("the cluster has a server")?;
    let ca = cluster
        .certificate_authority
        .context("the cluster has a CA file")?;
    std::fs::write(
        out,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
             users:\n- name: replica\n  user:\n    token: {token}\n\
             contexts:\n- name: replica\n  context:\n    cluster: test\n    user: replica\n\
             current-context: replica\n"
        ),
    )?;
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test]
async fn host_leads_with_the_installed_args_as_the_charts_service_account() -> anyhow::Result<()> {
    let cluster = TestCluster::shared().await;
    let (namespace, _) = install(cluster, DEFAULTS).await?;
    let admin = cluster.client()?;

    // The container exactly as installed, bar the address: a test shares
    // loopback with others.
    let deployment = Api::<Deployment>::namespaced(admin.clone(), &namespace)
        .get(RELEASE)
        .await?;
    let container = deployment
        .spec
        .and_then(|spec| spec.template.spec)
        .and_then(|pod| pod.containers.into_iter().next())
        .context("the Deployment has a container")?;
    let port = free_port()?;
    let args: Vec<String> = container
        .args
        .unwrap_or_default()
        .into_iter()
        .map(|arg| {
            if arg.starts_with("--listen=") {
                format!("--listen=127.0.0.1:{port}")
            } else {
                arg
            }
        })
        .collect();

    // What the kubelet would provide: the pod's ServiceAccount token and,
    // through the downward API, its name.
    let workdir = tempfile::Builder::new()
        .prefix("leasehold-chart")
        .tempdir()?;
    let token = cluster.service_account_token(&namespace, RELEASE).await?;
    let kubeconfig = workdir.path().join("kubeconfig");
    token_kubeconfig(cluster.kubeconfig(), &token, &kubeconfig)?;
    let pod_name = "leasehold-6c9f7d8b5-x7k2q";
    let log = workdir.path().join("replica.log");
    let mut child = tokio::process::Command::new(leasehold_binary())
        .args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAME", pod_name)
        .env("RUST_LOG", "warn,leasehold=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()?;
    let replica_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let get = |path: &str| {
        let request = http.get(format!("http://127.0.0.1:{port}{path}"));
        async move {
            let response = request.send().await.ok()?;
            response
                .status()
                .is_success()
                .then_some(response.json::<Value>().await.ok()?)
        }
    };
    let view = eventually(Duration::from_secs(60), "the replica to lead", || async {
        let view = get("/api/v1/leader").await?;
        (view["role"] == "leader").then_some(view)
    })
    .await
    .with_context(replica_log)?;
    assert_eq!(view["holder"], pod_name, "identity is the pod name: {view}");
    assert_eq!(view["lease"]["namespace"], namespace.as_str());
    eventually(
        Duration::from_secs(30),
        "the replica to list itself",
        || async {
            let listed = get("/api/v1/replicas").await?;
            listed["replicas"]
                .as_array()?
                .iter()
                .any(|replica| replica["identity"] == pod_name)
                .then_some(())
        },
    )
    .await
    .with_context(replica_log)?;
    let ready = http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await?;
    assert!(ready.status().is_success(), "/readyz: {}", ready.status());

    let leases: Api<Lease> = Api::namespaced(admin, &namespace);
    let holder = |lease: Lease| lease.spec.and_then(|spec| spec.holder_identity);
    assert_eq!(
        holder(leases.get(RELEASE).await?).as_deref(),
        Some(pod_name),
        "`kubectl get lease` shows the leader's pod"
    );

    // Shutdown releases the election Lease and removes the replica's own.
    let pid = child.id().context("the replica is running")?;
    kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGTERM)?;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
    assert!(status.success(), "exit {status}:\n{}", replica_log());
    let released = holder(leases.get(RELEASE).await?);
    assert!(
        released.as_deref().is_none_or(str::is_empty),
        "the Lease is released on shutdown, held by {released:?}"
    );
    let replica_leases = leases
        .list(&ListParams::default().labels(&format!("leasehold.dev/replica-of={RELEASE}")))
        .await?;
    assert!(
        replica_leases.items.is_empty(),
        "the replica removes its own Lease on shutdown:\n{}",
        replica_log()
    );

    let log_text = replica_log();
    assert!(
        !log_text.to_lowercase().contains("forbidden"),
        "the chart's RBAC denied the host something:\n{log_text}"
    );
    Ok(())
}
