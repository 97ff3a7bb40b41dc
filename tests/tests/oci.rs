//! Wasm OCI artifacts against a real registry (the CNCF distribution
//! registry that `tools/registry.sh` builds): a component pushed by
//! `leasehold::oci` pulls back byte for byte by tag and by digest, and every
//! way a pull can go wrong comes back as the error a user can act on.

use std::time::Duration;

use leasehold::oci::{
    self, Error, OCI_MANIFEST_MEDIA_TYPE, PullOptions, PushOptions, Reference, digest_of,
};
use leasehold_tests::{TestRegistry, plugin_component};
use serde_json::json;

async fn registry() -> &'static TestRegistry {
    TestRegistry::shared()
        .await
        .unwrap_or_else(|error| panic!("cannot start the test registry: {error:#}"))
}

fn greeter() -> Vec<u8> {
    std::fs::read(plugin_component("greeter")).expect("the greeter component was built")
}

fn reference(text: &str) -> Reference {
    oci::parse(text).unwrap_or_else(|error| panic!("{error}"))
}

#[tokio::test]
async fn a_pushed_component_pulls_back_by_tag_and_by_digest() -> anyhow::Result<()> {
    let repository = registry().await.repository("greeter");
    let component = greeter();
    let tagged = reference(&format!("{repository}:1.0"));

    let pushed = oci::push(&tagged, &component, &PushOptions::default()).await?;
    assert_eq!(pushed.digest, digest_of(&component));

    let by_tag = oci::pull(&tagged, &PullOptions::default()).await?;
    assert!(by_tag.bytes == component, "pulled bytes differ from pushed");
    assert_eq!(by_tag.digest, pushed.digest);
    assert_eq!(by_tag.manifest_digest, pushed.manifest_digest);

    let pinned = tagged.clone_with_digest(pushed.manifest_digest.clone());
    let by_digest = oci::pull(&pinned, &PullOptions::default()).await?;
    assert!(by_digest.bytes == component);

    // The same component pushed again is the same artifact: no timestamps,
    // and its blobs are already there.
    let again = reference(&format!("{repository}:again"));
    let repushed = oci::push(&again, &component, &PushOptions::default()).await?;
    assert_eq!(repushed, pushed);
    Ok(())
}

#[tokio::test]
async fn a_component_can_be_pushed_by_its_manifest_digest_only() -> anyhow::Result<()> {
    let repository = registry().await.repository("by-digest");
    let component = greeter();
    let tagged = reference(&format!("{repository}:first"));
    let pushed = oci::push(&tagged, &component, &PushOptions::default()).await?;
    let other = reference(&format!("{}-copy:x", repository))
        .clone_with_digest(pushed.manifest_digest.clone());
    let copied = oci::push(&other, &component, &PushOptions::default()).await?;
    assert_eq!(copied.manifest_digest, pushed.manifest_digest);
    assert!(oci::pull(&other, &PullOptions::default()).await?.bytes == component);

    // A digest the manifest does not hash to is refused before anything is stored.
    let wrong = reference(&format!("{repository}@sha256:{}", "0".repeat(64)));
    let error = oci::push(&wrong, &component, &PushOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::DigestMismatch { .. }), "{error:?}");
    Ok(())
}

#[tokio::test]
async fn a_missing_tag_or_repository_is_not_found() -> anyhow::Result<()> {
    let repository = registry().await.repository("missing");
    oci::push(
        &reference(&format!("{repository}:present")),
        &greeter(),
        &PushOptions::default(),
    )
    .await?;

    for missing in [
        format!("{repository}:absent"),
        format!("{repository}-never-pushed:1.0"),
        format!("{repository}@sha256:{}", "0".repeat(64)),
    ] {
        match oci::pull(&reference(&missing), &PullOptions::default()).await {
            Err(Error::NotFound { reference }) => assert!(reference.starts_with(&repository)),
            other => panic!("{missing}: expected NotFound, got {other:?}"),
        }
    }
    Ok(())
}

/// Pushes an image whose single layer is a tarball, the way a container
/// image (or a Helm chart) would be.
async fn push_container_image(repository: &str, tag: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let (registry, name) = repository.split_once('/').expect("host/name");
    let base = format!("http://{registry}/v2/{name}");
    let layer = b"not a wasm component, a tarball".to_vec();
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    for blob in [&layer, &config] {
        let started = http
            .post(format!("{base}/blobs/uploads/"))
            .send()
            .await?
            .error_for_status()?;
        let location = started.headers()["location"].to_str()?.to_owned();
        let mut upload = reqwest::Url::parse(&format!("http://{registry}"))?.join(&location)?;
        upload
            .query_pairs_mut()
            .append_pair("digest", &digest_of(blob));
        http.put(upload)
            .body(blob.clone())
            .send()
            .await?
            .error_for_status()?;
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest_of(&config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest_of(&layer),
            "size": layer.len(),
        }],
    });
    http.put(format!("{base}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST_MEDIA_TYPE)
        .body(serde_json::to_vec(&manifest)?)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

#[tokio::test]
async fn an_artifact_without_a_wasm_layer_is_not_wasm() -> anyhow::Result<()> {
    let repository = registry().await.repository("container-image");
    push_container_image(&repository, "1.0").await?;
    let error = oci::pull(
        &reference(&format!("{repository}:1.0")),
        &PullOptions::default(),
    )
    .await
    .unwrap_err();
    match &error {
        Error::NotWasm { found, .. } => {
            assert_eq!(found, "application/vnd.oci.image.layer.v1.tar+gzip");
        }
        other => panic!("expected NotWasm, got {other:?}"),
    }
    assert!(
        error
            .to_string()
            .contains("found application/vnd.oci.image.layer.v1.tar+gzip"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn a_component_over_the_size_limit_is_too_large() -> anyhow::Result<()> {
    let repository = registry().await.repository("large");
    let tagged = reference(&format!("{repository}:1.0"));
    let component = greeter();
    oci::push(&tagged, &component, &PushOptions::default()).await?;
    let limit = component.len() as u64 - 1;
    let options = PullOptions {
        max_bytes: limit,
        ..PullOptions::default()
    };
    match oci::pull(&tagged, &options).await {
        Err(Error::TooLarge { limit: reported }) => assert_eq!(reported, limit),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let exact = PullOptions {
        max_bytes: component.len() as u64,
        ..PullOptions::default()
    };
    assert!(oci::pull(&tagged, &exact).await?.bytes == component);
    Ok(())
}

#[tokio::test]
async fn a_registry_nobody_listens_on_is_unreachable() -> anyhow::Result<()> {
    // A port that was free a moment ago: nothing accepts connections on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let options = PullOptions {
        timeout: Duration::from_secs(5),
        ..PullOptions::default()
    };
    let error = oci::pull(&reference(&format!("127.0.0.1:{port}/a/b:1")), &options)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Unreachable { .. }), "{error:?}");
    assert!(error.is_retryable());
    let pushed = oci::push(
        &reference(&format!("127.0.0.1:{port}/a/b:1")),
        &greeter(),
        &PushOptions::default(),
    )
    .await;
    assert!(
        matches!(pushed, Err(Error::Unreachable { .. })),
        "{pushed:?}"
    );
    Ok(())
}

/// The client `wkg` is built on, over plain HTTP to the loopback registry.
fn wasm_client() -> oci_wasm::WasmClient {
    oci_wasm::WasmClient::new(oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    }))
}

/// What `leasehold plugin push` writes, `wkg oci pull` reads (its config is
/// a `WasmConfig` naming the component's world), and what `wkg oci push`
/// writes, a Plugin can run.
#[tokio::test]
async fn artifacts_are_exchanged_with_wkg_both_ways() -> anyhow::Result<()> {
    use oci_client::secrets::RegistryAuth::Anonymous;
    let repository = registry().await.repository("wkg");
    let component = greeter();

    let ours = reference(&format!("{repository}:ours"));
    let pushed = oci::push(&ours, &component, &PushOptions::default()).await?;
    let (manifest, config, _) = wasm_client()
        .pull_manifest_and_config(&ours, &Anonymous)
        .await?;
    assert_eq!(manifest.layers[0].digest, pushed.digest);
    assert_eq!(config.layer_digests, std::slice::from_ref(&pushed.digest));
    let world = config
        .component
        .expect("the config names the component's world");
    assert!(
        world
            .exports
            .iter()
            .any(|export| export.starts_with("leasehold:controller/reconciler@")),
        "{:?}",
        world.exports
    );
    let image = wasm_client().pull(&ours, &Anonymous).await?;
    assert!(image.layers[0].data == component);

    let theirs = reference(&format!("{repository}:theirs"));
    let (config, layer) = oci_wasm::WasmConfig::from_raw_component(component.clone(), None)?;
    wasm_client()
        .push(&theirs, &Anonymous, layer, config, None)
        .await?;
    let pulled = oci::pull(&theirs, &PullOptions::default()).await?;
    assert!(pulled.bytes == component);
    Ok(())
}
