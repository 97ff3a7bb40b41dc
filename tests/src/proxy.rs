//! A TCP proxy in front of the API server that a test can cut, to make the
//! API server unreachable for one replica only.

use std::net::SocketAddr;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

/// Forwards 127.0.0.1:<port> to `upstream` until cut. While cut, existing
/// connections are dropped and new ones are accepted but never answered
/// (a partition, not a refusal: clients must rely on their timeouts).
#[derive(Debug)]
pub struct TcpProxy {
    address: SocketAddr,
    cut: watch::Sender<bool>,
    _accept: AbortOnDropHandle<()>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (cut, cut_rx) = watch::channel(false);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(client, upstream, cut_rx.clone()));
            }
        });
        Ok(Self {
            address,
            cut,
            _accept: AbortOnDropHandle::new(accept),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Partitions the client from the API server.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Heals the partition.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr, mut cut: watch::Receiver<bool>) {
    if *cut.borrow_and_update() {
        // Hold the connection open and silent until the partition heals,
        // then drop it: the client must have timed out by itself.
        let _ = cut.wait_for(|cut| !cut).await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.wait_for(|cut| *cut) => {}
    }
}
