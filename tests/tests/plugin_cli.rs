//! `leasehold plugin`, run as the real binary: a scaffolded crate (or, with
//! `--lang js`, npm package) builds into a component the host accepts and
//! passes its own test, a component runs offline on the harness, bad
//! components are refused with the reason, and push and deploy land in a
//! real registry and API server.

use std::path::Path;
use std::process::Output;
use std::time::Instant;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use leasehold::plugins::Plugin;
use leasehold_tests::fixtures::install_plugin_crd;
use leasehold_tests::js_plugin::js_plugin_component;
use leasehold_tests::{
    TestCluster, TestRegistry, leasehold_binary, plugin_component, repo_root, unique_name,
};

/// Runs `leasehold plugin <args>` with the test cluster's kubeconfig.
async fn plugin(args: &[&str]) -> Output {
    plugin_in(Path::new("."), args).await
}

async fn plugin_in(dir: &Path, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(leasehold_binary());
    command.current_dir(dir).arg("plugin").args(args);
    // No backtraces in the messages the tests read.
    command.env("RUST_BACKTRACE", "0").env("NO_COLOR", "1");
    command.output().await.expect("running leasehold")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts the command failed and said `expected` on stderr, once: the
/// error is printed one time, and no cause repeats inside its own message.
fn assert_fails_with(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "succeeded: {}", stdout(output));
    assert_eq!(
        stderr.matches(expected).count(),
        1,
        "{expected:?} not said exactly once in:\n{stderr}"
    );
}

fn assert_succeeds(output: &Output) {
    assert!(
        output.status.success(),
        "failed ({}):\n{}\n{}",
        output.status,
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn mirror() -> String {
    plugin_component("configmap-mirror")
        .to_string_lossy()
        .into_owned()
}

/// Runs `plugin new NAME ARGS`, then `plugin build`, `plugin validate`
/// and `plugin test` on the crate, as an author would; returns the crate's
/// path and what validate printed.
async fn scaffold_and_check(
    dir: &Path,
    name: &str,
    args: &[&str],
) -> anyhow::Result<(String, String)> {
    let crate_dir = dir.join(name);
    let crate_path = crate_dir.to_str().unwrap();
    // Builds share a target directory across runs, so only the first run
    // compiles the SDK's dependencies.
    let target = repo_root().join("target/plugin-cli");
    let started = Instant::now();

    let mut new = vec!["new", name, "--path", crate_path];
    new.extend_from_slice(args);
    assert_succeeds(&plugin(&new).await);
    let mut build = tokio::process::Command::new(leasehold_binary());
    build
        .args(["plugin", "build", "--path", crate_path])
        .env("CARGO_TARGET_DIR", &target);
    let built = build.output().await?;
    assert_succeeds(&built);
    eprintln!("plugin new to built component: {:?}", started.elapsed());
    let component = target.join(format!(
        "wasm32-wasip2/plugin/{}.wasm",
        name.replace('-', "_")
    ));
    assert!(stdout(&built).contains(&format!("component: {}", component.display())));
    assert!(stdout(&built).contains("digest:    sha256:"));

    let validated = plugin(&["validate", component.to_str().unwrap()]).await;
    assert_succeeds(&validated);

    let mut test = tokio::process::Command::new(leasehold_binary());
    test.args(["plugin", "test", "--path", crate_path])
        .env("CARGO_TARGET_DIR", &target);
    assert_succeeds(&test.output().await?);
    Ok((crate_path.to_owned(), stdout(&validated)))
}

#[tokio::test]
async fn a_new_plugin_builds_passes_its_test_and_validates() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;

    let (crate_path, report) = scaffold_and_check(dir.path(), "hello", &[]).await?;

    for expected in [
        "contract:  leasehold:controller@0.2.0",
        "admission: (none)",
        "name:      hello",
        "primary:   v1/ConfigMap",
        "selector:  example.com/hello=true",
    ] {
        assert!(report.contains(expected), "{expected:?} not in:\n{report}");
    }
    // A second `new` into the same directory would overwrite the crate.
    let again = plugin(&["new", "hello", "--path", crate_path.as_str()]).await;
    assert_fails_with(&again, "exists and is not empty");
    Ok(())
}

#[tokio::test]
async fn a_new_plugin_with_admission_builds_passes_its_tests_and_exports_both_halves()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;

    let (_, report) = scaffold_and_check(dir.path(), "hello-check", &["--admission"]).await?;

    for expected in [
        "contract:  leasehold:controller@0.2.0",
        "admission: validate, mutate",
        "name:      hello-check",
        "selector:  example.com/hello-check=true",
    ] {
        assert!(report.contains(expected), "{expected:?} not in:\n{report}");
    }
    Ok(())
}

#[tokio::test]
async fn names_that_are_not_dns_labels_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = plugin_in(dir.path(), &["new", "My_Plugin"]).await;
    assert_fails_with(
        &output,
        "invalid plugin name \"My_Plugin\": must be a DNS label",
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing was written"
    );
}

/// What an author does with `--lang js`: `new` (with `args`), `build`
/// (npm install, npm run build), `validate`, `test` (npm test: the
/// component on the harness through `leasehold plugin run`); returns the
/// package's path, what validate printed and what test printed. Needs
/// Node.js and npm.
async fn scaffold_and_check_js(
    dir: &Path,
    name: &str,
    args: &[&str],
) -> anyhow::Result<(String, String, String)> {
    let package = dir.join(name);
    let path = package.to_str().unwrap();
    let started = Instant::now();

    let mut new = vec!["new", name, "--lang", "js", "--path", path];
    new.extend_from_slice(args);
    let created = plugin(&new).await;
    assert_succeeds(&created);
    assert!(stdout(&created).contains("using the SDK source in"));
    let built = plugin(&["build", "--path", path]).await;
    assert_succeeds(&built);
    eprintln!(
        "plugin new --lang js {args:?} to built component: {:?}",
        started.elapsed()
    );
    let component = package.join(format!("dist/{name}.wasm"));
    assert!(
        stdout(&built).contains(&format!("component: {}", component.display())),
        "{}",
        stdout(&built)
    );

    let validated = plugin(&["validate", component.to_str().unwrap()]).await;
    assert_succeeds(&validated);

    let tested = plugin(&["test", "--path", path]).await;
    assert_succeeds(&tested);
    Ok((path.to_owned(), stdout(&validated), stdout(&tested)))
}

#[tokio::test]
async fn a_new_javascript_plugin_builds_passes_its_test_and_validates() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;

    let (path, report, tested) = scaffold_and_check_js(dir.path(), "hello-js", &[]).await?;

    for expected in [
        "contract:  leasehold:controller@0.2.0\n",
        "admission: (none)",
        "name:      hello-js",
        "primary:   v1/ConfigMap",
        "selector:  example.com/hello-js=true",
    ] {
        assert!(report.contains(expected), "{expected:?} not in:\n{report}");
    }
    for expected in ["# pass 1\n", "# fail 0\n"] {
        assert!(tested.contains(expected), "{expected:?} not in:\n{tested}");
    }

    let again = plugin(&["new", "hello-js", "--lang", "js", "--path", &path]).await;
    assert_fails_with(&again, "exists and is not empty");
    Ok(())
}

/// `--lang js --admission`: built for `controller-with-admission`, so the
/// component exports the check, and its npm test reviews it offline.
#[tokio::test]
async fn a_new_javascript_plugin_with_admission_builds_passes_its_tests_and_exports_both_halves()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;

    let (_, report, tested) =
        scaffold_and_check_js(dir.path(), "hello-check-js", &["--admission"]).await?;

    for expected in [
        "contract:  leasehold:controller@0.2.0\n",
        "admission: validate, mutate",
        "name:      hello-check-js",
        "selector:  example.com/hello-check-js=true",
    ] {
        assert!(report.contains(expected), "{expected:?} not in:\n{report}");
    }
    // The reconciler's test and the admission check's two.
    for expected in [
        " - a labelled ConfigMap is greeted as configured\n",
        " - a label that is not true or false is denied with the reason\n",
        " - true, false, no label and a delete are allowed\n",
        "# pass 3\n",
        "# fail 0\n",
    ] {
        assert!(tested.contains(expected), "{expected:?} not in:\n{tested}");
    }
    Ok(())
}

#[tokio::test]
async fn a_new_plugin_refuses_an_unknown_language_a_bad_name_and_a_missing_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let output = plugin_in(dir.path(), &["new", "hello", "--lang", "go"]).await;
    assert_fails_with(&output, "invalid value 'go' for '--lang <LANG>'");
    assert_fails_with(&output, "[possible values: rust, js]");

    let output = plugin_in(dir.path(), &["new", "My_Plugin", "--lang", "js"]).await;
    assert_fails_with(
        &output,
        "invalid plugin name \"My_Plugin\": must be a DNS label",
    );
    let output = plugin_in(
        dir.path(),
        &["new", "hello", "--lang", "js", "--sdk-path", "/nowhere"],
    )
    .await;
    assert_fails_with(
        &output,
        "@leasehold/sdk not found at /nowhere (pass --sdk-path DIR)",
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing was written"
    );
}

/// `plugin run` once: fixtures in (YAML), every primary reconciled, JSON
/// out with each reconcile's calls and the resulting objects.
#[tokio::test]
async fn run_reconciles_fixtures_offline_and_reports_calls_and_objects() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fixtures = dir.path().join("config-maps.yaml");
    std::fs::write(
        &fixtures,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {namespace: default, name: selected, labels: {team: a}}\ndata: {a: '1'}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {namespace: default, name: ignored}\n",
    )?;
    let component = js_plugin_component();
    let output = plugin(&[
        "run",
        component.to_str().unwrap(),
        "--config",
        r#"{"selector": "team", "labels": {"tier": "web"}}"#,
        "--object",
        fixtures.to_str().unwrap(),
    ])
    .await;
    assert_succeeds(&output);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(report["registration"]["labelSelector"], "team");
    let reconciles = report["reconciles"].as_array().unwrap();
    // Every stored ConfigMap, in order; the unselected one is absent to the plugin.
    assert_eq!(reconciles[0]["reference"]["name"], "ignored");
    assert_eq!(reconciles[0]["calls"], serde_json::json!([]));
    assert_eq!(reconciles[1]["action"], serde_json::json!({"done": true}));
    assert_eq!(
        reconciles[1]["calls"],
        serde_json::json!([
            "apply v1/ConfigMap default/selected -> ok",
            "emit-event v1/ConfigMap default/selected -> ok"
        ])
    );
    let selected = &report["objects"][1];
    assert_eq!(selected["metadata"]["labels"]["tier"], "web");
    assert_eq!(
        selected["metadata"]["annotations"]["leasehold.dev/keys"],
        "1"
    );

    let output = plugin(&["run", component.to_str().unwrap(), "--config", "[]"]).await;
    assert_fails_with(&output, "--config must be a JSON object: not an object");
    Ok(())
}

#[tokio::test]
async fn validate_refuses_what_is_not_a_controller_component_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_string_lossy().into_owned()
    };
    let garbage = file("garbage.wasm", b"definitely not wasm");
    let module = file("module.wasm", &wat::parse_str("(module)").unwrap());
    let empty = file("empty.wasm", &wat::parse_str("(component)").unwrap());
    let newer = file(
        "newer.wasm",
        &wat::parse_str(r#"(component (import "leasehold:controller/log@0.3.0" (instance)))"#)
            .unwrap(),
    );

    let output = plugin(&["validate", &garbage]).await;
    assert_fails_with(&output, "garbage.wasm is not a usable plugin");
    assert_fails_with(&output, "not a valid wasm component");

    let output = plugin(&["validate", &module]).await;
    assert_fails_with(
        &output,
        "this is a core wasm module, not a component: build the plugin for wasm32-wasip2",
    );

    let output = plugin(&["validate", &empty]).await;
    assert_fails_with(
        &output,
        "does not implement the leasehold:controller@0.2.0 (or @0.1.0) controller world",
    );
    assert_fails_with(&output, "exports no leasehold:controller/reconciler");

    let output = plugin(&["validate", &newer]).await;
    assert_fails_with(&output, "built for leasehold:controller@0.3.0");

    let output = plugin(&["validate", "/absent.wasm"]).await;
    assert_fails_with(&output, "cannot read /absent.wasm");
}

#[tokio::test]
async fn push_refuses_a_bad_component_and_names_an_unreachable_registry() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"nope").unwrap();
    let output = plugin(&["push", garbage.to_str().unwrap(), "127.0.0.1:1/x/y:1"]).await;
    assert_fails_with(&output, "not a valid wasm component");

    // Port 1 on loopback: nothing listens, the connection is refused.
    let output = plugin(&["push", &mirror(), "127.0.0.1:1/leasehold/mirror:1"]).await;
    assert_fails_with(&output, "cannot push to 127.0.0.1:1/leasehold/mirror:1");
    assert_fails_with(&output, "registry 127.0.0.1:1 unreachable");
}

#[tokio::test]
async fn a_pushed_component_deploys_as_a_plugin_pointing_at_the_artifact() -> anyhow::Result<()> {
    let registry = TestRegistry::shared().await?;
    let cluster = TestCluster::shared().await;
    let client = cluster.client()?;
    install_plugin_crd(&client).await?;
    let namespace = cluster.namespace("plugin-cli").await?;
    let reference = format!("{}:1.0", registry.repository("mirror"));

    let pushed = plugin(&["push", &mirror(), &reference]).await;
    assert_succeeds(&pushed);
    assert!(stdout(&pushed).contains("manifest:  sha256:"));

    let name = unique_name("pushed");
    let deployed = deploy(
        cluster,
        &[
            "--oci",
            &reference,
            "--insecure",
            "--name",
            &name,
            "--namespace",
            &namespace,
            "--service-account",
            "mirror",
            "--config",
            r#"{"namespaceSelector":"mirror=yes"}"#,
        ],
    )
    .await;
    assert_succeeds(&deployed);

    let plugin = Api::<Plugin>::namespaced(client, &namespace)
        .get(&name)
        .await?;
    let oci = plugin.spec.source.oci.expect("an oci source");
    assert_eq!(oci.reference, reference);
    assert!(oci.insecure);
    assert_eq!(plugin.spec.service_account_name, "mirror");
    assert_eq!(
        plugin.spec.config,
        Some(serde_json::json!({"namespaceSelector": "mirror=yes"}))
    );
    Ok(())
}

#[tokio::test]
async fn deploying_a_file_stores_it_and_points_the_plugin_at_its_digest() -> anyhow::Result<()> {
    let cluster = TestCluster::shared().await;
    let client = cluster.client()?;
    install_plugin_crd(&client).await?;
    let namespace = cluster.namespace("plugin-cli").await?;
    let name = unique_name("filed");
    let component = std::fs::read(mirror())?;
    let args = |account: &'static str| {
        let (name, namespace) = (name.clone(), namespace.clone());
        move |file: String| {
            vec![
                file,
                "--name".into(),
                name,
                "--namespace".into(),
                namespace,
                "--service-account".into(),
                account.into(),
            ]
        }
    };

    let first = deploy_owned(cluster, args("mirror")(mirror())).await;
    assert_succeeds(&first);

    let config_map = Api::<ConfigMap>::namespaced(client.clone(), &namespace)
        .get(&format!("{name}-component"))
        .await?;
    assert_eq!(
        config_map.metadata.labels.unwrap()["leasehold.dev/plugin"],
        name
    );
    let stored = &config_map.binary_data.unwrap()["component.wasm"].0;
    assert!(*stored == component, "stored bytes differ from the file");
    let owner = &config_map.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Plugin", name.as_str())
    );

    let plugins = Api::<Plugin>::namespaced(client, &namespace);
    let plugin = plugins.get(&name).await?;
    let source = plugin.spec.source.config_map.expect("a configMap source");
    assert_eq!(source.name, format!("{name}-component"));
    assert_eq!(source.key, "component.wasm");
    assert_eq!(source.sha256, Some(leasehold::oci::digest_of(&component)));

    // Deploying again updates the same objects.
    let again = deploy_owned(cluster, args("another")(mirror())).await;
    assert_succeeds(&again);
    assert_eq!(
        plugins.get(&name).await?.spec.service_account_name,
        "another"
    );

    // Someone edits the Plugin by hand: another source, a configuration.
    // Deploying replaces both whole, whoever wrote them.
    let edit = kube::api::PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    let hand_edit = serde_json::json!({"spec": {
        "source": {"configMap": null, "http": {"url": "https://example.com/p.wasm", "sha256": "0".repeat(64)}},
        "config": {"a": 1, "b": 2},
    }});
    plugins
        .patch(&name, &edit, &kube::api::Patch::Merge(&hand_edit))
        .await?;
    let mut with_config = args("another")(mirror());
    with_config.extend(["--config".to_owned(), r#"{"a": 3}"#.to_owned()]);
    assert_succeeds(&deploy_owned(cluster, with_config).await);
    let spec = plugins.get(&name).await?.spec;
    assert!(spec.source.http.is_none(), "{:?}", spec.source);
    assert!(spec.source.config_map.is_some(), "{:?}", spec.source);
    assert_eq!(spec.config, Some(serde_json::json!({"a": 3})));
    // Deploying without --config keeps the configuration.
    assert_succeeds(&deploy_owned(cluster, args("another")(mirror())).await);
    assert_eq!(
        plugins.get(&name).await?.spec.config,
        Some(serde_json::json!({"a": 3}))
    );

    // A file that is not a component never reaches the cluster.
    let garbage = tempfile::NamedTempFile::new()?;
    std::fs::write(garbage.path(), b"nope")?;
    let output = deploy_owned(
        cluster,
        args("mirror")(garbage.path().to_string_lossy().into_owned()),
    )
    .await;
    assert_fails_with(&output, "not a valid wasm component");
    Ok(())
}

async fn deploy(cluster: &TestCluster, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(leasehold_binary());
    command
        .args(["plugin", "deploy"])
        .args(args)
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("RUST_BACKTRACE", "0");
    command.output().await.expect("running leasehold")
}

async fn deploy_owned(cluster: &TestCluster, args: Vec<String>) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    deploy(cluster, &args).await
}

#[tokio::test]
async fn build_without_the_wasm_target_says_how_to_install_it() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    // A toolchain whose sysroot holds no wasm32-wasip2 standard library.
    let rustc = dir.path().join("rustc");
    std::fs::write(&rustc, "#!/bin/sh\necho /nonexistent-sysroot\n")?;
    std::fs::set_permissions(&rustc, std::fs::Permissions::from_mode(0o755))?;

    let mut build = tokio::process::Command::new(leasehold_binary());
    build
        .args(["plugin", "build", "--path"])
        .arg(dir.path())
        .env("RUSTC", &rustc)
        .env("RUST_BACKTRACE", "0");
    let output = build.output().await?;
    assert_fails_with(&output, "run: rustup target add wasm32-wasip2");
    Ok(())
}
