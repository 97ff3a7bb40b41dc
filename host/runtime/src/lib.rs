//! The wasm runtime: one wasmtime [`Engine`] for every plugin's reconciles
//! and one for admission reviews, compiled components kept as pre-linked
//! [`ControllerPre`]s, and a fresh, bounded [`Store`] for every call into a
//! plugin.
//!
//! * **Compile once.** [`Runtime::compile`] turns a component into a
//!   [`Compiled`] plugin; the compile cache (keyed by the component's digest,
//!   see [`compile_cache`]) lets a restarted replica map the machine code
//!   instead of compiling it. Every replica compiles; only the leader
//!   instantiates.
//! * **Fresh store per call.** A reconcile gets a new store with a memory
//!   limit ([`StoreLimits`]) and a deadline. The engine's epoch ticks every
//!   [`EPOCH_TICK`] on a thread of its own while plugin code may run
//!   ([`ticker`]); at every tick a running plugin
//!   yields to the executor (so a busy plugin never holds a tokio worker,
//!   and the election keeps renewing) and traps once past its deadline. A
//!   trap, timeout or memory overrun fails that call only. The same deadline
//!   bounds every host call: a Kubernetes call still waiting at the deadline
//!   returns a `Timeout` error value, and the next tick traps, so a
//!   reconcile ends within its timeout plus one [`EPOCH_TICK`] even when
//!   the API server stalls.
//! * **Nothing ambient.** WASI is linked because Rust's standard library
//!   imports it, but the context grants no files, sockets, environment or
//!   arguments. `wasi:http` is linked too, and a request leaves only for a
//!   host the plugin's [`AllowedHosts`] name, within its deadline and call
//!   budget, once its [`Backend`] lets it go. Stdout and stderr are
//!   captured ([`output`]): forwarded to tracing after each call, and the end of stderr (a panic's message)
//!   quoted when the call traps.

mod bindings;
mod compile_cache;
mod compiler;
mod imports;
mod outbound;
mod output;
mod previous;
mod ticker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{
    Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use self::bindings::current::exports::leasehold::controller::admission;
pub use self::bindings::current::exports::leasehold::controller::admission::Verdict;
use self::bindings::current::exports::leasehold::controller::reconciler;
pub use self::bindings::current::exports::leasehold::controller::reconciler::{
    Action, GroupVersionKind, Mapping, ReconcileError, Registration, Request, Watch,
};
pub use self::bindings::current::leasehold::controller::types::ObjectRef;
use self::bindings::previous::{Controller as PreviousController, ControllerPre as PreviousPre};
use self::compile_cache::CompileCache;
pub use self::compiler::{COMPILES_AT_ONCE, Compiler};
pub use self::imports::{Backend, BackendFuture, HostContext, cut};
pub use self::outbound::{AllowedHosts, InvalidHost};
use self::output::Output;
pub use self::ticker::EPOCH_TICK;
use self::ticker::{EpochTicker, IDLE_TICKS, Running, Ticking};

/// The contract's types a [`Backend`] receives and returns, as the host's
/// bindings generate them from `wit/`.
pub mod contract {
    pub use super::bindings::current::leasehold::controller::kubernetes::{
        ApplyParams, Event, EventType, InvolvedObject, ListParams, ObjectPatch, StatusUpdate,
    };
    pub use super::bindings::current::leasehold::controller::log::{Field, Level};
    pub use super::bindings::current::leasehold::controller::types::{
        ApiError, ObjectRef, TypeMeta,
    };
}

/// The version of `wit/controller.wit` this host implements. Components
/// built for the previous minor version ([`PREVIOUS_CONTRACT_VERSION`]) run
/// too; any other (0.x semantics: each minor is its own) is refused by name.
pub const CONTRACT_VERSION: &str = "0.2.0";

/// The contract version before [`CONTRACT_VERSION`], still linked, and
/// deprecated: the next host drops it.
pub const PREVIOUS_CONTRACT_VERSION: &str = previous::VERSION;

/// Which of the linked contract versions a component was built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contract {
    /// [`CONTRACT_VERSION`].
    Current,
    /// [`PREVIOUS_CONTRACT_VERSION`]: runs unchanged, deprecated.
    Previous,
}

impl Contract {
    /// The version as the component names it, for example `0.1.0`.
    pub fn version(self) -> &'static str {
        match self {
            Self::Current => CONTRACT_VERSION,
            Self::Previous => PREVIOUS_CONTRACT_VERSION,
        }
    }

    /// Whether the next host release will stop loading it.
    pub fn deprecated(self) -> bool {
        self == Self::Previous
    }
}

impl std::fmt::Display for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "leasehold:controller@{}", self.version())?;
        if self.deprecated() {
            f.write_str(" (deprecated: rebuild against the current SDK)")?;
        }
        Ok(())
    }
}

/// Which admission check the API server asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Review {
    /// `mutate`: may answer a patch; runs before the validating webhooks.
    Mutate,
    /// `validate`: allows or denies, changes nothing.
    Validate,
}

impl Review {
    /// `mutate` or `validate`, as the export and the webhook path name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mutate => "mutate",
            Self::Validate => "validate",
        }
    }
}

/// Every interface of the contract is named `leasehold:controller/<iface>@<version>`.
const CONTRACT_PACKAGE: &str = "leasehold:controller/";

/// Instances the pooling allocator keeps slots for. Each running reconcile
/// holds one; the sum of every plugin's concurrency must stay below this.
pub const POOL_INSTANCES: u32 = 256;

/// Slots for reviews: besides the reviews running, each reviewed plugin
/// holds a batch of spare instances made ahead and the used ones dropped
/// with the next batch (four of each; see leasehold's `admission::spares`).
/// Slots are address space until used, not memory.
const REVIEW_POOL_INSTANCES: u32 = 4 * POOL_INSTANCES;

/// Ended instances whose memory is reset at once (see [`Runtime::new`]).
const DECOMMIT_BATCH: usize = 32;

/// Of an ended review's linear memory, how much at most stays mapped (the
/// pages it wrote, reset in place; the rest is decommitted), and of its
/// tables: see [`Runtime::new`]. A review of the misbehaving fixture writes
/// six pages (the top of its stack, some data, the start of its heap); the
/// JavaScript example's, its interpreter's heap.
const REVIEW_KEEP_RESIDENT: usize = 2 << 20;
const REVIEW_TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Ended reviews' slots kept with their pages, for any plugin's next
/// review: with [`REVIEW_KEEP_RESIDENT`], at most 32 MiB of written pages
/// (and the mapped image pages they read) held for reviews to come, and in
/// practice what the last sixteen reviews wrote. Four alternate while
/// reviews come one at a time (a batch of spares, then of used ones).
const REVIEW_WARM_SLOTS: u32 = 16;

/// Largest linear memory any plugin may be granted (the pool reserves this
/// much address space per slot, not physical memory).
pub const MAX_MEMORY_BYTES: usize = 512 << 20;

/// What one call into a plugin may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock budget of one reconcile, enforced by epochs.
    pub timeout: Duration,
    /// Reconciles of this plugin that may run at once.
    pub concurrency: u16,
    /// Kubernetes calls one reconcile may make; past it, each call is
    /// refused with `TooManyCalls`.
    pub max_calls: u32,
    /// Largest object a plugin may send in one call, in bytes; a larger one
    /// is refused with `RequestTooLarge` before the host parses it.
    pub max_request_bytes: usize,
}

/// The API server refuses request bodies over 3 MiB; nothing larger is
/// worth parsing.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 3 << 20;

impl Default for Limits {
    /// 64 MiB, 2 s and 4 at once: enough for a controller that handles a few
    /// objects per call, small enough that a runaway is noticed. 100 calls
    /// per reconcile: a reconcile that needs more is a loop.
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(2),
            concurrency: 4,
            max_calls: 100,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        }
    }
}

/// Why the runtime could not load or run a plugin.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine could not be configured (a host bug or an unsupported CPU).
    #[error("failed to configure the wasm engine")]
    Engine(#[source] wasmtime::Error),
    /// The bytes are a core WebAssembly module (what `wasm32-unknown-unknown`
    /// or `wasm32-wasip1` produce), not a component.
    #[error("this is a core wasm module, not a component: build the plugin for wasm32-wasip2")]
    CoreModule,
    /// The bytes are not a valid WebAssembly component. (Here and below the
    /// message quotes wasmtime's error whole, so it is not also a `source`:
    /// a chain printed with its causes would say it twice.)
    #[error("not a valid wasm component: {0:#}")]
    Compile(wasmtime::Error),
    /// The component does not target a `leasehold:controller` world of a
    /// version the host links (it imports something the host does not
    /// provide, or lacks an export).
    #[error(
        "component does not implement the leasehold:controller@{CONTRACT_VERSION} (or @{PREVIOUS_CONTRACT_VERSION}) controller world: {0:#}"
    )]
    WrongWorld(wasmtime::Error),
    /// The component was built against a version of the contract the host
    /// does not link.
    #[error(
        "component was built for leasehold:controller@{found}; this host implements @{CONTRACT_VERSION} and @{PREVIOUS_CONTRACT_VERSION} (rebuild it against the host's wit/)"
    )]
    IncompatibleContract { found: String },
    /// An admission review reached a plugin that exports no `admission`.
    #[error(
        "the plugin exports no leasehold:controller/admission: build it with the SDK's admission support (contract @{CONTRACT_VERSION})"
    )]
    NoAdmission,
    /// The plugin trapped, ran out of time, or exceeded its memory.
    /// `last_words` is the end of what it wrote to stderr (a Rust panic's
    /// message), empty if nothing. The message names the root cause only;
    /// the wasm backtrace stays in `trap` (and the debug log).
    #[error("plugin trapped: {}{}", trap.root_cause(), said(last_words))]
    Trap {
        trap: wasmtime::Error,
        last_words: String,
    },
    /// A limit is outside what the host supports.
    #[error("memory limit {requested} bytes exceeds the host maximum of {MAX_MEMORY_BYTES}")]
    MemoryLimit { requested: usize },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn said(last_words: &str) -> String {
    if last_words.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends: {last_words}")
    }
}

/// The engines and linkers shared by every plugin.
pub struct Runtime {
    /// Registrations and reconciles, on the leader.
    reconciles: Linked,
    /// Admission reviews, on every replica: the same compiled code, in a
    /// pool that keeps what a review touched (see [`Runtime::new`]).
    reviews: Linked,
    ticker: EpochTicker,
    cache: Option<CompileCache>,
}

/// An engine and the host's imports linked for it.
struct Linked {
    engine: Engine,
    linker: Linker<HostState>,
}

impl Linked {
    fn new(pool: PoolingAllocationConfig, profiler: Profiler) -> Result<Self> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.profiler(match profiler {
            Profiler::Off => wasmtime::ProfilingStrategy::None,
            Profiler::PerfMap => wasmtime::ProfilingStrategy::PerfMap,
            Profiler::JitDump => wasmtime::ProfilingStrategy::JitDump,
        });
        // Reconciles never use component-model concurrency; leaving it on
        // costs every host call several hundred nanoseconds.
        config.concurrency_support(false);
        config.epoch_interruption(true);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(Error::Engine)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(Error::Engine)?;
        // Linked for every plugin; a request leaves only for the hosts its
        // Plugin allows (see `outbound`).
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(Error::Engine)?;
        imports::add_to_linker(&mut linker).map_err(Error::Engine)?;
        previous::add_to_linker(&mut linker).map_err(Error::Engine)?;
        Ok(Self { engine, linker })
    }

    /// `component` (compiled for this engine) linked, and where its exports
    /// are.
    fn link(&self, component: &Component) -> Result<(Contract, Pre)> {
        let contract = check_contract(&self.engine, component)?;
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(Error::WrongWorld)?;
        let pre = match contract {
            Contract::Current => {
                let reconciler = reconciler::GuestIndices::new(&pre).map_err(Error::WrongWorld)?;
                // An `admission` export of the wrong shape is refused, not
                // ignored: its author meant it to be called.
                let admission = exports_interface(&self.engine, component, "admission")
                    .then(|| admission::GuestIndices::new(&pre))
                    .transpose()
                    .map_err(Error::WrongWorld)?;
                Pre::Current {
                    pre,
                    reconciler,
                    admission,
                }
            }
            Contract::Previous => Pre::Previous(PreviousPre::new(pre).map_err(Error::WrongWorld)?),
        };
        Ok((contract, pre))
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("ticking", &self.ticker.ticking())
            .finish_non_exhaustive()
    }
}

/// Whether, and how, plugin code is named to a native profiler such as
/// `perf`: compiled plugin code is anonymous memory to it otherwise, and a
/// profile of a busy replica says only "JIT".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profiler {
    /// Nothing is written (the default).
    #[default]
    Off,
    /// Every compiled function's address and name go to
    /// `/tmp/perf-<pid>.map`, which `perf top` and `perf report` read.
    PerfMap,
    /// Every compiled function's code and name go to `jit-<pid>.dump` in
    /// the working directory, for `perf record -k mono` and `perf inject
    /// --jit` (and then `perf annotate`).
    JitDump,
}

impl Runtime {
    /// Builds the engines; `cache_dir` keeps compiled code across restarts.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self> {
        Self::with_profiler(cache_dir, Profiler::Off)
    }

    /// [`Runtime::new`], with plugin code named to a native profiler.
    pub fn with_profiler(cache_dir: Option<PathBuf>, profiler: Profiler) -> Result<Self> {
        let pool = |instances: u32| {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(instances);
            pool.total_core_instances(instances * 2);
            pool.total_memories(instances * 2);
            pool.total_tables(instances * 2);
            pool.max_memory_size(MAX_MEMORY_BYTES);
            // Every reconcile and review instantiates afresh, and each
            // ended instance's memory is reset with madvise, which on a
            // multithreaded process costs a TLB shootdown on every core.
            // Resetting in batches takes most of that off. Measured once
            // while choosing, with the `review_cost` example at 32 reviews
            // at once on two workers and the batch changed by hand: 18k
            // reviews/s one by one, 27k by 8, 31k by 32, for a few MB more
            // resident at most (up to 31 slots per shard wait for their
            // reset).
            pool.decommit_batch_size(DECOMMIT_BATCH);
            pool
        };
        let reconciles = Linked::new(pool(POOL_INSTANCES), profiler)?;
        // A review's instance is fresh, and the pages it touches (its
        // stack, data and the start of its heap: about ten) would each
        // fault on first touch, which cost a review 13 of its 21 µs in
        // `review_cost`, and more with its caches cold. Reset in place
        // instead (the pages it wrote, found with PAGEMAP_SCAN where the
        // kernel has it), they stay mapped for the next review in the
        // slot: 21 → 6 µs a review hot, and 32k → 77k reviews/s at 32 at
        // once; the JavaScript example, 557 → 4.6k reviews/s. wasmtime
        // 50.0.1 also reset every page never touched (the scan reports
        // holes as written on Linux 6.18), so each review's reset wrote
        // the whole 1 MiB stack: 28 µs hot, 100 cold, and every core's
        // cache flushed; 50.0.2 asks for present pages only, and
        // `a_review_leaves_only_the_pages_it_wrote` (tests/tests/
        // containment.rs) keeps it so. Not for reconciles: every ended
        // reconcile's slot would keep its pages, and ten loaded plugins
        // cost 1 MiB each more (`make bench-scale`, measured on 50.0.1).
        let mut reviewing = pool(REVIEW_POOL_INSTANCES);
        reviewing
            .linear_memory_keep_resident(REVIEW_KEEP_RESIDENT)
            .table_keep_resident(REVIEW_TABLE_KEEP_RESIDENT)
            .pagemap_scan(wasmtime::Enabled::Auto)
            .max_unused_warm_slots(REVIEW_WARM_SLOTS);
        let reviews = Linked::new(reviewing, profiler)?;
        let ticker = EpochTicker::start(
            [reconciles.engine.clone(), reviews.engine.clone()],
            IDLE_TICKS,
        );
        Ok(Self {
            reconciles,
            reviews,
            ticker,
            cache: cache_dir.map(CompileCache::new),
        })
    }

    /// Compiles (or loads from the cache) a component and links it against
    /// the host's imports, so instantiating it later is cheap.
    pub fn compile(&self, bytes: &[u8]) -> Result<Compiled> {
        if is_core_module(bytes) {
            return Err(Error::CoreModule);
        }
        let digest = digest_of(bytes);
        let started = Instant::now();
        let cached = self
            .cache
            .as_ref()
            .and_then(|cache| cache.load(&self.reconciles.engine, &digest));
        let component = match cached {
            Some(component) => component,
            None => {
                let compiled =
                    Component::new(&self.reconciles.engine, bytes).map_err(Error::Compile)?;
                // Mapped back from the cache when it can be kept there: the
                // freshly compiled copy is all resident, the mapped one only
                // where it runs.
                self.cache
                    .as_ref()
                    .and_then(|cache| cache.store(&self.reconciles.engine, &digest, &compiled))
                    .unwrap_or(compiled)
            }
        };
        let (contract, pre) = self.reconciles.link(&component)?;
        Ok(Compiled {
            digest,
            compile_time: started.elapsed(),
            contract,
            pre: Arc::new(pre),
            ticking: self.ticker.ticking(),
        })
    }

    /// The plugin `compiled` again, for admission reviews: its code on the
    /// engine kept for reviews (mapped from the compile cache, or copied),
    /// whose instances keep the pages a review touched. Made for a plugin
    /// when it is first reviewed, so a plugin never reviewed costs nothing.
    pub fn for_reviews(&self, compiled: &Compiled) -> Result<Compiled> {
        let Pre::Current {
            pre,
            admission: Some(_),
            ..
        } = &*compiled.pre
        else {
            return Err(Error::NoAdmission);
        };
        let cached = self
            .cache
            .as_ref()
            .and_then(|cache| cache.load(&self.reviews.engine, &compiled.digest));
        let component = match cached {
            Some(component) => component,
            None => {
                let artifact = pre.component().serialize().map_err(Error::Engine)?;
                // SAFETY: `deserialize` trusts its bytes to be an artifact
                // wasmtime wrote; these were written just now, by this
                // process's wasmtime, from code it compiled or loaded (and
                // both engines compile alike: only their pools differ).
                #[allow(unsafe_code)]
                unsafe { Component::deserialize(&self.reviews.engine, &artifact) }
                    .map_err(Error::Engine)?
            }
        };
        let (contract, pre) = self.reviews.link(&component)?;
        Ok(Compiled {
            digest: compiled.digest.clone(),
            compile_time: compiled.compile_time,
            contract,
            pre: Arc::new(pre),
            ticking: self.ticker.ticking(),
        })
    }

    /// Whether no plugin code has run for a second, so the epoch ticker is
    /// parked (see [`ticker`]): the next call wakes it.
    pub fn idle(&self) -> bool {
        self.ticker.ticking().parked()
    }

    /// Bytes of linear memory that ended reviews left mapped in the slots
    /// waiting for the next review: the pages those reviews wrote, reset in
    /// place (see [`Runtime::new`]).
    pub fn review_bytes_kept(&self) -> usize {
        self.reviews
            .engine
            .pooling_allocator_metrics()
            .map_or(0, |pool| pool.unused_memory_bytes_resident())
    }

    /// Drops the compile cache's copy of the component `digest`, which no
    /// plugin of this process uses any more.
    pub fn forget(&self, digest: &str) {
        if let Some(cache) = &self.cache {
            cache.forget(digest);
        }
    }
}

/// The `sha256:<hex>` digest of `bytes`: how the runtime, the component
/// sources and OCI all name a component.
pub fn digest_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    let mut digest = String::with_capacity(7 + 64);
    digest.push_str("sha256:");
    for byte in sha2::Sha256::digest(bytes) {
        let _ = write!(digest, "{byte:02x}");
    }
    digest
}

/// A core module's preamble: the magic number and version 1. A component
/// carries the same magic with version 0x0d and layer 1.
fn is_core_module(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\0asm\x01\0\0\0")
}

/// Whether the component exports the contract's interface `name` (any
/// version).
fn exports_interface(engine: &Engine, component: &Component, name: &str) -> bool {
    let prefix = format!("{CONTRACT_PACKAGE}{name}@");
    component
        .component_type()
        .exports(engine)
        .any(|(export, _)| export.starts_with(&prefix))
}

/// Which linked contract version the component was built for; refuses, by
/// name, one built for another version, one mixing versions, or one that
/// does not export the reconciler, before linking reports the same thing
/// less plainly.
fn check_contract(engine: &Engine, component: &Component) -> Result<Contract> {
    let ty = component.component_type();
    let imports = ty.imports(engine).map(|(name, _)| name);
    let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
    let mut contract = None;
    for name in imports.chain(exports.iter().copied()) {
        let Some(interface) = name.strip_prefix(CONTRACT_PACKAGE) else {
            continue;
        };
        let version = interface.split_once('@').map_or("", |(_, version)| version);
        let this = if same_minor(version, CONTRACT_VERSION) {
            Contract::Current
        } else if same_minor(version, PREVIOUS_CONTRACT_VERSION) {
            Contract::Previous
        } else {
            return Err(Error::IncompatibleContract {
                found: version.to_owned(),
            });
        };
        if contract.is_some_and(|seen| seen != this) {
            return Err(Error::WrongWorld(wasmtime::format_err!(
                "it uses both @{CONTRACT_VERSION} and @{PREVIOUS_CONTRACT_VERSION} of the contract; build it against one"
            )));
        }
        contract = Some(this);
    }
    let reconciler = format!("{CONTRACT_PACKAGE}reconciler@");
    if !exports.iter().any(|name| name.starts_with(&reconciler)) {
        return Err(Error::WrongWorld(wasmtime::format_err!(
            "it exports no {CONTRACT_PACKAGE}reconciler (exports: {})",
            if exports.is_empty() {
                "none".to_owned()
            } else {
                exports.join(", ")
            }
        )));
    }
    Ok(contract.unwrap_or(Contract::Current))
}

/// 0.x versions are compatible within a minor version; 1.x and later within
/// a major version (the component model's semver rule).
fn same_minor(found: &str, supported: &str) -> bool {
    let parts = |version: &str| -> Option<(u64, u64)> {
        let mut numbers = version.split(['.', '-', '+']).map(str::parse::<u64>);
        Some((numbers.next()?.ok()?, numbers.next()?.ok()?))
    };
    match (parts(found), parts(supported)) {
        (Some((0, found_minor)), Some((0, minor))) => found_minor == minor,
        (Some((found_major, _)), Some((major, _))) => found_major == major && major != 0,
        _ => false,
    }
}

/// A compiled, linked plugin component, ready to instantiate.
#[derive(Clone)]
pub struct Compiled {
    /// `sha256:<hex>` of the component's bytes.
    pub digest: String,
    /// How long compiling (or loading from the cache) took.
    pub compile_time: Duration,
    /// The contract version the component was built for.
    pub contract: Contract,
    pre: Arc<Pre>,
    /// Kept ticking while its code runs.
    ticking: Ticking,
}

/// A linked component and where its exports are, per contract version.
enum Pre {
    Current {
        pre: InstancePre<HostState>,
        reconciler: reconciler::GuestIndices,
        admission: Option<admission::GuestIndices>,
    },
    Previous(PreviousPre<HostState>),
}

impl Pre {
    fn engine(&self) -> &Engine {
        match self {
            Self::Current { pre, .. } => pre.engine(),
            Self::Previous(pre) => pre.engine(),
        }
    }
}

impl Compiled {
    /// Whether the component exports `admission` (it can be asked to
    /// validate and mutate requests).
    pub fn admits(&self) -> bool {
        matches!(
            *self.pre,
            Pre::Current {
                admission: Some(_),
                ..
            }
        )
    }
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("digest", &self.digest)
            .field("compile_time", &self.compile_time)
            .field("contract", &self.contract)
            .finish_non_exhaustive()
    }
}

/// The data of one plugin [`Store`]: WASI (empty but for outbound HTTP to
/// the hosts the plugin may reach), limits and the current call.
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: Limiter,
    call: Call,
}

/// The call into the plugin now running, as its imports see it: whom they
/// answer through, until when, and what it may still use.
struct Call {
    context: HostContext,
    /// When the call must end; checked at every epoch tick and bounding
    /// every host call and outbound request the plugin makes.
    deadline: Instant,
    /// Kubernetes calls and outbound requests made so far, and the most
    /// allowed.
    calls: u32,
    max_calls: u32,
    max_request_bytes: usize,
    /// Log records written so far.
    logs: u32,
}

impl Call {
    /// Starts one call into the plugin: a fresh deadline and budgets.
    fn start(&mut self, timeout: Duration) {
        self.deadline = Instant::now() + timeout;
        self.calls = 0;
        self.logs = 0;
    }
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("context", &self.call.context)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").finish_non_exhaustive()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            // The current call decides what may leave (see `outbound`).
            hooks: &mut self.call,
        }
    }
}

/// A store's limits, remembering the largest linear memory the plugin
/// asked for and got: its high-water mark, for the plugin's metrics.
struct Limiter {
    limits: StoreLimits,
    peak: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.peak = self.peak.max(desired);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// One live instance of a plugin with its own store.
pub struct Instance {
    store: Store<HostState>,
    exports: Exports,
    output: Output,
    ticking: Ticking,
}

/// An instance's exports, per contract version.
enum Exports {
    Current {
        reconciler: reconciler::Guest,
        admission: Option<admission::Guest>,
    },
    Previous(PreviousController),
}

impl Compiled {
    /// Makes a fresh instance with `limits`, answering imports through
    /// `context`. Its deadline starts when a call starts.
    pub async fn instantiate(&self, context: HostContext, limits: &Limits) -> Result<Instance> {
        if limits.memory_bytes > MAX_MEMORY_BYTES {
            return Err(Error::MemoryLimit {
                requested: limits.memory_bytes,
            });
        }
        let output = Output::default();
        let state = HostState {
            // Deliberately empty: no preopened directories, no environment,
            // no arguments, no sockets; only the output is kept.
            wasi: WasiCtx::builder()
                .stdout(output.stdout.clone())
                .stderr(output.stderr.clone())
                .build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: Limiter {
                limits: StoreLimitsBuilder::new()
                    .memory_size(limits.memory_bytes)
                    .instances(4)
                    .trap_on_grow_failure(true)
                    .build(),
                peak: 0,
            },
            call: Call {
                context,
                deadline: Instant::now() + limits.timeout,
                calls: 0,
                max_calls: limits.max_calls,
                max_request_bytes: limits.max_request_bytes,
                logs: 0,
            },
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| &mut state.limits);
        // Every tick: past the deadline, trap; otherwise let other tasks run.
        store.epoch_deadline_callback(|store| {
            if Instant::now() >= store.data().call.deadline {
                return Err(Trap::Interrupt.into());
            }
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);
        // A component's start functions are plugin code too.
        let running = self.ticking.running();
        let exports = match &*self.pre {
            Pre::Current {
                pre,
                reconciler,
                admission,
            } => pre
                .instantiate_async(&mut store)
                .await
                .and_then(|instance| {
                    Ok(Exports::Current {
                        reconciler: reconciler.load(&mut store, &instance)?,
                        admission: admission
                            .as_ref()
                            .map(|admission| admission.load(&mut store, &instance))
                            .transpose()?,
                    })
                }),
            Pre::Previous(pre) => pre
                .instantiate_async(&mut store)
                .await
                .map(Exports::Previous),
        };
        drop(running);
        let exports = finished(&output, exports)?;
        Ok(Instance {
            store,
            exports,
            output,
            ticking: self.ticking.clone(),
        })
    }
}

impl Instance {
    /// Names the object the next calls are about, for their log lines: an
    /// instance made before its request arrived learns it here.
    pub fn regarding(&mut self, object: Option<String>) {
        self.store.data_mut().call.context.object = object;
    }

    /// The largest linear memory the instance has grown to, in bytes.
    pub fn memory_peak(&self) -> usize {
        self.store.data().limits.peak
    }

    /// Asks the plugin what it reconciles.
    pub async fn register(&mut self, timeout: Duration) -> Result<Registration> {
        let _running = start_call(&mut self.store, &self.ticking, timeout);
        let call = match &self.exports {
            Exports::Current { reconciler, .. } => reconciler.call_register(&mut self.store).await,
            Exports::Previous(controller) => controller
                .leasehold_controller_reconciler()
                .call_register(&mut self.store)
                .await
                .map(previous::registration),
        };
        finished(&self.output, call)
    }

    /// Reconciles one object (or cleans it up, with `cleanup`).
    pub async fn reconcile(
        &mut self,
        request: &Request,
        cleanup: bool,
        timeout: Duration,
    ) -> Result<std::result::Result<Action, ReconcileError>> {
        let _running = start_call(&mut self.store, &self.ticking, timeout);
        let call = match &self.exports {
            Exports::Current { reconciler, .. } if cleanup => {
                reconciler.call_cleanup(&mut self.store, request).await
            }
            Exports::Current { reconciler, .. } => {
                reconciler.call_reconcile(&mut self.store, request).await
            }
            Exports::Previous(controller) => {
                let reconciler = controller.leasehold_controller_reconciler();
                let request = previous::request(request);
                let call = if cleanup {
                    reconciler.call_cleanup(&mut self.store, &request).await
                } else {
                    reconciler.call_reconcile(&mut self.store, &request).await
                };
                call.map(previous::outcome)
            }
        };
        finished(&self.output, call)
    }

    /// Asks the plugin about one admission request: `request` is the
    /// AdmissionReview's `request` as JSON. The inner error is the plugin's
    /// own "could not decide".
    pub async fn review(
        &mut self,
        review: Review,
        request: &str,
        timeout: Duration,
    ) -> Result<std::result::Result<Verdict, String>> {
        let Exports::Current {
            admission: Some(admission),
            ..
        } = &self.exports
        else {
            return Err(Error::NoAdmission);
        };
        let _running = start_call(&mut self.store, &self.ticking, timeout);
        let call = match review {
            Review::Mutate => admission.call_mutate(&mut self.store, request).await,
            Review::Validate => admission.call_validate(&mut self.store, request).await,
        };
        finished(&self.output, call)
    }
}

/// Starts one call into the plugin: a fresh deadline and budgets, and the
/// epoch ticking until the returned guard is dropped.
fn start_call<'a>(
    store: &mut Store<HostState>,
    ticking: &'a Ticking,
    timeout: Duration,
) -> Running<'a> {
    store.data_mut().call.start(timeout);
    store.set_epoch_deadline(1);
    ticking.running()
}

/// Forwards what a call wrote, and names a trap with stderr's last words.
fn finished<T>(output: &Output, call: wasmtime::Result<T>) -> Result<T> {
    let last_words = output.forward();
    call.map_err(|trap| {
        tracing::debug!(error = format!("{trap:#}"), "plugin trapped");
        Error::Trap { trap, last_words }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_that_are_not_a_component_are_rejected_clearly() {
        let runtime = Runtime::new(None).unwrap();
        let error = runtime.compile(b"definitely not wasm").unwrap_err();
        assert!(matches!(error, Error::Compile(_)));
        assert!(
            error.to_string().starts_with("not a valid wasm component"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_core_module_is_told_to_build_for_wasip2() {
        let runtime = Runtime::new(None).unwrap();
        let module = wat::parse_str("(module)").unwrap();
        let error = runtime.compile(&module).unwrap_err();
        assert!(matches!(error, Error::CoreModule), "{error}");
        assert!(
            error
                .to_string()
                .contains("build the plugin for wasm32-wasip2")
        );
    }

    #[tokio::test]
    async fn a_component_of_another_world_is_rejected_as_such() {
        // The smallest valid component: it exports nothing.
        let runtime = Runtime::new(None).unwrap();
        let empty = wat_component();
        let error = runtime.compile(&empty).unwrap_err();
        assert!(matches!(error, Error::WrongWorld(_)), "{error}");
    }

    #[tokio::test]
    async fn a_component_built_for_another_contract_version_is_named_as_such() {
        let runtime = Runtime::new(None).unwrap();
        let newer =
            wat::parse_str(r#"(component (import "leasehold:controller/log@0.3.0" (instance)))"#)
                .unwrap();
        let error = runtime.compile(&newer).unwrap_err();
        assert!(
            matches!(&error, Error::IncompatibleContract { found } if found == "0.3.0"),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("this host implements @0.2.0 and @0.1.0")
        );
    }

    #[tokio::test]
    async fn a_component_mixing_contract_versions_is_refused() {
        let runtime = Runtime::new(None).unwrap();
        let mixed = wat::parse_str(
            r#"(component
                (import "leasehold:controller/log@0.1.0" (instance))
                (import "leasehold:controller/config@0.2.0" (instance)))"#,
        )
        .unwrap();
        let error = runtime.compile(&mixed).unwrap_err();
        assert!(
            error.to_string().contains("uses both @0.2.0 and @0.1.0"),
            "{error}"
        );
    }

    #[test]
    fn the_previous_contract_is_named_deprecated() {
        assert_eq!(Contract::Current.to_string(), "leasehold:controller@0.2.0");
        assert!(
            Contract::Previous
                .to_string()
                .starts_with("leasehold:controller@0.1.0 (deprecated")
        );
    }

    #[tokio::test]
    async fn a_component_without_the_reconciler_export_says_what_it_exports() {
        let runtime = Runtime::new(None).unwrap();
        let logger =
            wat::parse_str(r#"(component (import "leasehold:controller/log@0.1.0" (instance)))"#)
                .unwrap();
        let error = runtime.compile(&logger).unwrap_err();
        assert!(matches!(error, Error::WrongWorld(_)), "{error}");
        assert!(
            error
                .to_string()
                .contains("exports no leasehold:controller/reconciler")
        );
    }

    #[test]
    fn contract_versions_follow_the_component_model_semver_rule() {
        assert!(same_minor("0.1.0", "0.1.0"));
        assert!(same_minor("0.1.7", "0.1.0"));
        assert!(!same_minor("0.2.0", "0.1.0"));
        assert!(!same_minor("1.1.0", "0.1.0"));
        assert!(!same_minor("", "0.1.0"));
    }

    /// `(component)` in binary form: the preamble with the component layer.
    fn wat_component() -> Vec<u8> {
        vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]
    }
}
