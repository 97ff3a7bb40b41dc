//! The replicas as their own certificate authority (`--tls-secret`): for a
//! cluster with neither cert-manager nor a chart-made certificate, the first
//! replica to start issues a CA and a serving certificate and keeps them in
//! a `kubernetes.io/tls` Secret; every replica serves that certificate, and
//! the leader writes the CA into the webhook configurations.
//!
//! Settling the Secret at start, on every replica:
//!
//! * **absent**: issue a CA and a certificate for the names, and create the
//!   Secret. Two replicas starting at once both try; the API server lets one
//!   create win, and the other reads what it created.
//! * **present and good** (it chains to its `ca.crt`, covers every name, and
//!   is valid for [`RENEW_BEFORE`] more): serve it as it is.
//! * **present but short of a name, or near its end**: issue a new
//!   certificate from the same CA (`ca.key`) and replace the Secret, on the
//!   resourceVersion it was read at; a replica that loses that race reads
//!   the winner's. The CA stays, so the webhook configurations and the
//!   replicas still serving the old certificate stay trusted.
//! * **unreadable** (a field missing or not PEM): the replica stops with the
//!   Secret and the field named; nothing is overwritten.
//!
//! The CA's key lives beside the certificate, as cert-manager's CA issuer
//! keeps it: whoever may read the Secret may mint certificates this webhook
//! trusts, so only the host's account may (the chart's Role names it). A
//! running replica does not reread the Secret: renewal happens at a
//! replica's start, so a certificate lasts [`VALIDITY`], ten years, as the
//! chart's generated one does, and no replica runs past its end; for
//! rotation without restarts, use cert-manager (`tls.certManager` in the
//! chart), whose renewed files the replicas serve as they change. Nor does
//! a running leader reread the CA: a Secret deleted while replicas run gets
//! a new CA from the next replica to start, so restart them all then
//! (`kubectl rollout restart`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tracing::info;

/// How long an issued serving certificate lasts: ten years, as the chart's
/// generated one, because a running replica does not reload a renewed
/// certificate (see the module docs).
pub const VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long the CA lasts: longer than any certificate it issues.
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// A certificate with less than this left is renewed at a replica's start.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Races lost to other replicas before giving up.
const ATTEMPTS: usize = 5;

/// What the Secret holds, by key.
const CERT: &str = "tls.crt";
const KEY: &str = "tls.key";
const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";

/// The certificate to keep: where, and for which names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issuing {
    pub namespace: String,
    pub name: String,
    /// DNS names and IP addresses it must cover.
    pub names: Vec<String>,
}

/// A certificate settled in the Secret, as PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert: String,
    pub key: String,
    /// The CA bundle that verifies `cert`.
    pub ca: String,
}

/// Why the Secret could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("cannot read or write Secret {secret}")]
    Api {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "Secret {secret} has no usable {field} ({why}); fix it, or delete the Secret to have the replicas issue a new certificate"
    )]
    Unusable {
        secret: String,
        field: &'static str,
        why: String,
    },
    #[error(
        "the certificate in Secret {secret} {why}, and the Secret holds no {CA_KEY} to issue another; replace its {CERT}, or delete the Secret"
    )]
    CannotRenew { secret: String, why: String },
    #[error("cannot issue a certificate for {names:?}")]
    Issue {
        names: Vec<String>,
        #[source]
        source: rcgen::Error,
    },
    #[error("Secret {secret} kept changing while this replica settled it ({ATTEMPTS} attempts)")]
    Contended { secret: String },
}

impl IssueError {
    /// Whether trying again may succeed: the API server unreachable,
    /// overloaded or failing, not refusing.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api {
                source: kube::Error::Api(status),
                ..
            } => status.code == 429 || status.code >= 500,
            Self::Api { .. } | Self::Contended { .. } => true,
            Self::Unusable { .. } | Self::CannotRenew { .. } | Self::Issue { .. } => false,
        }
    }
}

/// [`settle`], tried again with backoff while the API server cannot answer
/// (a replica starting beside a restarting API server), for about a minute.
pub async fn settle_patiently(
    client: kube::Client,
    issuing: &Issuing,
) -> Result<Issued, IssueError> {
    use backon::{ExponentialBuilder, Retryable};

    (|| settle(client.clone(), issuing, SystemTime::now()))
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(250))
                .with_max_delay(Duration::from_secs(8))
                .with_max_times(10)
                .with_jitter(),
        )
        .when(IssueError::is_transient)
        .notify(|error, wait| {
            tracing::warn!(
                error = %error,
                retry_in = ?wait,
                "cannot settle the API's certificate yet"
            );
        })
        .await
}

/// Makes sure the Secret holds a good certificate for `issuing`, and
/// returns it (see the module docs).
pub async fn settle(
    client: kube::Client,
    issuing: &Issuing,
    now: SystemTime,
) -> Result<Issued, IssueError> {
    let secrets: Api<Secret> = Api::namespaced(client, &issuing.namespace);
    let secret = format!("{}/{}", issuing.namespace, issuing.name);
    let api = |source| IssueError::Api {
        secret: secret.clone(),
        source,
    };
    for _ in 0..ATTEMPTS {
        let Some(stored) = secrets.get_opt(&issuing.name).await.map_err(api)? else {
            let (ca, ca_key) = issue_ca(now)?;
            let issued = issue(&ca, &ca_key, &issuing.names, now)?;
            let created = secrets
                .create(
                    &PostParams::default(),
                    &secret_of(issuing, &issued, &ca_key),
                )
                .await;
            match created {
                Ok(_) => {
                    info!(secret, names = ?issuing.names, "issued the API's certificate");
                    return Ok(issued);
                }
                // Another replica created it first: settle on theirs.
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(error) => return Err(api(error)),
            }
        };
        let held = Held::of(&stored, &secret)?;
        let Some(why) = shortfall(&held.issued, &issuing.names, now) else {
            return Ok(held.issued);
        };
        let Some(ca_key) = held.ca_key else {
            return Err(IssueError::CannotRenew { secret, why });
        };
        let renewed = issue(&held.issued.ca, &ca_key, &issuing.names, now)?;
        let mut replacement = secret_of(issuing, &renewed, &ca_key);
        replacement.metadata.resource_version = stored.metadata.resource_version.clone();
        match secrets
            .replace(&issuing.name, &PostParams::default(), &replacement)
            .await
        {
            Ok(_) => {
                info!(secret, why, "renewed the API's certificate");
                return Ok(renewed);
            }
            // Another replica renewed it first: judge theirs.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(api(error)),
        }
    }
    Err(IssueError::Contended { secret })
}

/// What a Secret holds.
struct Held {
    issued: Issued,
    ca_key: Option<String>,
}

impl Held {
    fn of(stored: &Secret, secret: &str) -> Result<Self, IssueError> {
        let unusable = |field, why: &str| IssueError::Unusable {
            secret: secret.to_owned(),
            field,
            why: why.to_owned(),
        };
        let data = stored.data.as_ref();
        let text = |field: &'static str| -> Result<Option<String>, IssueError> {
            data.and_then(|data| data.get(field))
                .map(|ByteString(bytes)| {
                    String::from_utf8(bytes.clone()).map_err(|_| unusable(field, "not text"))
                })
                .transpose()
        };
        let required = |field| text(field)?.ok_or_else(|| unusable(field, "missing"));
        let issued = Issued {
            cert: required(CERT)?,
            key: required(KEY)?,
            ca: required(CA_CERT)?,
        };
        let ca_key = text(CA_KEY)?;
        KeyPair::from_pem(&issued.key).map_err(|error| unusable(KEY, &error.to_string()))?;
        if let Some(ca_key) = &ca_key {
            KeyPair::from_pem(ca_key).map_err(|error| unusable(CA_KEY, &error.to_string()))?;
        }
        first_certificate(&issued.cert).map_err(|why| unusable(CERT, &why))?;
        first_certificate(&issued.ca).map_err(|why| unusable(CA_CERT, &why))?;
        Ok(Self { issued, ca_key })
    }
}

/// Why `issued` will not do for `names` from `now` on (it does not chain to
/// its CA, misses a name, or ends within [`RENEW_BEFORE`]); `None` when it
/// will.
fn shortfall(issued: &Issued, names: &[String], now: SystemTime) -> Option<String> {
    let certificate = match first_certificate(&issued.cert) {
        Ok(certificate) => certificate,
        Err(why) => return Some(why),
    };
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(issued.ca.as_bytes()).flatten() {
        // A CA the verifier cannot use shows as the certificate not
        // chaining, below.
        let _ = roots.add(ca);
    }
    let Ok(verifier) = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build() else {
        return Some(format!("does not chain to the CA in {CA_CERT}"));
    };
    let until = now + RENEW_BEFORE;
    let at = UnixTime::since_unix_epoch(
        until
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    for name in names {
        let Ok(server_name) = ServerName::try_from(name.as_str()) else {
            return Some(format!("cannot be checked for {name:?}"));
        };
        if let Err(error) = verifier.verify_server_cert(&certificate, &[], &server_name, &[], at) {
            let why = match error {
                rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)
                | rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext {
                    ..
                }) => format!("ends within {}", humantime::format_duration(RENEW_BEFORE)),
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. },
                ) => format!("does not cover {name}"),
                other => format!("does not verify for {name}: {other}"),
            };
            return Some(why);
        }
    }
    None
}

fn first_certificate(pem: &str) -> Result<CertificateDer<'static>, String> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| "no PEM certificate".to_owned())?
        .map_err(|error| error.to_string())
}

/// A new CA: its certificate and its key, as PEM.
fn issue_ca(now: SystemTime) -> Result<(String, String), IssueError> {
    let failed = |source| IssueError::Issue {
        names: vec!["the CA".into()],
        source,
    };
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "leasehold serving CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now.into();
    params.not_after = (now + CA_VALIDITY).into();
    let key = KeyPair::generate().map_err(failed)?;
    let certificate = params.self_signed(&key).map_err(failed)?;
    Ok((certificate.pem(), key.serialize_pem()))
}

/// A serving certificate for `names` from the CA `ca` (PEM) and its key.
fn issue(ca: &str, ca_key: &str, names: &[String], now: SystemTime) -> Result<Issued, IssueError> {
    let failed = |source| IssueError::Issue {
        names: names.to_vec(),
        source,
    };
    let ca_key = KeyPair::from_pem(ca_key).map_err(failed)?;
    // The first certificate of the bundle is the CA that signs.
    let signer =
        first_certificate(ca).map_err(|_| failed(rcgen::Error::CouldNotParseCertificate))?;
    let issuer = Issuer::from_ca_cert_der(&signer, ca_key).map_err(failed)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(failed)?;
    if let Some(first) = names.first() {
        params.distinguished_name.push(DnType::CommonName, first);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now.into();
    params.not_after = (now + VALIDITY).into();
    let key = KeyPair::generate().map_err(failed)?;
    let certificate = params.signed_by(&key, &issuer).map_err(failed)?;
    Ok(Issued {
        cert: certificate.pem(),
        key: key.serialize_pem(),
        ca: ca.to_owned(),
    })
}

fn secret_of(issuing: &Issuing, issued: &Issued, ca_key: &str) -> Secret {
    let bytes = |text: &str| ByteString(text.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(issuing.name.clone()),
            namespace: Some(issuing.namespace.clone()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "leasehold".to_owned(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                (CERT.to_owned(), bytes(&issued.cert)),
                (KEY.to_owned(), bytes(&issued.key)),
                (CA_CERT.to_owned(), bytes(&issued.ca)),
                (CA_KEY.to_owned(), bytes(ca_key)),
            ]
            .into(),
        ),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    fn issuing() -> Issuing {
        Issuing {
            namespace: "ops".into(),
            name: "leasehold-tls".into(),
            names: names(&["leasehold.ops.svc"]),
        }
    }

    fn fresh(for_names: &[&str], now: SystemTime) -> (Issued, String) {
        let (ca, ca_key) = issue_ca(now).unwrap();
        (issue(&ca, &ca_key, &names(for_names), now).unwrap(), ca_key)
    }

    #[test]
    fn an_issued_certificate_chains_to_its_ca_and_covers_every_name() {
        let now = SystemTime::now();
        let wanted = [
            "leasehold.ops.svc",
            "leasehold.ops.svc.cluster.local",
            "127.0.0.1",
        ];
        let (issued, _) = fresh(&wanted, now);
        assert_eq!(shortfall(&issued, &names(&wanted), now), None);
    }

    #[test]
    fn a_certificate_missing_a_name_falls_short_of_it() {
        let now = SystemTime::now();
        let (issued, _) = fresh(&["leasehold.ops.svc"], now);
        let why = shortfall(&issued, &names(&["leasehold.ops.svc", "10.0.0.7"]), now).unwrap();
        assert_eq!(why, "does not cover 10.0.0.7");
    }

    #[test]
    fn a_certificate_near_its_end_falls_short_and_one_a_day_older_does_not() {
        let wanted = names(&["leasehold.ops.svc"]);
        let issued_at = SystemTime::now() - VALIDITY + RENEW_BEFORE + Duration::from_secs(86_400);
        let (issued, _) = fresh(&["leasehold.ops.svc"], issued_at);
        assert_eq!(shortfall(&issued, &wanted, SystemTime::now()), None);
        let two_days_on = SystemTime::now() + Duration::from_secs(2 * 86_400);
        let why = shortfall(&issued, &wanted, two_days_on).unwrap();
        assert!(why.starts_with("ends within"), "{why}");
    }

    #[test]
    fn a_certificate_from_another_ca_does_not_chain() {
        let now = SystemTime::now();
        let (issued, _) = fresh(&["leasehold.ops.svc"], now);
        let (other_ca, _) = issue_ca(now).unwrap();
        let foreign = Issued {
            ca: other_ca,
            ..issued
        };
        let why = shortfall(&foreign, &names(&["leasehold.ops.svc"]), now).unwrap();
        assert!(why.contains("does not verify"), "{why}");
    }

    #[test]
    fn a_renewal_keeps_the_ca_so_the_old_certificate_stays_trusted() {
        let now = SystemTime::now();
        let (old, ca_key) = fresh(&["leasehold.ops.svc"], now);
        let renewed = issue(
            &old.ca,
            &ca_key,
            &names(&["leasehold.ops.svc", "10.0.0.7"]),
            now,
        )
        .unwrap();
        assert_eq!(renewed.ca, old.ca);
        assert_ne!(renewed.key, old.key);
        assert_eq!(
            shortfall(&renewed, &names(&["leasehold.ops.svc", "10.0.0.7"]), now),
            None
        );
        assert_eq!(shortfall(&old, &names(&["leasehold.ops.svc"]), now), None);
    }

    #[test]
    fn a_secret_with_a_field_missing_or_not_pem_is_named_and_left_alone() {
        let now = SystemTime::now();
        let (issued, ca_key) = fresh(&["leasehold.ops.svc"], now);
        let issuing = issuing();
        let mut secret = secret_of(&issuing, &issued, &ca_key);
        secret.data.as_mut().unwrap().remove(CA_CERT);
        let error = Held::of(&secret, "ops/leasehold-tls").err().unwrap();
        assert_eq!(
            error.to_string(),
            "Secret ops/leasehold-tls has no usable ca.crt (missing); fix it, or delete the \
             Secret to have the replicas issue a new certificate"
        );
        let mut secret = secret_of(&issuing, &issued, &ca_key);
        secret
            .data
            .as_mut()
            .unwrap()
            .insert(KEY.into(), ByteString(b"not a key".to_vec()));
        let error = Held::of(&secret, "ops/leasehold-tls").err().unwrap();
        assert!(
            matches!(error, IssueError::Unusable { field: KEY, .. }),
            "{error}"
        );
    }

    #[test]
    fn only_an_api_server_that_cannot_answer_is_worth_trying_again() {
        let api = |code| IssueError::Api {
            secret: "ops/leasehold-tls".into(),
            source: kube::Error::Api(Box::new(
                kube::core::Status::failure("no", "Reason").with_code(code),
            )),
        };
        assert!(api(503).is_transient());
        assert!(api(429).is_transient());
        assert!(!api(403).is_transient(), "a refusal is said at once");
        assert!(
            !IssueError::Unusable {
                secret: "ops/leasehold-tls".into(),
                field: CERT,
                why: "missing".into(),
            }
            .is_transient()
        );
    }

    #[test]
    fn a_secret_the_replicas_wrote_reads_back_as_issued() {
        let now = SystemTime::now();
        let (issued, ca_key) = fresh(&["leasehold.ops.svc"], now);
        let issuing = issuing();
        let secret = secret_of(&issuing, &issued, &ca_key);
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        let held = Held::of(&secret, "ops/leasehold-tls").unwrap();
        assert_eq!(held.issued.cert, issued.cert);
        assert_eq!(held.ca_key.as_deref(), Some(ca_key.as_str()));
    }
}
