//! The native ConfigMap mirror ([`leasehold_tests::native_mirror`]) as a
//! process of its own, so that `make bench-scale` reads its memory from
//! `/proc` apart from the benchmark's, as it reads a replica's.
//!
//! `native-mirror <namespace-selector> <concurrency> [<user to impersonate>]`,
//! with `KUBECONFIG` naming the cluster. Prints `reconciles <n>` on stdout
//! whenever the count of finished reconciles (errors included) has grown,
//! at most every 100 ms.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use leasehold_tests::native_mirror;

/// How often the count is printed (when it changed).
const REPORT_EVERY: Duration = Duration::from_millis(100);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: native-mirror <namespace-selector> <concurrency> [<user>]";
    let namespace_selector = args.next().context(usage)?;
    let concurrency = args.next().context(usage)?.parse().context(usage)?;
    let mut config = kube::Config::infer().await?;
    config.auth_info.impersonate = args.next();
    let client = kube::Client::try_from(config)?;

    let reconciles = Arc::new(AtomicU64::new(0));
    let reported = reconciles.clone();
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            tokio::time::sleep(REPORT_EVERY).await;
            let now = reported.load(Ordering::Relaxed);
            if now != last {
                last = now;
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "reconciles {now}");
                let _ = stdout.flush();
            }
        }
    });
    let config = native_mirror::Config {
        namespace_selector,
        concurrency,
    };
    native_mirror::run(client, config)
        .for_each(|_| {
            reconciles.fetch_add(1, Ordering::Relaxed);
            async {}
        })
        .await;
    Ok(())
}
