//! A TCP load balancer on loopback: what a Service does for the API server's
//! webhook calls in a cluster, for replicas that are local processes.
//!
//! Each new connection goes to the next backend in turn; a backend that
//! refuses the connection is skipped (its replica is dead), so only
//! connections already open to a replica when it dies are lost. Those are
//! reset (not closed), which the API server's webhook client treats as a
//! transient error and retries, as it would through kube-proxy.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::AbortOnDropHandle;

/// Spreads connections over its backends in turn.
#[derive(Debug)]
pub struct Balancer {
    address: SocketAddr,
    backends: Backends,
    _accept: AbortOnDropHandle<()>,
}

type Backends = Arc<RwLock<Vec<SocketAddr>>>;

impl Balancer {
    /// Listens at once, with no backend yet (its address goes into the
    /// replicas' flags before their own addresses are known).
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let backends = Backends::default();
        let next = Arc::new(AtomicUsize::new(0));
        let shared = backends.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let first = next.fetch_add(1, Ordering::Relaxed);
                let backends = shared.read().unwrap().clone();
                tokio::spawn(forward(client, backends, first));
            }
        });
        Ok(Self {
            address,
            backends,
            _accept: AbortOnDropHandle::new(accept),
        })
    }

    /// Sends new connections to `backends` from now on.
    pub fn route_to(&self, backends: Vec<SocketAddr>) {
        *self.backends.write().unwrap() = backends;
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

async fn forward(client: TcpStream, backends: Vec<SocketAddr>, first: usize) {
    let mut server = None;
    for offset in 0..backends.len() {
        let backend = backends[(first + offset) % backends.len()];
        if let Ok(stream) = TcpStream::connect(backend).await {
            server = Some(stream);
            break;
        }
    }
    let Some(server) = server else {
        reset(client);
        return;
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let upstream = async {
        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
        let _ = to_server.shutdown().await;
        // The answers may still be coming: only the server's end ends this.
        std::future::pending::<()>().await
    };
    tokio::select! {
        () = upstream => {}
        _ = tokio::io::copy(&mut from_server, &mut to_client) => {}
    }
    // The server is done (or dead): a request still waiting on this
    // connection must fail at once, not wait out its timeout.
    if let Ok(client) = from_client.reunite(to_client) {
        reset(client);
    }
}

/// Closes with a reset: the client sees "connection reset by peer".
fn reset(client: TcpStream) {
    let _ = client.set_zero_linger();
    drop(client);
}
