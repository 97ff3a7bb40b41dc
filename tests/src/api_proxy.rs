//! An HTTPS proxy in front of the API server that a test can cut, or make
//! hold requests and deliver them later: delayed delivery, as a network
//! that buffers a deposed leader's write past its term would.
//!
//! It works per request, not per byte: a request is read whole, then parked
//! while held, then sent by the proxy itself on its own connection. The
//! replica may have given up on it meanwhile (its term ended, its call was
//! cut); the request still arrives, exactly as a late packet would. (A byte
//! proxy cannot do this over TLS: the client's close would arrive with the
//! held bytes and the API server would cancel the request.)
//!
//! The proxy reaches the API server as the test cluster's admin; what the
//! API server records of each request (impersonation, its extras, the
//! user agent naming the replica) is the replica's, passed through.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::StatusCode;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::TestCluster;

/// What the proxy does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Pass,
    /// Park new requests until delivered; streams already open go on.
    Hold,
    /// A partition: new requests go unanswered and are never sent, open
    /// streams end.
    Cut,
}

/// An HTTPS proxy to the test cluster's API server on 127.0.0.1.
#[derive(Debug)]
pub struct ApiProxy {
    address: SocketAddr,
    /// The proxy's own certificate, which a client of it must trust.
    certificate: String,
    mode: watch::Sender<Mode>,
    stop: CancellationToken,
}

#[derive(Clone)]
struct Forwarder {
    upstream: String,
    client: reqwest::Client,
    mode: watch::Receiver<Mode>,
}

impl ApiProxy {
    pub async fn start(cluster: &TestCluster) -> anyhow::Result<Self> {
        let pki = cluster.pki();
        let read = |file: &str| {
            std::fs::read(pki.join(file)).with_context(|| format!("reading {file} in {pki:?}"))
        };
        let mut identity = read("admin.crt")?;
        identity.extend(read("admin.key")?);
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&read("ca.crt")?)?)
            .identity(reqwest::Identity::from_pem(&identity)?)
            .build()?;
        let issued = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])?;
        let certificate = issued.cert.pem();
        let tls = server_tls(&certificate, &issued.signing_key.serialize_pem())?;

        let (mode, mode_rx) = watch::channel(Mode::Pass);
        let forwarder = Forwarder {
            upstream: cluster.config().cluster_url.to_string(),
            client,
            mode: mode_rx,
        };
        let app = axum::Router::new().fallback(forward).with_state(forwarder);
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp_rustls(listener, tls)?
            .handle(handle.clone())
            .serve(app.into_make_service());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = server => {}
                () = stopped.cancelled() => handle.shutdown(),
            }
        });
        Ok(Self {
            address,
            certificate,
            mode,
            stop,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Writes a copy of `kubeconfig` that reaches the API server through
    /// this proxy (its server and the certificate authority to trust).
    pub fn kubeconfig(&self, kubeconfig: &Path, out: &Path) -> anyhow::Result<()> {
        let authority = out.with_extension("proxy-ca.crt");
        std::fs::write(&authority, &self.certificate)?;
        crate::kubeconfig_via(kubeconfig, self.address, Some(&authority), out)
    }

    /// Parks every new request until [`deliver`](Self::deliver).
    pub fn hold(&self) {
        self.mode.send_replace(Mode::Hold);
    }

    /// Sends the held requests, late, and passes everything again.
    pub fn deliver(&self) {
        self.mode.send_replace(Mode::Pass);
    }

    /// Partitions the client from the API server: nothing reaches it, open
    /// streams end, clients must rely on their own timeouts.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Heals the partition. What was sent during it is lost.
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Pass);
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(crate) fn server_tls(
    certificate: &str,
    key: &str,
) -> anyhow::Result<axum_server::tls_rustls::RustlsConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = vec![CertificateDer::from_pem_slice(certificate.as_bytes())?];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(axum_server::tls_rustls::RustlsConfig::from_config(
        Arc::new(config),
    ))
}

async fn forward(State(forwarder): State<Forwarder>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // The whole request first: once read, it counts as sent.
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut mode = forwarder.mode.clone();
    // Sent by a task of its own, so that a client giving up (its future
    // dropped here) does not take the request back.
    let (answer, answered) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok(parked) = mode.wait_for(|mode| *mode != Mode::Hold).await.map(|m| *m) else {
            return;
        };
        if parked == Mode::Cut {
            // Held in the partition, then lost.
            let _ = mode.wait_for(|mode| *mode != Mode::Cut).await;
            return;
        }
        let url = format!(
            "{}{}",
            forwarder.upstream.trim_end_matches('/'),
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        );
        let mut upstream = forwarder.client.request(parts.method, url).body(body);
        for (name, value) in &parts.headers {
            if !matches!(
                name.as_str(),
                "host" | "connection" | "content-length" | "transfer-encoding"
            ) {
                upstream = upstream.header(name, value);
            }
        }
        let response = match upstream.send().await {
            Ok(response) => response,
            Err(error) => {
                let _ = answer
                    .send((StatusCode::BAD_GATEWAY, format!("proxy: {error}")).into_response());
                return;
            }
        };
        let mut builder = Response::builder().status(response.status());
        for (name, value) in response.headers() {
            if !matches!(name.as_str(), "connection" | "transfer-encoding") {
                builder = builder.header(name, value);
            }
        }
        // A stream (a watch) ends when the network is cut.
        let cut = mode.clone();
        let stream = response.bytes_stream().take_until(async move {
            let mut cut = cut;
            let _ = cut.wait_for(|mode| *mode == Mode::Cut).await;
        });
        let response = builder
            .body(Body::from_stream(stream))
            .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response());
        // The client may be gone; the request was delivered all the same.
        let _ = answer.send(response);
    });
    answered
        .await
        .unwrap_or_else(|_| StatusCode::SERVICE_UNAVAILABLE.into_response())
}
