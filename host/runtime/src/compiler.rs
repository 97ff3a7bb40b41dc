//! Compiling components once per process: every caller — the Plugin
//! catalogue, manifest plugins, upload validation, `plugin validate`, the
//! author harness — goes through one [`Compiler`], so a component is
//! compiled once however many paths bring it.
//!
//! Compiling is seconds of CPU: it runs on a blocking thread, a few at a
//! time, so the async workers keep serving the API and renewing the Lease.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OnceCell, Semaphore};

use crate::{Compiled, Error, Result, Runtime, digest_of};

/// Compiles at once, at most: each takes a core, and a replica has others to
/// keep busy (serving, renewing).
pub const COMPILES_AT_ONCE: usize = 2;

/// The process's compile service: one per [`Runtime`], shared by cloning.
#[derive(Clone)]
pub struct Compiler {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Arc<Runtime>,
    permits: Semaphore,
    /// By digest. A cell is filled by the first compile that succeeds; the
    /// callers that arrive meanwhile wait for it instead of compiling again.
    compiled: Mutex<HashMap<String, Arc<OnceCell<Compiled>>>>,
}

impl std::fmt::Debug for Compiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiler")
            .field("components", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl Compiler {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Self {
            inner: Arc::new(Inner {
                runtime,
                permits: Semaphore::new(COMPILES_AT_ONCE),
                compiled: Mutex::default(),
            }),
        }
    }

    /// The runtime the components are compiled for.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.inner.runtime
    }

    /// The component `bytes`, compiled and linked; what was compiled before
    /// under the same digest is returned at once. A refusal is not kept:
    /// the same bytes are tried again next time.
    pub async fn compile(&self, bytes: impl Into<Arc<[u8]>>) -> Result<Compiled> {
        let bytes: Arc<[u8]> = bytes.into();
        let digest = digest_of(&bytes);
        let cell = self.lock().entry(digest).or_default().clone();
        cell.get_or_try_init(|| async {
            let _permit = self.inner.permits.acquire().await.map_err(|_| {
                Error::Engine(wasmtime::format_err!("the compile service is closed"))
            })?;
            let runtime = self.inner.runtime.clone();
            tokio::task::spawn_blocking(move || {
                let compiled = runtime.compile(&bytes);
                release_free_heap();
                compiled
            })
            .await
            .map_err(|error| Error::Engine(wasmtime::format_err!("compile task: {error}")))?
        })
        .await
        .cloned()
    }

    /// Forgets the compiled code of every digest `keep` refuses (plugins
    /// that are gone or changed), so its memory and its compile cache file
    /// go.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|digest, _| {
            let kept = keep(digest);
            if !kept {
                self.inner.runtime.forget(digest);
            }
            kept
        });
    }

    /// The digests compiled (or being compiled) now.
    #[cfg(test)]
    fn digests(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<OnceCell<Compiled>>>> {
        self.inner
            .compiled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Returns to the system the heap pages a compile freed. Cranelift
/// allocates tens of megabytes per component on wasmtime's compile threads
/// and frees them there, where glibc keeps them in those threads' arenas:
/// ten distinct ConfigMap mirrors left ~34 MB resident that loading the
/// same ten from the compile cache does not. `malloc_trim` walks every
/// arena and releases free pages (madvise); it takes milliseconds, a
/// compile hundreds. Other C libraries return memory on their own terms.
#[allow(unsafe_code)]
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only releases memory the
    // allocator itself holds free, under the allocator's own locks: sound
    // from any thread, at any time, with any allocations live.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiler() -> Compiler {
        Compiler::new(Arc::new(Runtime::new(None).unwrap()))
    }

    #[tokio::test]
    async fn a_refused_component_is_not_remembered_as_compiled() {
        let compiler = compiler();
        let error = compiler.compile(b"not wasm".to_vec()).await.unwrap_err();
        assert!(matches!(error, Error::Compile(_)), "{error}");
        // The failed cell stays empty: asking again compiles again.
        let again = compiler.compile(b"not wasm".to_vec()).await.unwrap_err();
        assert!(matches!(again, Error::Compile(_)), "{again}");
    }

    #[tokio::test]
    async fn retain_forgets_digests_it_is_told_to_drop() {
        let compiler = compiler();
        let _ = compiler.compile(b"one".to_vec()).await;
        let _ = compiler.compile(b"two".to_vec()).await;
        let keep = digest_of(b"one");
        compiler.retain(|digest| digest == keep);
        assert_eq!(compiler.digests(), vec![keep]);
    }
}
