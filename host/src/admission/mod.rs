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
mod webhooks;

use std::path::PathBuf;

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
    /// certificate (written into each webhook configuration). With
    /// --tls-secret, the CA comes from the Secret.
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
