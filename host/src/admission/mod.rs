//! Admission plugins: the API tier's own work, on every replica.
//!
//! A plugin built for contract 0.2 may export `admission` (`validate`,
//! `mutate`) beside its reconciler, and its Plugin declares which requests
//! it reviews (`spec.admission`, checked in [`declaration`]). Then:
//!
//! * **every replica** answers the API server's reviews at
//!   `POST /admission/{namespace}/{plugin}/{mutate|validate}` ([`review`]),
//!   leader or not: a fresh instance per review, within the plugin's limits,
//!   its host calls made as its account and fenced to reads;
//! * **the leader** keeps a Validating/MutatingWebhookConfiguration for each
//!   such Plugin, pointing at the replicas with the CA bundle, and deletes
//!   them when the Plugin goes ([`webhooks`]).
//!
//! The API server calls webhooks over HTTPS only, so the replicas must
//! serve TLS (`--tls-cert-file`), and it must trust their certificate
//! (`--admission-ca-file`, the CA that signed it); or the replicas issue
//! both themselves into a Secret (`--tls-secret`, [`crate::api`]'s issuer).

mod declaration;
mod metrics;
mod review;
mod spares;
mod webhooks;

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{ErrorChain, recheck};

pub use self::declaration::{Declaration, Webhook};
pub use self::metrics::AdmissionMetrics;
pub use self::review::{ReviewError, Reviews};
pub use self::webhooks::{
    Endpoint, Plan, Standing, WebhookConfigs, configuration_name, plan, review_path, standings,
};

/// Admission options, flattened into `leasehold run`.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Admission")]
#[group(id = "admission-options")]
pub struct Options {
    /// The base https:// URL at which the API server reaches every replica
    /// (a load balancer in front of them), for the webhook configurations
    /// of Plugins that declare admission.
    #[arg(
        long,
        env = "LEASEHOLD_ADMISSION_URL",
        conflicts_with = "admission_service",
        value_name = "URL"
    )]
    pub admission_url: Option<String>,

    /// The Service in front of the replicas, `namespace/name:port`, for the
    /// webhook configurations (what the Helm chart sets).
    #[arg(
        long,
        env = "LEASEHOLD_ADMISSION_SERVICE",
        value_name = "NAMESPACE/NAME:PORT"
    )]
    pub admission_service: Option<String>,

    /// The PEM CA bundle the API server uses to check the replicas'
    /// certificate (written into each webhook configuration, and again
    /// when the file changes). With --tls-secret, the CA comes from the
    /// Secret.
    #[arg(
        long,
        env = "LEASEHOLD_ADMISSION_CA_FILE",
        conflicts_with = "tls_secret",
        value_name = "FILE"
    )]
    pub admission_ca_file: Option<PathBuf>,
}

/// Why the admission options cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error(
        "--admission-url must be an https:// URL (the API server calls webhooks over HTTPS only), not {0:?}"
    )]
    NotHttps(String),
    #[error(
        "--admission-service must be namespace/name:port, for example leasehold/leasehold:8443, not {0:?}"
    )]
    BadService(String),
    #[error(
        "--admission-url and --admission-service need --tls-cert-file or --tls-secret: the API server calls webhooks over HTTPS only"
    )]
    NoTls,
    #[error("cannot read the admission CA bundle {}", path.display())]
    Ca {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Options {
    /// Where the webhook configurations point, if anywhere; `serves_tls`
    /// says whether this replica serves HTTPS.
    pub fn endpoint(&self, serves_tls: bool) -> Result<Option<Endpoint>, OptionsError> {
        let endpoint = if let Some(url) = &self.admission_url {
            if !url.starts_with("https://") {
                return Err(OptionsError::NotHttps(url.clone()));
            }
            Endpoint::Url(url.clone())
        } else if let Some(service) = &self.admission_service {
            parse_service(service).ok_or_else(|| OptionsError::BadService(service.clone()))?
        } else {
            return Ok(None);
        };
        if !serves_tls {
            return Err(OptionsError::NoTls);
        }
        Ok(Some(endpoint))
    }
}

/// The PEM CA bundle at `path`, for the webhook configurations.
pub fn read_ca_bundle(path: &std::path::Path) -> Result<Vec<u8>, OptionsError> {
    std::fs::read(path).map_err(|source| OptionsError::Ca {
        path: path.to_owned(),
        source,
    })
}

/// Keeps `bundle` what the file at `path` holds, read again every `every`
/// until `stop`: a renewal that changes the CA (a self-signed certificate
/// is its own) reaches the webhook configurations as the renewed
/// certificate reaches the replicas' connections. A file that cannot be
/// read is said once, and the last bundle kept.
pub async fn follow_ca_bundle(
    path: PathBuf,
    bundle: watch::Sender<Option<Vec<u8>>>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut unreadable = false;
    recheck(every, stop, || match read_ca_bundle(&path) {
        Ok(now) => {
            unreadable = false;
            bundle.send_if_modified(|kept| {
                let changed = kept.as_ref() != Some(&now);
                if changed {
                    info!(file = %path.display(), "the admission CA bundle changed");
                    *kept = Some(now);
                }
                changed
            });
        }
        Err(error) if !unreadable => {
            unreadable = true;
            warn!(error = %ErrorChain(&error), "keeping the last admission CA bundle");
        }
        Err(_) => {}
    })
    .await;
}

fn parse_service(text: &str) -> Option<Endpoint> {
    let (namespace, rest) = text.split_once('/')?;
    let (name, port) = rest.split_once(':')?;
    let port: i32 = port
        .parse()
        .ok()
        .filter(|port| (1..=65535).contains(port))?;
    (!namespace.is_empty() && !name.is_empty()).then(|| Endpoint::Service {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_changed_ca_bundle_is_followed_and_an_unreadable_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, "first CA").unwrap();
        let (bundle, mut followed) = watch::channel(Some(b"first CA".to_vec()));
        let stop = CancellationToken::new();
        let every = Duration::from_secs(10);
        let follower = tokio::spawn(follow_ca_bundle(path.clone(), bundle, every, stop.clone()));

        std::fs::write(&path, "renewed CA").unwrap();
        tokio::time::timeout(every * 2, followed.changed())
            .await
            .expect("the renewed CA followed at the next check")
            .unwrap();
        assert_eq!(
            followed.borrow_and_update().as_deref(),
            Some(&b"renewed CA"[..])
        );

        std::fs::remove_file(&path).unwrap();
        // The paused clock moves on only once the follower waits: three
        // checks of a missing file.
        tokio::time::sleep(every * 3).await;
        assert!(!followed.has_changed().unwrap());
        assert_eq!(followed.borrow().as_deref(), Some(&b"renewed CA"[..]));

        stop.cancel();
        follower.await.unwrap();
    }

    fn options(url: Option<&str>, service: Option<&str>) -> Options {
        Options {
            admission_url: url.map(str::to_owned),
            admission_service: service.map(str::to_owned),
            admission_ca_file: None,
        }
    }

    #[test]
    fn no_endpoint_means_no_webhook_configurations() {
        assert_eq!(options(None, None).endpoint(false).unwrap(), None);
    }

    #[test]
    fn a_service_endpoint_is_namespace_name_and_port() {
        assert_eq!(
            options(None, Some("leasehold/leasehold:8443"))
                .endpoint(true)
                .unwrap(),
            Some(Endpoint::Service {
                namespace: "leasehold".into(),
                name: "leasehold".into(),
                port: 8443,
            })
        );
        for bad in [
            "leasehold",
            "leasehold/leasehold",
            "/x:1",
            "a/b:0",
            "a/b:http",
        ] {
            let error = options(None, Some(bad)).endpoint(true).unwrap_err();
            assert!(
                error
                    .to_string()
                    .starts_with("--admission-service must be namespace/name:port"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn webhooks_need_https_on_both_ends() {
        let error = options(Some("http://127.0.0.1:8080"), None)
            .endpoint(true)
            .unwrap_err();
        assert!(matches!(error, OptionsError::NotHttps(_)), "{error}");
        let error = options(Some("https://127.0.0.1:8443"), None)
            .endpoint(false)
            .unwrap_err();
        assert!(matches!(error, OptionsError::NoTls), "{error}");
    }
}
