//! The native admission webhook ([`leasehold_tests::admission::NativeWebhook`])
//! as a process of its own, so that `make bench-admission` measures it as
//! it measures a replica: a separate process the API server wakes.
//!
//! `native-webhook <cert.pem> <key.pem>`: serves HTTPS on a free loopback
//! port, prints `listening <address>` on stdout, and runs until killed.

use std::io::Write as _;

use anyhow::Context as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: native-webhook <cert.pem> <key.pem>";
    let cert = args.next().context(usage)?;
    let key = args.next().context(usage)?;
    let (address, _server) = leasehold_tests::admission::serve_native_webhook(
        std::path::Path::new(&cert),
        std::path::Path::new(&key),
    )?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening {address}")?;
        stdout.flush()?;
    }
    std::future::pending::<()>().await;
    Ok(())
}
