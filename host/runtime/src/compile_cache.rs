//! The compile cache: compiled components kept on disk by digest, so a
//! restarted replica maps instead of compiling.
//!
//! Not wasmtime's own cache: that one keeps artifacts zstd-compressed and
//! loads one by decompressing it into the heap and copying it into fresh
//! anonymous memory, so every byte of every plugin's machine code stays
//! resident for good. Here an artifact is stored as
//! [`Component::serialize`] writes it and loaded with
//! [`Component::deserialize_file`], which maps the file: code a plugin never
//! runs is never read, the pages it runs are clean file pages the kernel
//! may drop and read again, and data segments page-aligned in the file
//! initialise linear memory straight from it. A freshly compiled component
//! is stored and mapped back at once, so it costs the same as a loaded one.
//!
//! An artifact that cannot be read back (a wasmtime or configuration
//! change, a torn or foreign file) is compiled again and replaced: the cache
//! only ever saves time. A digest the process stops using is removed from
//! the directory ([`CompileCache::forget`]), so hot reloads do not fill
//! the volume (the chart's emptyDir has a size limit past which the pod is
//! evicted); with a cache shared by replicas, one that still runs it only
//! compiles it again on its next start.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of compiled components, one file per component digest.
#[derive(Clone, Debug)]
pub(crate) struct CompileCache {
    dir: PathBuf,
}

/// What a compiled component is kept as: `<hex digest>.cwasm`.
const EXTENSION: &str = "cwasm";

impl CompileCache {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The component of `digest` compiled earlier for this engine, mapped;
    /// `None` when there is none or it cannot serve this engine.
    pub(crate) fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest);
        if !path.exists() {
            return None;
        }
        // SAFETY: `deserialize_file` trusts the file to be an artifact
        // wasmtime wrote (it checks the header, the engine's configuration
        // and the version, not the code). Only `store` writes this directory,
        // which belongs to the replica as its compile cache: the same trust
        // wasmtime's own cache places in its directory. The file is replaced
        // by rename, never written in place, so a mapping never changes
        // under a running plugin.
        #[allow(unsafe_code)]
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::info!(
                    path = %path.display(),
                    error = format!("{error:#}"),
                    "compiling again: the cached artifact does not load"
                );
                None
            }
        }
    }

    /// Stores `component` under `digest` and maps it back; `None` (the
    /// caller keeps the compiled copy in memory) when the directory cannot
    /// be written.
    pub(crate) fn store(
        &self,
        engine: &Engine,
        digest: &str,
        component: &Component,
    ) -> Option<Component> {
        let path = self.path(digest);
        if let Err(error) = self.write(&path, component) {
            tracing::warn!(
                dir = %self.dir.display(),
                error = format!("{error:#}"),
                "cannot keep a compiled component in the compile cache; a restart compiles it again"
            );
            return None;
        }
        self.load(engine, digest)
    }

    /// Removes the artifact of `digest`. Mappings of it stay valid (the
    /// kernel keeps an unlinked file for them).
    pub(crate) fn forget(&self, digest: &str) {
        let path = self.path(digest);
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::debug!(path = %path.display(), "removed from the compile cache"),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(
                path = %path.display(),
                %error,
                "cannot remove a component no plugin uses from the compile cache"
            ),
        }
    }

    /// Writes beside and renames over, so no reader sees half a file.
    fn write(&self, path: &Path, component: &Component) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let bytes = component
            .serialize()
            .map_err(|error| std::io::Error::other(format!("{error:#}")))?;
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        file.write_all(&bytes)?;
        file.persist(path).map_err(|error| error.error)?;
        Ok(())
    }

    fn path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join(format!("{hex}.{EXTENSION}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component there is, compiled.
    fn component(engine: &Engine) -> Component {
        Component::new(engine, wat::parse_str("(component)").unwrap()).unwrap()
    }

    const DIGEST: &str = "sha256:0123";

    #[test]
    fn a_stored_component_is_mapped_back_by_another_process_on_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = CompileCache::new(dir.path().join("cache"));
        assert!(cache.load(&engine, DIGEST).is_none(), "nothing stored yet");
        assert!(cache.store(&engine, DIGEST, &component(&engine)).is_some());

        let restarted = CompileCache::new(dir.path().join("cache"));
        assert!(restarted.load(&Engine::default(), DIGEST).is_some());
        assert!(
            restarted.load(&engine, "sha256:4567").is_none(),
            "another digest is another component"
        );
    }

    #[test]
    fn a_file_that_is_no_artifact_is_compiled_again_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = CompileCache::new(dir.path().to_owned());
        std::fs::write(cache.path(DIGEST), b"torn").unwrap();
        assert!(cache.load(&engine, DIGEST).is_none());
        assert!(cache.store(&engine, DIGEST, &component(&engine)).is_some());
        assert!(cache.load(&engine, DIGEST).is_some());
    }

    #[test]
    fn a_forgotten_component_leaves_the_directory_and_its_mapping_still_runs() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = CompileCache::new(dir.path().to_owned());
        let mapped = cache.store(&engine, DIGEST, &component(&engine)).unwrap();
        cache.forget(DIGEST);
        assert!(!cache.path(DIGEST).exists());
        assert!(cache.load(&engine, DIGEST).is_none());
        // The unlinked file still backs the mapping.
        let linker = wasmtime::component::Linker::<()>::new(&engine);
        linker
            .instantiate(&mut wasmtime::Store::new(&engine, ()), &mapped)
            .unwrap();
        cache.forget(DIGEST); // twice is no error
    }

    #[test]
    fn an_unwritable_directory_keeps_the_compiled_copy_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let engine = Engine::default();
        let cache = CompileCache::new(file.join("cache"));
        assert!(cache.store(&engine, DIGEST, &component(&engine)).is_none());
    }
}
