//! The shared OCI registry: the CNCF distribution registry on loopback
//! (`tools/registry.sh`), for tests that pull and push wasm OCI artifacts.

use tokio::sync::OnceCell;

use crate::unique_name;

/// A running distribution registry on 127.0.0.1, plain HTTP, anonymous
/// push and pull, blobs on tmpfs. Every test of a run shares it; each test
/// keeps to its own repositories ([`repository`](Self::repository)).
#[derive(Debug)]
pub struct TestRegistry {
    address: String,
}

static SHARED: OnceCell<TestRegistry> = OnceCell::const_new();

impl TestRegistry {
    /// The registry of this test run: started by `tools/registry.sh up` if
    /// absent (building it on a new machine), reused if up.
    pub async fn shared() -> anyhow::Result<&'static TestRegistry> {
        SHARED.get_or_try_init(Self::start).await
    }

    async fn start() -> anyhow::Result<TestRegistry> {
        let address = crate::tool_up("registry.sh").await?;
        Ok(TestRegistry { address })
    }

    /// `127.0.0.1:<port>`, the registry part of a reference.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A repository name no other test uses: `<address>/leasehold-tests/<prefix>-<unique>`.
    pub fn repository(&self, prefix: &str) -> String {
        format!("{}/leasehold-tests/{}", self.address, unique_name(prefix))
    }
}
