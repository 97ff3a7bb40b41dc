//! What admission tests and benchmarks share: a serving certificate for
//! loopback, an AdmissionReview as the API server sends one, and the native
//! baseline webhook (axum, the same check as the misbehaving fixture's
//! `deny` mode).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use axum::Json;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde_json::json;
use tokio_util::task::AbortOnDropHandle;

/// The order of `make bench-admission`'s three cases (0, 1, 2: no
/// webhook, the native one, the plugin) in six rounds of creates: every
/// permutation once, arranged so that, over the six and from the last
/// round into the first, each case comes right after each other case three
/// times. What a case leaves behind it then falls on the others alike.
pub const CASE_ORDERS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [0, 2, 1],
    [2, 1, 0],
    [1, 0, 2],
    [1, 2, 0],
    [2, 0, 1],
];

/// A self-signed serving certificate for 127.0.0.1 (the API server checks a
/// webhook URL's IP against it; being self-signed, it is its own CA), as
/// `tls.crt` and `tls.key` in `dir`.
pub fn serving_certificate(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let issued = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])?;
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, issued.cert.pem())?;
    std::fs::write(&key, issued.signing_key.serialize_pem())?;
    Ok((cert, key))
}

/// An HTTPS client that trusts only `cert`.
pub fn client_trusting(cert: &Path) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(cert)?)?)
        .build()?)
}

/// An AdmissionReview of the creation of ConfigMap `namespace/name` whose
/// `data.admission` is `mode`.
pub fn review_of(namespace: &str, name: &str, mode: &str) -> serde_json::Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("{namespace}-{name}"),
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "requestKind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "requestResource": {"group": "", "version": "v1", "resource": "configmaps"},
            "name": name,
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace,
                             "labels": {"leasehold.dev/admission": "bench"}},
                "data": {"admission": mode},
            },
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        }
    })
}

/// Serves `app` over HTTPS with `cert` and `key` on a free loopback port,
/// until the returned handle is dropped.
pub(crate) fn serve_https(
    app: axum::Router,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<(SocketAddr, AbortOnDropHandle<()>)> {
    let tls = crate::api_proxy::server_tls(
        &std::fs::read_to_string(cert)?,
        &std::fs::read_to_string(key)?,
    )?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let server = axum_server::from_tcp_rustls(listener, tls)?.serve(app.into_make_service());
    let server = tokio::spawn(async move {
        let _ = server.await;
    });
    Ok((address, AbortOnDropHandle::new(server)))
}

/// The native baseline: an axum webhook on 127.0.0.1 over HTTPS that
/// denies a ConfigMap whose `data.admission` is `deny`, the check the
/// misbehaving fixture makes in wasm. It runs as a process of its own
/// (the `native-webhook` binary), as a replica does: served from the
/// benchmark's own process, it answered on a runtime the benchmark's
/// creates kept awake, where a replica's sleeps between reviews.
#[derive(Debug)]
pub struct NativeWebhook {
    address: SocketAddr,
    process: tokio::process::Child,
}

/// Serves the native webhook in this process, until the handle is dropped.
pub fn serve_native_webhook(
    cert: &Path,
    key: &Path,
) -> anyhow::Result<(SocketAddr, AbortOnDropHandle<()>)> {
    let app = axum::Router::new().route("/validate", axum::routing::post(validate));
    serve_https(app, cert, key)
}

impl NativeWebhook {
    /// Starts `binary` (the `native-webhook` binary) serving with `cert`
    /// and `key`, and waits for the address it prints.
    pub async fn start(binary: &Path, cert: &Path, key: &Path) -> anyhow::Result<Self> {
        use tokio::io::AsyncBufReadExt;
        let mut process = tokio::process::Command::new(binary)
            .arg(cert)
            .arg(key)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = process.stdout.take().context("piped stdout")?;
        let line = tokio::io::BufReader::new(stdout)
            .lines()
            .next_line()
            .await?
            .context("native-webhook exited before it listened")?;
        let address = line
            .strip_prefix("listening ")
            .and_then(|address| address.parse().ok())
            .with_context(|| format!("native-webhook said {line:?}, not its address"))?;
        Ok(Self { address, process })
    }

    /// The CPU time the process has used so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        crate::replica::cpu_time(self.process.id().context("native-webhook already exited")?)
    }

    /// `https://127.0.0.1:<port>/validate`.
    pub fn url(&self) -> String {
        format!("https://{}/validate", self.address)
    }
}

async fn validate(
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(error) => return Json(AdmissionResponse::invalid(error).into_review()),
    };
    let response = AdmissionResponse::from(&request);
    let denied = request
        .object
        .as_ref()
        .is_some_and(|object| object.data["data"]["admission"] == "deny");
    let response = if denied {
        response.deny(format!("native denies {}", request.name))
    } else {
        response
    };
    Json(response.into_review())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_comes_after_each_other_case_equally_often() {
        let creates: Vec<usize> = CASE_ORDERS.iter().flatten().copied().collect();
        let mut after = [[0; 3]; 3];
        for (at, &case) in creates.iter().enumerate() {
            let before = creates[(at + creates.len() - 1) % creates.len()];
            after[before][case] += 1;
        }
        assert_eq!(after, [[0, 3, 3], [3, 0, 3], [3, 3, 0]]);
    }
}
