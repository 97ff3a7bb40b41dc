//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every replica runs an [`Elector`]. One of them holds the Lease and runs the
//! leader-only [`roles`]; the others follow, watching the Lease
//! so that a release is seen at once, and polling as a fallback.
//!
//! # How it works
//!
//! * **Compare-and-swap.** Acquire, renew and release are `replace` calls
//!   carrying the resourceVersion this replica last read. A stale writer gets
//!   409 Conflict and re-reads; two candidates can never both acquire.
//! * **Expiry is judged locally.** A follower considers the Lease expired
//!   `leaseDurationSeconds` after the local instant at which *it* last saw
//!   the record change (a new resourceVersion), never from `renewTime`. Clock
//!   skew between replicas therefore does not matter; only clock *rate* does.
//! * **Its own client.** Lease traffic uses a dedicated [`kube::Client`]
//!   (its own connection pool and concurrency limit), and every request has
//!   a timeout, so load elsewhere in the host cannot starve renewals.
//!
//! # Why a deposed leader never acts after someone else may
//!
//! Let `s` be the local instant at which this replica *sent* its last
//! successful acquire or renew. The API server wrote that record at some
//! real time `w >= s`, and any follower observed it at `o >= w`. A follower
//! may only take over once the record has been unchanged for
//! `leaseDuration` since `o`, i.e. not before `s + leaseDuration`.
//!
//! The leader's term is valid until `s + renewDeadline` (measured from the
//! *start* of the request, not its answer, so a slow answer only shortens the
//! term). Leader-only work checks its [`LeaderGuard`] before every action,
//! and the guard fails at that instant whether or not the election loop has
//! run (a process resumed after SIGSTOP re-validates before acting: its
//! guard compares against the monotonic clock, which kept running). When the
//! deadline passes the elector stops all leader-only work and only then
//! reports itself a follower. The margin `leaseDuration - renewDeadline`
//! (5 s with the defaults) absorbs clock-rate differences and in-flight
//! requests: each request's timeout is at most `renewDeadline / 2` and never
//! runs past the term.
//!
//! What timing alone cannot prevent: a write that a leader *sent* before its
//! deadline but that reaches the API server after another replica took
//! over. With `--fencing` (the chart's default) the API server closes that
//! window for every write made for a plugin:
//!
//! * Each term has a token, `<lease namespace>/<lease>/<holder>/<leaseTransitions>`
//!   ([`LeaderGuard::term`]): every acquisition by anyone counts a
//!   transition, so no two terms share one.
//! * The [`fence`] sends it with every request of a plugin's client (its
//!   calls, discovery, the host's finalizer patches), as an impersonation
//!   extra the API server attaches to the request's user; Plugin statuses
//!   carry it too, written as the host's own ServiceAccount impersonated
//!   with the extra.
//! * The chart's ValidatingAdmissionPolicy takes the election Lease as its
//!   parameter and refuses a create, update or delete whose token is not
//!   the Lease's current holder and transitions, naming the stale term.
//!
//! A takeover is itself a write to the Lease, so once the API server has
//! seen it, no write of the old term passes admission. What remains is the
//! policy's parameter cache: admission reads the Lease from an informer,
//! which lags the write by the watch's delivery time (measured in the chart
//! test `the_api_server_refuses_a_write_from_a_stale_term`, printed: 6.2,
//! 6.5 and 6.6 ms in three runs on loopback, the test's own polling
//! included). That lag must fit inside the margin
//! `leaseDuration - renewDeadline` (5 s by default) for the old leader's
//! writes to be refused from the first instant the new one may act: three
//! orders of magnitude to spare. A write admitted just *before* the takeover
//! can still be stored just after it (the API server's own handling time,
//! milliseconds). A host that is not a ServiceAccount (a developer's
//! kubeconfig) cannot impersonate itself without rights over users and
//! groups, so its Plugin statuses stay fenced by the clock alone.
//!
//! The end-to-end proof does not trust the replicas' word: three replicas
//! run a plugin that writes with server-side apply (no resourceVersion, so
//! no compare-and-swap on the object can refuse a late write) through
//! SIGKILL, SIGTERM, SIGSTOP, a partition and delayed delivery, and the API
//! server's audit log, ordered by resourceVersion, is checked for any
//! plugin write committed while the Lease named another holder
//! (`tests/tests/fencing.rs`, and `make chaos` for a random schedule).
//!
//! A process that finds the Lease in its own name (a restarted pod keeps
//! its identity) waits it out like anyone else's and then starts a new
//! term: its predecessor may have had writes in flight, and a continued
//! term would carry the same fencing token as theirs.
//!
//! # Handover
//!
//! On shutdown the leader asks its leader-only work to drain
//! ([`LeaderGuard::draining`]: no new reconciles, those running finish
//! within their timeout) and keeps renewing meanwhile, so the work in flight
//! completes inside the term rather than being cut off. Then it stops the
//! roles and writes an empty holder with `leaseDurationSeconds: 1`.
//! Followers see that on their watch and acquire within a round trip
//! instead of waiting for expiry.

pub mod activity;
mod config;
pub mod directory;
mod elector;
pub mod fence;
mod guard;
mod lease_client;
mod metrics;
mod record;
pub mod roles;
mod status;

pub use config::{Config, ConfigError, Options};
pub use elector::Elector;
pub use guard::{LeaderGuard, NotLeader};
pub use lease_client::{ELECTION_LABEL, LeaseClient, LeaseError, Leases};
pub use metrics::ElectionMetrics;
pub use record::LeaderRecord;
pub use status::{Role, Status};
