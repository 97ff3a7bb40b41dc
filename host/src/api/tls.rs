//! HTTPS for the API: a certificate chain and a private key from PEM files,
//! served with rustls (ring, the provider kube already uses; no OpenSSL).
//!
//! A missing, unreadable or invalid file at start-up stops the replica with
//! an error naming it. While it runs, the files are read again every
//! [`RENEWAL_CHECK`] and what they hold served from the next connection on
//! when it changed: cert-manager renews a certificate a third of its
//! lifetime before its end, and kubelet rewrites the mounted Secret, with
//! no restart. Files that changed but cannot be served are said once, and
//! the previous certificate is served until they can.
//!
//! HTTP/1.1 only unless HTTP/2 is asked for, as controller-runtime serves
//! webhooks since the HTTP/2 Rapid Reset attacks (CVE-2023-44487): the API
//! server then calls admission over HTTP/1.1 connections it keeps open.
//! Measured on `make bench-admission`, the protocol made no difference to a
//! review's latency.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::error::ErrorChain;
use super::issuer::{Issued, Issuing};

/// How the API serves HTTPS: its certificate, and whether HTTP/2 is
/// offered (`--http2`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Https {
    pub certificate: Certificate,
    pub http2: bool,
}

/// Where the API's certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Certificate {
    /// PEM files: `--tls-cert-file` and `--tls-private-key-file` (the
    /// chart's, from helm or cert-manager).
    Files { cert: PathBuf, key: PathBuf },
    /// Issued by the replicas and kept in a Secret (`--tls-secret`).
    Issued(Issuing),
}

/// The ALPN protocol name of HTTP/2.
const H2: &[u8] = b"h2";

/// Why the API's certificate could not be loaded. None is retryable: an
/// operator must fix the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing or unreadable.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate, or a malformed one.
    #[error("{} holds no valid PEM certificate", path.display())]
    Certificate {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    /// The key file holds no PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[error("{} holds no valid PEM private key", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    /// rustls refused the certificate the replicas issued.
    #[error("the certificate issued into Secret {secret} cannot be served")]
    Issued {
        secret: String,
        #[source]
        source: rustls::Error,
    },
    /// rustls refused the pair (the key does not match the certificate, or
    /// its algorithm is unsupported).
    #[error("the key in {} cannot serve the certificate in {}", key.display(), cert.display())]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// Reads both files and builds the server's TLS configuration.
pub fn load(cert: &Path, key: &Path, http2: bool) -> Result<Arc<ServerConfig>, TlsError> {
    from_pem(cert, &read(cert)?, key, &read(key)?, http2)
}

/// The server's TLS configuration from the text of the files `cert` and
/// `key` (named in errors).
fn from_pem(
    cert: &Path,
    cert_pem: &[u8],
    key: &Path,
    key_pem: &[u8],
    http2: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certificate = |source| TlsError::Certificate {
        path: cert.to_owned(),
        source,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(certificate)?;
    if chain.is_empty() {
        return Err(certificate(pem::Error::NoItemsFound));
    }
    let private_key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::Key {
        path: key.to_owned(),
        source,
    })?;
    server_config(chain, private_key, http2).map_err(|source| TlsError::Unusable {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    })
}

/// The server's TLS configuration for a certificate the replicas issued
/// into `secret` (already checked when it was settled).
pub fn serve_issued(
    issued: &Issued,
    secret: &str,
    http2: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let unusable = |source| TlsError::Issued {
        secret: secret.to_owned(),
        source,
    };
    let malformed = |error: pem::Error| unusable(rustls::Error::General(error.to_string()));
    let chain = CertificateDer::pem_slice_iter(issued.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(malformed)?;
    let key = PrivateKeyDer::from_pem_slice(issued.key.as_bytes()).map_err(malformed)?;
    server_config(chain, key, http2).map_err(unusable)
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    http2: bool,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    // An explicit provider: the process may link more than one, and then
    // rustls has no default to pick.
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
    config.alpn_protocols = if http2 {
        vec![H2.to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// How often a replica reads its certificate files again. kubelet updates
/// a mounted Secret by swapping a symlink, which a watch on the files
/// themselves misses; controller-runtime's certwatcher polls as well, as
/// often.
pub const RENEWAL_CHECK: Duration = Duration::from_secs(10);

/// The certificate files being served, read again to serve what a renewal
/// put in them.
#[derive(Debug)]
pub struct Renewal {
    cert: PathBuf,
    key: PathBuf,
    http2: bool,
    /// Both files' text as last read (served, or refused and said);
    /// `None` after they could not be read.
    seen: Option<(Vec<u8>, Vec<u8>)>,
}

/// What reading the files again found.
#[derive(Debug)]
pub enum Renewed {
    /// What the last check found, already acted on.
    Unchanged,
    /// A new certificate: serve it.
    Serve(Arc<ServerConfig>),
    /// Files that changed, or went, and cannot be served: the previous
    /// certificate stays, and this is said once.
    Refused(TlsError),
}

impl Renewal {
    /// [`load`], and what to check the files against later: what was
    /// loaded, not the files as they may have changed since.
    pub fn load(
        cert: &Path,
        key: &Path,
        http2: bool,
    ) -> Result<(Arc<ServerConfig>, Self), TlsError> {
        let mut renewal = Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            http2,
            seen: None,
        };
        let (cert_pem, key_pem) = renewal.seen.insert(renewal.read()?);
        let config = from_pem(cert, cert_pem, key, key_pem, http2)?;
        Ok((config, renewal))
    }

    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        Ok((read(&self.cert)?, read(&self.key)?))
    }

    /// Reads the files again.
    pub fn check(&mut self) -> Renewed {
        match self.read() {
            Err(error) => match self.seen.take() {
                Some(_) => Renewed::Refused(error),
                None => Renewed::Unchanged,
            },
            Ok(now) if self.seen.as_ref() == Some(&now) => Renewed::Unchanged,
            Ok(now) => {
                let (cert_pem, key_pem) = self.seen.insert(now);
                match from_pem(&self.cert, cert_pem, &self.key, key_pem, self.http2) {
                    Ok(config) => Renewed::Serve(config),
                    Err(error) => Renewed::Refused(error),
                }
            }
        }
    }

    /// Serves what the files hold whenever it changes, checking every
    /// `every`, until `stop`. A check reads two small files on the worker:
    /// less than handing it to a blocking thread would cost.
    pub async fn run(mut self, serving: RustlsConfig, every: Duration, stop: CancellationToken) {
        // At once as well: the files were loaded at start, which may be a
        // while ago (plugins compile before the API serves).
        recheck(every, stop, || match self.check() {
            Renewed::Unchanged => {}
            Renewed::Serve(config) => {
                serving.reload_from_config(config);
                info!(cert = %self.cert.display(), "serving the renewed certificate");
            }
            Renewed::Refused(error) => warn!(
                error = %ErrorChain(&error),
                "the certificate files changed but cannot be served; still serving the previous certificate"
            ),
        })
        .await;
    }
}

/// Calls `check` at once and then every `every`, until `stop`: how a
/// replica follows the files a renewal rewrites (its certificate, and the
/// CA of `--admission-ca-file`).
pub async fn recheck(every: Duration, stop: CancellationToken, mut check: impl FnMut()) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => check(),
        }
    }
}

/// Whether `config` offers HTTP/2 (so the server must speak it).
pub fn offers_http2(config: &ServerConfig) -> bool {
    config.alpn_protocols.iter().any(|protocol| protocol == H2)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pair {
        dir: PathBuf,
        files: Files,
    }

    #[derive(Clone)]
    struct Files {
        cert: PathBuf,
        key: PathBuf,
    }

    fn load_files(files: &Files) -> Result<Arc<ServerConfig>, TlsError> {
        load(&files.cert, &files.key, false)
    }

    impl Drop for Pair {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A fresh self-signed certificate and its key, written to a directory
    /// of this test's own.
    fn pair(test: &str) -> Pair {
        let dir = std::env::temp_dir().join(format!("leasehold-tls-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let files = Files {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        std::fs::write(&files.cert, issued.cert.pem()).unwrap();
        std::fs::write(&files.key, issued.signing_key.serialize_pem()).unwrap();
        Pair { dir, files }
    }

    fn message(error: &TlsError) -> String {
        let mut text = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    }

    #[test]
    fn a_certificate_and_its_key_load_for_http1_only_unless_http2_is_asked_for() {
        let pair = pair("valid");
        let config = load_files(&pair.files).unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
        assert!(!offers_http2(&config));

        let config = load(&pair.files.cert, &pair.files.key, true).unwrap();
        assert_eq!(config.alpn_protocols, [H2.to_vec(), b"http/1.1".to_vec()]);
        assert!(offers_http2(&config));
    }

    #[test]
    fn a_missing_file_is_named() {
        let pair = pair("missing");
        let files = Files {
            key: pair.dir.join("absent.key"),
            ..pair.files.clone()
        };
        let error = load_files(&files).unwrap_err();
        assert!(matches!(error, TlsError::Read { .. }));
        assert!(
            message(&error).contains("absent.key"),
            "{}",
            message(&error)
        );
    }

    #[test]
    fn a_file_that_is_not_pem_is_named() {
        let pair = pair("garbage");
        std::fs::write(&pair.files.cert, "not a certificate").unwrap();
        let error = load_files(&pair.files).unwrap_err();
        assert!(matches!(error, TlsError::Certificate { .. }));
        assert!(error.to_string().contains("tls.crt"), "{error}");

        let pair = self::pair("garbage-key");
        std::fs::write(&pair.files.key, "not a key").unwrap();
        let error = load_files(&pair.files).unwrap_err();
        assert!(matches!(error, TlsError::Key { .. }));
        assert!(error.to_string().contains("tls.key"), "{error}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let pair = pair("mismatch");
        let other = self::pair("mismatch-other");
        let files = Files {
            key: other.files.key.clone(),
            ..pair.files.clone()
        };
        let error = load_files(&files).unwrap_err();
        assert!(
            matches!(error, TlsError::Unusable { .. }),
            "{}",
            message(&error)
        );
    }

    /// `from`'s files written over `to`'s, as a renewal rewrites them.
    fn renew(to: &Files, from: &Files) {
        std::fs::copy(&from.cert, &to.cert).unwrap();
        std::fs::copy(&from.key, &to.key).unwrap();
    }

    fn renewal(files: &Files) -> Renewal {
        Renewal::load(&files.cert, &files.key, false).unwrap().1
    }

    #[test]
    fn a_renewed_certificate_is_served_once_its_files_change() {
        let served = pair("renewed");
        let renewed = self::pair("renewed-new");
        let mut renewal = renewal(&served.files);
        assert!(matches!(renewal.check(), Renewed::Unchanged));

        renew(&served.files, &renewed.files);
        let Renewed::Serve(config) = renewal.check() else {
            panic!("the renewed files were not served");
        };
        assert!(!offers_http2(&config));
        assert!(matches!(renewal.check(), Renewed::Unchanged));
    }

    #[test]
    fn a_renewal_that_cannot_be_served_is_said_once_and_the_next_good_one_served() {
        let served = pair("half-renewed");
        let renewed = self::pair("half-renewed-new");
        let mut renewal = renewal(&served.files);

        // The certificate renewed, its key not yet.
        std::fs::copy(&renewed.files.cert, &served.files.cert).unwrap();
        let Renewed::Refused(error) = renewal.check() else {
            panic!("a certificate with another's key was served");
        };
        assert!(
            matches!(error, TlsError::Unusable { .. }),
            "{}",
            message(&error)
        );
        assert!(matches!(renewal.check(), Renewed::Unchanged));

        std::fs::copy(&renewed.files.key, &served.files.key).unwrap();
        assert!(matches!(renewal.check(), Renewed::Serve(_)));
    }

    #[test]
    fn files_that_go_are_said_once_and_served_again_when_back() {
        let served = pair("gone");
        let kept = self::pair("gone-copy");
        renew(&kept.files, &served.files);
        let mut renewal = renewal(&served.files);

        std::fs::remove_file(&served.files.key).unwrap();
        let Renewed::Refused(error) = renewal.check() else {
            panic!("a missing key was not said");
        };
        assert!(message(&error).contains("tls.key"), "{}", message(&error));
        assert!(matches!(renewal.check(), Renewed::Unchanged));

        renew(&served.files, &kept.files);
        assert!(matches!(renewal.check(), Renewed::Serve(_)));
    }
}
