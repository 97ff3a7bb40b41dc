//! What one admission review costs in the runtime alone, without HTTP: a
//! fresh instance of a component that exports `admission`, asked to
//! validate a small ConfigMap create, `reviews` times.
//!
//! ```text
//! cargo run --release -p leasehold-runtime --example review_cost -- \
//!     target/wasm32-wasip2/plugin/misbehaving.wasm [reviews]
//! TASKS=32 cargo run ...   # 32 reviews at once on two workers: reviews/s and RSS
//! COLD_MB=32 PAUSE_US=2000 cargo run ...   # each review with cold caches
//! COLD_MB=32 PAUSE_US=2000 BATCH=4 cargo run ...   # spares made four at a time
//! PERFMAP=1 perf record -e cpu-clock cargo run ...   # the plugin's functions named (`--wasm-profiler perfmap`)
//! ```
//!
//! `COLD_MB` writes that many MiB between reviews and `PAUSE_US` sleeps,
//! as a replica does between the API server's reviews while the API server
//! and etcd run on the same cores: instantiating then takes 110 µs rather
//! than 13.
//!
//! It is how the pooling allocator's settings were chosen (see
//! `Runtime::new`); the product's own figures come from `make
//! bench-admission`.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use leasehold_runtime::contract::{
    ApiError, ApplyParams, Event, Field, InvolvedObject, Level, ListParams, ObjectPatch, ObjectRef,
    StatusUpdate, TypeMeta,
};
use leasehold_runtime::{Backend, BackendFuture, HostContext, Limits, Profiler, Review, Runtime};

#[derive(Debug)]
struct Nothing;

fn refused<T: Send + 'static>() -> BackendFuture<'static, T> {
    Box::pin(std::future::ready(Err(ApiError {
        code: 405,
        reason: "No".into(),
        message: "no".into(),
    })))
}

impl Backend for Nothing {
    fn get(&self, _: TypeMeta, _: ObjectRef) -> BackendFuture<'_, Option<String>> {
        refused()
    }
    fn list(&self, _: TypeMeta, _: ListParams) -> BackendFuture<'_, String> {
        refused()
    }
    fn create(&self, _: TypeMeta, _: Option<String>, _: String) -> BackendFuture<'_, String> {
        refused()
    }
    fn replace(&self, _: TypeMeta, _: ObjectRef, _: String) -> BackendFuture<'_, String> {
        refused()
    }
    fn apply(
        &self,
        _: TypeMeta,
        _: ObjectRef,
        _: String,
        _: ApplyParams,
    ) -> BackendFuture<'_, String> {
        refused()
    }
    fn patch(&self, _: TypeMeta, _: ObjectRef, _: ObjectPatch) -> BackendFuture<'_, String> {
        refused()
    }
    fn delete(&self, _: TypeMeta, _: ObjectRef) -> BackendFuture<'_, ()> {
        refused()
    }
    fn update_status(
        &self,
        _: TypeMeta,
        _: ObjectRef,
        _: StatusUpdate,
    ) -> BackendFuture<'_, String> {
        refused()
    }
    fn emit_event(&self, _: InvolvedObject, _: Event) -> BackendFuture<'_, ()> {
        refused()
    }
    fn log(&self, _: Level, _: &str, _: &[Field], _: Option<&str>) {}
}

/// A ConfigMap create as the API server sends it to a validating webhook:
/// by then the object has its uid, creation time and managed fields.
const REQUEST: &str = r#"{"uid":"3f7e0c9a-59a5-4c62-9a3e-6d1c0b8f2e41","kind":{"group":"","version":"v1","kind":"ConfigMap"},"resource":{"group":"","version":"v1","resource":"configmaps"},"requestKind":{"group":"","version":"v1","kind":"ConfigMap"},"requestResource":{"group":"","version":"v1","resource":"configmaps"},"name":"plugin-17","namespace":"bench-admission","operation":"CREATE","userInfo":{"username":"kubernetes-admin","groups":["system:masters","system:authenticated"],"extra":{"authentication.kubernetes.io/credential-id":["X509SHA256=4b1c2f0e9d8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c"]}},"object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"plugin-17","namespace":"bench-admission","uid":"9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f","creationTimestamp":"2026-12-07T18:00:00Z","labels":{"leasehold.dev/admission":"plugin"},"managedFields":[{"manager":"admission-bench","operation":"Update","apiVersion":"v1","time":"2026-12-07T18:00:00Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:admission":{}},"f:metadata":{"f:labels":{".":{},"f:leasehold.dev/admission":{}}}}}]},"data":{"admission":"allow"}},"oldObject":null,"dryRun":false,"options":{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1","fieldManager":"admission-bench"}}"#;

fn context(backend: &Arc<dyn Backend>) -> HostContext {
    HostContext {
        backend: backend.clone(),
        config: Arc::from("{}"),
        object: None,
        allowed_hosts: Arc::default(),
    }
}

#[tokio::main(worker_threads = 2)]
async fn main() {
    let path = std::env::args().nth(1).expect("component path");
    let reviews: u32 = std::env::args()
        .nth(2)
        .map_or(20_000, |n| n.parse().unwrap());
    let profiler = match std::env::var_os("PERFMAP") {
        Some(_) => Profiler::PerfMap,
        None => Profiler::Off,
    };
    let runtime = Runtime::with_profiler(None, profiler).unwrap();
    let compiled = runtime.compile(&std::fs::read(path).unwrap()).unwrap();
    // As a replica reviews: on the engine kept for reviews.
    let compiled = runtime.for_reviews(&compiled).unwrap();
    let limits = Limits::default();
    let backend: Arc<dyn Backend> = Arc::new(Nothing);
    let (mut instantiating, mut reviewing) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    let tasks: u32 = std::env::var("TASKS").map_or(1, |t| t.parse().unwrap());
    if tasks > 1 {
        let compiled = Arc::new(compiled);
        let started = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let compiled = compiled.clone();
            let backend = backend.clone();
            handles.push(tokio::spawn(async move {
                for _ in 0..reviews / tasks {
                    let mut instance = compiled
                        .instantiate(context(&backend), &limits)
                        .await
                        .unwrap();
                    instance
                        .review(Review::Validate, REQUEST, std::time::Duration::from_secs(2))
                        .await
                        .unwrap()
                        .unwrap();
                }
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let rss: String = status
            .lines()
            .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" ") + " ")
            .collect();
        println!(
            "{tasks} tasks on 2 workers: {:.0} reviews/s; rss/hwm {rss}",
            f64::from(reviews) / started.elapsed().as_secs_f64()
        );
        return;
    }
    let mut cooling = Cooling {
        thrash: vec![
            0u8;
            std::env::var("COLD_MB").map_or(0, |t| t.parse::<usize>().unwrap()) << 20
        ],
        pause: std::env::var("PAUSE_US").map_or(0, |t| t.parse().unwrap()),
    };
    let batch: Option<NonZeroU32> = std::env::var("BATCH").ok().map(|t| t.parse().unwrap());
    if let Some(batch) = batch {
        // As a replica makes its spares: `batch` instances at once after the
        // pause, the used ones dropped first; each then reviews once.
        let rounds = reviews / batch;
        let mut used = Vec::new();
        let mut making = std::time::Duration::ZERO;
        for round in 0..rounds {
            cooling.between(round).await;
            let t = Instant::now();
            used.clear();
            let mut made = Vec::new();
            for _ in 0..batch.get() {
                made.push(
                    compiled
                        .instantiate(context(&backend), &limits)
                        .await
                        .unwrap(),
                );
            }
            making += t.elapsed();
            for mut instance in made {
                instance
                    .review(Review::Validate, REQUEST, std::time::Duration::from_secs(2))
                    .await
                    .unwrap()
                    .unwrap();
                used.push(instance);
            }
        }
        println!(
            "by {batch}: dropping and making {:.1} µs an instance",
            making.as_secs_f64() * 1e6 / f64::from(rounds * batch.get())
        );
        return;
    }
    let mut dropping = std::time::Duration::ZERO;
    let mut elapsed = std::time::Duration::ZERO;
    for round in 0..reviews {
        cooling.between(round).await;
        let t = Instant::now();
        let mut instance = compiled
            .instantiate(context(&backend), &limits)
            .await
            .unwrap();
        let t2 = Instant::now();
        let verdict = instance
            .review(Review::Validate, REQUEST, std::time::Duration::from_secs(2))
            .await
            .unwrap()
            .unwrap();
        assert!(verdict.allowed);
        reviewing += t2.elapsed();
        instantiating += t2 - t;
        let t3 = Instant::now();
        drop(instance);
        dropping += t3.elapsed();
        elapsed += t.elapsed();
    }
    eprintln!(
        "kept for the next review: {} bytes",
        runtime.review_bytes_kept()
    );
    eprintln!(
        "drop {:.1} µs",
        dropping.as_secs_f64() * 1e6 / f64::from(reviews)
    );
    let total = elapsed;
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / f64::from(reviews);
    println!(
        "per review: total {:.1} µs, instantiate {:.1} µs, review {:.1} µs (drop incl. in total)",
        per(total),
        per(instantiating),
        per(reviewing)
    );
}

/// What the API server and etcd do to a replica's caches between two
/// reviews: `COLD_MB` written, then `PAUSE_US` asleep.
struct Cooling {
    thrash: Vec<u8>,
    pause: u64,
}

impl Cooling {
    async fn between(&mut self, round: u32) {
        for byte in self.thrash.iter_mut().step_by(64) {
            *byte = byte.wrapping_add(round as u8);
        }
        if self.pause > 0 {
            tokio::time::sleep(std::time::Duration::from_micros(self.pause)).await;
        }
    }
}
