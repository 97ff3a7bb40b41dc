//! HTTPS for the API: a certificate chain and a private key from PEM files,
//! served with rustls (ring, the provider kube already uses; no OpenSSL).
//!
//! The files are read once at start-up; a missing, unreadable or invalid
//! file stops the replica with an error naming it.
//!
//! HTTP/1.1 only unless HTTP/2 is asked for, as controller-runtime serves
//! webhooks since the HTTP/2 Rapid Reset attacks (CVE-2023-44487): the API
//! server then calls admission over HTTP/1.1 connections it keeps open.
//! Measured on `make bench-admission`, the protocol made no difference to a
//! review's latency.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let certificate = |source| TlsError::Certificate {
        path: cert.to_owned(),
        source,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(certificate)?;
    if chain.is_empty() {
        return Err(certificate(pem::Error::NoItemsFound));
    }
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| TlsError::Key {
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
}
