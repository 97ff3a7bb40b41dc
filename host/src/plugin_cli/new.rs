//! `leasehold plugin new`: a plugin that builds to a component and passes
//! its own test before the author changes a line: a Rust crate on
//! `leasehold-sdk`, or (`--lang js`) an npm package on `@leasehold/sdk`;
//! either with an admission check beside the reconciler (`--admission`).

use std::path::{Path, PathBuf};

use super::{Error, Result};

/// Where the SDK is in the repository this binary was built from. Used only
/// while that checkout exists (the CLI runs from it); a binary installed
/// elsewhere writes a crate on the published SDK.
const CHECKOUT_SDK_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk");

/// The JavaScript SDK in the same checkout, under the same rule.
const CHECKOUT_SDK_JS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk-js");

/// The JavaScript SDK's manifest: a JavaScript plugin's build tools are
/// pinned to the versions the SDK is built and tested with.
const SDK_JS_MANIFEST: &str = include_str!("../../../plugins/sdk-js/package.json");

/// The SDK release that matches this binary's contract: they are released
/// together, with one version.
const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Longest DNS label (RFC 1123), the limit of a Kubernetes name.
const MAX_NAME_LEN: usize = 63;

/// Names a crate cannot take: Rust's own crates and keywords.
const RESERVED: &[&str] = &[
    "alloc",
    "core",
    "proc-macro",
    "std",
    "test",
    "as",
    "async",
    "await",
    "box",
    "break",
    "const",
    "continue",
    "crate",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "yield",
];

/// The language a new plugin is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Lang {
    /// A crate on leasehold-sdk, built with cargo.
    Rust,
    /// An npm package on @leasehold/sdk, built with componentize-js.
    Js,
}

impl Lang {
    /// The SDK's name, in its own registry.
    fn sdk(self) -> &'static str {
        match self {
            Lang::Rust => "leasehold-sdk",
            Lang::Js => "@leasehold/sdk",
        }
    }

    /// The file that marks a directory as the SDK's source.
    fn sdk_manifest(self) -> &'static str {
        match self {
            Lang::Rust => "Cargo.toml",
            Lang::Js => "package.json",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Options {
    /// The plugin's name: a DNS label (lowercase letters, digits and '-'),
    /// also its crate or package name and the controller name it registers.
    name: String,
    /// The plugin's language.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
    /// Directory to create [default: ./NAME].
    #[arg(long)]
    path: Option<PathBuf>,
    /// Depend on the SDK source in DIR (leasehold-sdk, or @leasehold/sdk
    /// with --lang js) instead of the published one [default: the checkout
    /// this binary was built from, if it is still there].
    #[arg(long, value_name = "DIR")]
    sdk_path: Option<PathBuf>,
    /// Also scaffold an admission check, which the API server asks before
    /// it stores a ConfigMap, with its own test: `src/policy.rs`, or with
    /// --lang js plugin.js's `admission` export and
    /// `test/admission.test.js`.
    #[arg(long)]
    admission: bool,
}

/// What a new plugin holds besides the reconciler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Halves {
    /// The reconciler only (world `controller`).
    Reconciler,
    /// The reconciler and an admission check (world
    /// `controller-with-admission`).
    WithAdmission,
}

/// Where a new crate gets the SDK from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Sdk {
    /// The published crate, by version: what a plugin author's machine has.
    Published(&'static str),
    /// A source tree: `--sdk-path`, or the checkout the CLI runs from.
    Path(PathBuf),
}

impl Sdk {
    /// `--sdk-path` if given (it must hold the SDK), else the `checkout`
    /// if the SDK is there, else the published one.
    pub(super) fn choose(lang: Lang, explicit: Option<&Path>, checkout: &Path) -> Result<Self> {
        let sdk_at = |dir: &Path| {
            std::fs::canonicalize(dir)
                .ok()
                .filter(|sdk| sdk.join(lang.sdk_manifest()).is_file())
        };
        match explicit {
            Some(dir) => sdk_at(dir)
                .map(Sdk::Path)
                .ok_or_else(|| Error::SdkNotFound {
                    sdk: lang.sdk(),
                    path: dir.to_owned(),
                }),
            None => Ok(sdk_at(checkout).map_or(Sdk::Published(SDK_VERSION), Sdk::Path)),
        }
    }

    /// The dependency line of the crate's manifest.
    fn dependency(&self) -> String {
        match self {
            Sdk::Published(version) => format!("leasehold-sdk = \"{version}\""),
            Sdk::Path(path) => format!("leasehold-sdk = {{ path = \"{}\" }}", path.display()),
        }
    }

    /// The dependency's specifier in `package.json`.
    fn npm_specifier(&self) -> String {
        match self {
            Sdk::Published(version) => (*version).to_owned(),
            Sdk::Path(path) => format!("file:{}", path.display()),
        }
    }
}

pub(super) fn run(options: Options) -> Result<()> {
    check_name(&options.name, options.lang)?;
    let dir = options.path.unwrap_or_else(|| PathBuf::from(&options.name));
    check_empty(&dir)?;
    let checkout = match options.lang {
        Lang::Rust => CHECKOUT_SDK_PATH,
        Lang::Js => CHECKOUT_SDK_JS_PATH,
    };
    let sdk = Sdk::choose(
        options.lang,
        options.sdk_path.as_deref(),
        Path::new(checkout),
    )?;

    let halves = if options.admission {
        Halves::WithAdmission
    } else {
        Halves::Reconciler
    };
    let files = match options.lang {
        Lang::Rust => scaffold(&options.name, &sdk, halves),
        Lang::Js => scaffold_js(&options.name, &sdk, halves),
    };
    for (file, text) in files {
        write(&dir.join(file), text.as_bytes())?;
    }
    match (&sdk, options.lang) {
        (Sdk::Path(path), Lang::Rust) => {
            // The lock file the SDK is tested with, so the new crate builds
            // with the same versions (and reuses their builds).
            if let Ok(text) = std::fs::read(path.join("../../Cargo.lock")) {
                write(&dir.join("Cargo.lock"), &text)?;
            }
            println!("using the SDK source in {}", path.display());
        }
        (Sdk::Path(path), Lang::Js) => println!("using the SDK source in {}", path.display()),
        (Sdk::Published(version), Lang::Rust) => {
            println!("using leasehold-sdk {version} from crates.io")
        }
        (Sdk::Published(version), Lang::Js) => {
            println!("using @leasehold/sdk {version} from npm")
        }
    }

    println!("created plugin {} in {}", options.name, dir.display());
    print!("{}", next_steps(&dir, halves));
    Ok(())
}

/// What to do after `new`, in either language: test and build; and for an
/// admission check, declare in the Plugin what it reviews, since the API
/// server asks it about nothing else.
fn next_steps(dir: &Path, halves: Halves) -> String {
    let dir = dir.display();
    let mut steps = format!(
        "next:\n  leasehold plugin test --path {dir}\n  leasehold plugin build --path {dir}\n"
    );
    if halves == Halves::WithAdmission {
        steps.push_str(&format!(
            "  declare what the admission check reviews in the Plugin's spec.admission:\n{}",
            indented(ADMISSION_DECLARATION, "    ")
        ));
    }
    steps
}

/// The Plugin's `spec.admission` for the scaffolded check: creates and
/// updates of ConfigMaps, the kind it knows.
const ADMISSION_DECLARATION: &str = r#"spec:
  admission:
    validating:
      rules:
        - {operations: [CREATE, UPDATE], apiGroups: [""], apiVersions: [v1], resources: [configmaps]}
"#;

/// `text` with `prefix` before each line: the declaration in a comment.
fn indented(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|line| format!("{prefix}{line}\n"))
        .collect()
}

/// A plugin name is the Plugin's name in Kubernetes and the crate's or
/// package's name: a DNS label that does not start with a digit and, for
/// a crate, is not reserved by Rust.
pub(super) fn check_name(name: &str, lang: Lang) -> Result<()> {
    let invalid = |reason: &str| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return invalid("must be 1 to 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return invalid("must be a DNS label: lowercase letters, digits and '-' only");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return invalid("must start and end with a letter or digit");
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return invalid("must start with a letter (it is also a crate or package name)");
    }
    if lang == Lang::Rust && RESERVED.contains(&name) {
        return invalid("is reserved by Rust");
    }
    Ok(())
}

fn check_empty(dir: &Path) -> Result<()> {
    let mut entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Io {
                action: "read",
                path: dir.to_owned(),
                source,
            });
        }
    };
    if entries.next().is_some() {
        return Err(Error::NotEmpty {
            path: dir.to_owned(),
        });
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |action, source| Error::Io {
        action,
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| io("create", source))?;
    }
    std::fs::write(path, bytes).map_err(|source| io("write", source))
}

/// `my-plugin` → `MyPlugin`, the reconciler's type name.
fn type_name(name: &str) -> String {
    name.split('-')
        .flat_map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase())
                .into_iter()
                .chain(chars)
        })
        .collect()
}

/// The files of a new plugin crate, relative to its directory.
pub(super) fn scaffold(name: &str, sdk: &Sdk, halves: Halves) -> Vec<(&'static str, String)> {
    let (policy_mod, export) = match halves {
        Halves::Reconciler => ("", EXPORT),
        Halves::WithAdmission => (POLICY_MOD, EXPORT_WITH_ADMISSION),
    };
    // The fragments first: they hold placeholders of their own.
    let fill = |template: &str| {
        template
            .replace("{{policy_mod}}", policy_mod)
            .replace("{{export}}", export)
            .replace("{{name}}", name)
            .replace("{{Type}}", &type_name(name))
            .replace("{{sdk}}", &sdk.dependency())
            .replace("{{declaration}}", &indented(ADMISSION_DECLARATION, "//! "))
    };
    let mut files = vec![
        ("Cargo.toml", fill(CARGO_TOML)),
        ("src/lib.rs", fill(LIB_RS)),
        (".gitignore", "/target\n".to_owned()),
    ];
    if halves == Halves::WithAdmission {
        files.push(("src/policy.rs", fill(POLICY_RS)));
    }
    files
}

const CARGO_TOML: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"
publish = false

# A component is a cdylib; `leasehold plugin build` (or
# `cargo build --profile plugin --target wasm32-wasip2`) produces it.
[lib]
crate-type = ["cdylib"]

[dependencies]
{{sdk}}
serde = { version = "1", features = ["derive"] }

# A workspace of its own, so the crate builds wherever it is copied.
[workspace]

# What `leasehold plugin build` and the harness build with, and native
# crates added to this workspace do not: small and quick to start, as every
# admission review runs a fresh instance with its caches cold, where the
# code it touches is most of its cost.
[profile.plugin]
inherits = "release"
lto = true
codegen-units = 1
opt-level = "s"
"#;

const LIB_RS: &str = r#"//! {{name}}: a Leasehold controller plugin.
//!
//! It reconciles ConfigMaps labelled `example.com/{{name}}=true` and writes a
//! greeting into each. Change `registration` to choose what to watch and
//! `reconcile` to decide what to do; `cargo test` runs the tests below
//! natively against the SDK's in-memory cluster.
//!
//! Configuration (the Plugin's `spec.config`): `{"greeting": "hello"}`.

use leasehold_sdk::k8s_openapi::api::core::v1::ConfigMap;
use leasehold_sdk::prelude::*;
use leasehold_sdk::serde_json::json;
use serde::Deserialize;
{{policy_mod}}
/// The controller's name, also its field manager.
const NAME: &str = "{{name}}";
/// Only ConfigMaps with this label are reconciled.
const SELECTOR: &str = "example.com/{{name}}=true";

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct Config {
    /// What to greet each ConfigMap with.
    greeting: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            greeting: "hello".to_owned(),
        }
    }
}

/// The controller.
#[derive(Debug, Default)]
pub struct {{Type}};

impl Reconciler for {{Type}} {
    type Object = ConfigMap;

    fn registration(&self) -> Registration<ConfigMap> {
        Registration::new(NAME).labels(SELECTOR)
    }

    fn reconcile(&self, object: ConfigMap) -> Result<Action, reconciler::Error> {
        let config: Config = leasehold_sdk::config()?;
        let name = object.name_any();
        let greeting = format!("{}, {name}", config.greeting);
        if object.data.as_ref().and_then(|data| data.get("greeting")) == Some(&greeting) {
            return Ok(Action::Done);
        }
        Api::<ConfigMap>::namespaced(&object.namespace().unwrap_or_default()).apply(
            &name,
            &json!({ "data": { "greeting": greeting } }),
            &ApplyParams::new(NAME),
        )?;
        info!("greeted", name = name);
        Ok(Action::Done)
    }
}

{{export}}

#[cfg(test)]
mod tests {
    use leasehold_sdk::serde_json;
    use leasehold_sdk::testing::FakeCluster;

    use super::*;

    fn labelled(name: &str) -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": {
                "namespace": "default",
                "name": name,
                "labels": { "example.com/{{name}}": "true" },
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_labelled_configmap_is_greeted_as_configured() {
        let cluster = FakeCluster::new().with_config(&json!({ "greeting": "hi" }));
        let object = ObjectRef::from_object(&cluster.insert(labelled("settings")));

        assert_eq!(cluster.reconcile(&{{Type}}, &object).unwrap(), Action::Done);

        let greeted: ConfigMap = cluster.get(&object).unwrap();
        assert_eq!(greeted.data.unwrap()["greeting"], "hi, settings");
    }
}
"#;

/// `lib.rs`'s export of a plugin without admission.
const EXPORT: &str = "leasehold_sdk::export_controller!({{Type}});";

/// `lib.rs`'s export of a plugin with admission.
const EXPORT_WITH_ADMISSION: &str =
    "leasehold_sdk::export_controller!({{Type}}, admission: policy::Policy);";

/// `lib.rs`'s declaration of the admission module.
const POLICY_MOD: &str = "
/// The admission check: what the API server asks before it stores a
/// ConfigMap.
mod policy;
";

// `r##`: the template holds a raw string of its own.
const POLICY_RS: &str = r##"//! {{name}}'s admission check: the API server asks it about every request
//! the Plugin's admission rules match, before the object is stored. The
//! Plugin declares them in `spec.admission`; without them nothing is asked:
//!
//! ```yaml
{{declaration}}//! ```
//!
//! `validate` denies a ConfigMap whose `example.com/{{name}}` label is
//! neither `true` nor `false`, so that a typo such as `yes` does not leave
//! it silently unreconciled. `mutate` keeps its default here (allow,
//! unchanged); to default or fix an object, change a copy and answer
//! `Verdict::patched(request, &changed)`.
//!
//! Every replica answers, leader or not, each review in a fresh instance
//! within the plugin's limits: keep reviews quick and keep no state.

use leasehold_sdk::admission::Request;
use leasehold_sdk::k8s_openapi::api::core::v1::ConfigMap;
use leasehold_sdk::prelude::*;

/// The label whose value must be `true` or `false`.
const LABEL: &str = "example.com/{{name}}";

/// The admission check.
#[derive(Debug, Default)]
pub struct Policy;

impl Admission for Policy {
    type Object = ConfigMap;

    fn validate(&self, request: &Request<ConfigMap>) -> admission::Result<Verdict> {
        // A delete has no new object to check.
        let Some(object) = request.object() else {
            return Ok(Verdict::allow());
        };
        match object.labels().get(LABEL).map(String::as_str) {
            None | Some("true" | "false") => Ok(Verdict::allow()),
            Some(other) => Ok(Verdict::deny(format!(
                "label {LABEL} must be \"true\" or \"false\", not {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use leasehold_sdk::serde_json::{self, json};
    use leasehold_sdk::testing::{FakeCluster, ReviewRequest};

    use super::*;

    fn labelled(value: &str) -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": {
                "namespace": "default",
                "name": "settings",
                "labels": { LABEL: value },
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_label_that_is_not_true_or_false_is_denied_with_the_reason() {
        let request = ReviewRequest::create(&labelled("yes"));

        let verdict = FakeCluster::new().validate(&Policy, &request).unwrap();

        assert!(!verdict.allowed);
        assert_eq!(
            verdict.message.as_deref(),
            Some(r#"label example.com/{{name}} must be "true" or "false", not "yes""#)
        );
    }

    #[test]
    fn true_false_and_no_label_are_allowed() {
        let cluster = FakeCluster::new();
        for value in ["true", "false"] {
            let request = ReviewRequest::create(&labelled(value));
            assert!(
                cluster.validate(&Policy, &request).unwrap().allowed,
                "{value}"
            );
        }
        let request = ReviewRequest::create(&ConfigMap::default());
        assert!(cluster.validate(&Policy, &request).unwrap().allowed);
    }
}
"##;

/// The files of a new JavaScript plugin, relative to its directory.
pub(super) fn scaffold_js(name: &str, sdk: &Sdk, halves: Halves) -> Vec<(&'static str, String)> {
    let manifest: serde_json::Value =
        serde_json::from_str(SDK_JS_MANIFEST).expect("the SDK's package.json is JSON");
    // The build tools, at the versions the SDK is built with.
    let tools = &manifest["devDependencies"];
    // componentize-js exports `admission` only when the world has it.
    let (world, imports, admission) = match halves {
        Halves::Reconciler => ("", JS_IMPORTS, ""),
        Halves::WithAdmission => (
            " --world controller-with-admission",
            JS_IMPORTS_WITH_ADMISSION,
            ADMISSION_JS,
        ),
    };
    let package = serde_json::json!({
        "name": name,
        "version": "0.1.0",
        "private": true,
        "type": "module",
        "scripts": {
            "build": format!("leasehold-js build plugin.js --out dist/{name}.wasm{world}"),
            "pretest": "npm run build",
            "test": "node --test",
        },
        "leasehold": { "component": format!("dist/{name}.wasm") },
        "dependencies": { "@leasehold/sdk": sdk.npm_specifier() },
        "devDependencies": tools,
    });
    // The fragments first: they hold placeholders of their own.
    let fill = |template: &str| {
        template
            .replace("{{imports}}", imports)
            .replace("{{admission}}", admission)
            .replace("{{name}}", name)
            .replace("{{declaration}}", &indented(ADMISSION_DECLARATION, " * "))
    };
    let mut files = vec![
        (
            "package.json",
            serde_json::to_string_pretty(&package).expect("json") + "\n",
        ),
        ("plugin.js", fill(PLUGIN_JS)),
        ("test/plugin.test.js", fill(PLUGIN_TEST_JS)),
        (".gitignore", "node_modules/\ndist/\n".to_owned()),
    ];
    if halves == Halves::WithAdmission {
        files.push(("test/admission.test.js", fill(ADMISSION_TEST_JS)));
    }
    files
}

const PLUGIN_JS: &str = r#"/**
 * {{name}}: a Leasehold controller plugin in JavaScript.
 *
 * It reconciles ConfigMaps labelled `example.com/{{name}}=true` and writes a
 * greeting into each. Change `registration` to choose what to watch and
 * `reconcile` to decide what to do; `npm test` builds the component and
 * runs the tests in test/ against it, offline.
 *
 * Configuration (the Plugin's `spec.config`): `{"greeting": "hello"}`.
 */

import {
  {{imports}}
} from '@leasehold/sdk';

/** The controller's name, also its field manager. */
const NAME = '{{name}}';
/** Only ConfigMaps with this label are reconciled. */
const SELECTOR = 'example.com/{{name}}=true';

export const reconciler = exportController({
  registration() {
    return { name: NAME, primary: ConfigMap, labelSelector: SELECTOR };
  },

  reconcile(configMap) {
    const config = loadConfig((raw) => ({ greeting: optionalString(raw, 'greeting') ?? 'hello' }));
    // Errors are values: returning one reports it (a bad configuration is
    // permanent; an API error is retried unless the request was invalid).
    if (!config.ok) return config.error;
    const { name, namespace } = configMap.metadata;
    const greeting = `${config.value.greeting}, ${name}`;
    if (configMap.data?.greeting === greeting) return done();

    const applied = Api.namespaced(ConfigMap, namespace)
      .apply(name, { data: { greeting } }, { fieldManager: NAME });
    if (!applied.ok) return applied.error;
    log.info('greeted', { name });
    return done();
  },
});
{{admission}}"#;

/// `plugin.js`'s imports without admission.
const JS_IMPORTS: &str = "Api, ConfigMap, done, exportController, loadConfig, log, optionalString,";

/// `plugin.js`'s imports with admission.
const JS_IMPORTS_WITH_ADMISSION: &str =
    "Api, ConfigMap, allow, deny, done, exportAdmission, exportController, loadConfig, log,
  optionalString,";

/// `plugin.js`'s admission export, after the reconciler: `POLICY_RS`'s
/// check, in JavaScript.
const ADMISSION_JS: &str = r#"
/** The label whose value must be `true` or `false`. */
const LABEL = 'example.com/{{name}}';

/**
 * The admission check (built with `--world controller-with-admission`):
 * the API server asks it about every request the Plugin's admission rules
 * match, before the object is stored. The Plugin declares them in
 * `spec.admission`; without them nothing is asked:
 *
 * ```yaml
{{declaration}} * ```
 *
 * `validate` denies a ConfigMap whose `example.com/{{name}}` label is
 * neither `true` nor `false`, so that a typo such as `yes` does not leave
 * it silently unreconciled. `mutate` keeps its default here (allow,
 * unchanged); to default or fix an object, add `mutate(request)`: change
 * `request.object` and return `patched(request, request.object)`.
 *
 * Every replica answers, leader or not, each review in a fresh instance
 * within the plugin's limits: keep reviews quick and keep no state.
 */
export const admission = exportAdmission({
  validate(request) {
    // A delete has no new object to check.
    if (request.object === undefined) return allow();
    const value = request.object.metadata?.labels?.[LABEL];
    if (value === undefined || value === 'true' || value === 'false') return allow();
    return deny(`label ${LABEL} must be "true" or "false", not ${JSON.stringify(value)}`);
  },
});
"#;

const PLUGIN_TEST_JS: &str = r#"// The built component (`npm run build`, which `npm test` runs first) on
// Leasehold's own runtime, against an in-memory cluster: no cluster needed.
// `leasehold plugin test` runs this with LEASEHOLD naming its binary.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { ConfigMap, Harness, done } from '@leasehold/sdk/testing';

let harness;
before(async () => {
  harness = await Harness.load('dist/{{name}}.wasm', { config: { greeting: 'hi' } });
});
after(() => harness.close());

test('a labelled ConfigMap is greeted as configured', async () => {
  await harness.insert({
    ...ConfigMap,
    metadata: { namespace: 'default', name: 'settings', labels: { 'example.com/{{name}}': 'true' } },
  });

  const result = await harness.reconcile({ namespace: 'default', name: 'settings' });

  assert.deepEqual(result.action, done());
  assert.deepEqual(result.calls, ['apply v1/ConfigMap default/settings -> ok']);
  const greeted = await harness.get({ ...ConfigMap, namespace: 'default', name: 'settings' });
  assert.equal(greeted.data.greeting, 'hi, settings');
});
"#;

const ADMISSION_TEST_JS: &str = r#"// plugin.js's admission check, reviewed offline as the API server would ask
// it: in Node, on the bundle the component was built from (`npm test`
// builds it first), with no cluster.

import assert from 'node:assert/strict';
import { before, test } from 'node:test';

import { Admission, ConfigMap, ReviewRequest, allow, deny } from '@leasehold/sdk/testing';

function labelled(value) {
  return {
    ...ConfigMap,
    metadata: { namespace: 'default', name: 'settings', labels: { 'example.com/{{name}}': value } },
  };
}

let admission;
before(async () => {
  admission = await Admission.load('dist/{{name}}.wasm');
});

test('a label that is not true or false is denied with the reason', async () => {
  const { verdict } = await admission.validate(ReviewRequest.create(labelled('yes')));

  assert.deepEqual(verdict, deny('label example.com/{{name}} must be "true" or "false", not "yes"'));
});

test('true, false, no label and a delete are allowed', async () => {
  for (const value of ['true', 'false']) {
    const { verdict } = await admission.validate(ReviewRequest.create(labelled(value)));
    assert.deepEqual(verdict, allow(), value);
  }
  const unlabelled = { ...ConfigMap, metadata: { namespace: 'default', name: 'plain' } };
  assert.deepEqual((await admission.validate(ReviewRequest.create(unlabelled))).verdict, allow());
  // A delete has no new object: there is nothing to check.
  assert.deepEqual((await admission.validate(ReviewRequest.delete(labelled('yes')))).verdict, allow());
});
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_that_can_be_crate_names_are_accepted() {
        for name in ["mirror", "configmap-mirror", "a", "x9", &"a".repeat(63)] {
            check_name(name, Lang::Rust).unwrap();
            check_name(name, Lang::Js).unwrap();
        }
    }

    #[test]
    fn names_that_are_not_dns_labels_are_refused_with_the_reason() {
        for (name, reason) in [
            ("", "1 to 63"),
            (&"a".repeat(64), "1 to 63"),
            ("Mirror", "DNS label"),
            ("my_plugin", "DNS label"),
            ("my.plugin", "DNS label"),
            ("-mirror", "start and end"),
            ("mirror-", "start and end"),
            ("9lives", "start with a letter"),
            ("test", "reserved"),
        ] {
            let error = check_name(name, Lang::Rust).unwrap_err().to_string();
            assert!(error.contains(reason), "{name:?}: {error}");
        }
        // Rust's keywords are fine as npm package names.
        check_name("test", Lang::Js).unwrap();
    }

    #[test]
    fn a_directory_with_files_is_refused_and_an_empty_one_is_used() {
        let dir = std::env::temp_dir().join(format!("leasehold-new-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        check_empty(&dir).unwrap();
        check_empty(&dir.join("absent")).unwrap();
        std::fs::write(dir.join("file"), "x").unwrap();
        let error = check_empty(&dir).unwrap_err();
        assert!(error.to_string().contains("is not empty"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_crate_depends_on_the_published_sdk_unless_a_source_tree_is_at_hand() {
        let checkout = std::env::temp_dir().join(format!("leasehold-sdk-{}", std::process::id()));
        std::fs::create_dir_all(&checkout).unwrap();
        // No SDK in the checkout (a binary installed elsewhere): published.
        assert_eq!(
            Sdk::choose(Lang::Rust, None, &checkout).unwrap(),
            Sdk::Published(SDK_VERSION)
        );
        let error = Sdk::choose(Lang::Rust, Some(&checkout), &checkout).unwrap_err();
        assert!(error.to_string().contains("pass --sdk-path DIR"), "{error}");
        // A checkout with the SDK, or one named explicitly: its path.
        std::fs::write(checkout.join("Cargo.toml"), "").unwrap();
        let path = std::fs::canonicalize(&checkout).unwrap();
        assert_eq!(
            Sdk::choose(Lang::Rust, None, &checkout).unwrap(),
            Sdk::Path(path.clone())
        );
        assert_eq!(
            Sdk::choose(Lang::Rust, Some(&checkout), Path::new("/nowhere")).unwrap(),
            Sdk::Path(path)
        );
        std::fs::remove_dir_all(&checkout).unwrap();

        let published = scaffold("my-plugin", &Sdk::Published("1.2.3"), Halves::Reconciler);
        assert!(published[0].1.contains("\nleasehold-sdk = \"1.2.3\"\n"));
    }

    #[test]
    fn the_scaffold_is_a_standalone_cdylib_on_the_sdk_named_after_the_plugin() {
        let files = scaffold(
            "my-plugin",
            &Sdk::Path(PathBuf::from("/sdk")),
            Halves::Reconciler,
        );
        let file = |name| &files.iter().find(|(file, _)| *file == name).unwrap().1;
        let manifest = file("Cargo.toml");
        assert!(manifest.contains("name = \"my-plugin\""));
        assert!(manifest.contains("crate-type = [\"cdylib\"]"));
        assert!(manifest.contains("leasehold-sdk = { path = \"/sdk\" }"));
        assert!(manifest.contains("\n[workspace]\n"));
        assert_eq!(
            leasehold_harness::profile_for(manifest),
            leasehold_harness::PLUGIN_PROFILE
        );
        assert!(manifest.contains("\ninherits = \"release\"\nlto = true\n"));
        let lib = file("src/lib.rs");
        assert!(lib.contains("pub struct MyPlugin;"));
        assert!(lib.contains("export_controller!(MyPlugin)"));
        assert!(lib.contains("const NAME: &str = \"my-plugin\";"));
        assert!(lib.contains("FakeCluster"));
        assert!(!lib.contains("{{"), "every placeholder is filled");
        assert!(!lib.contains("policy"), "no admission unless asked");
        let names: Vec<_> = files.iter().map(|(file, _)| *file).collect();
        assert_eq!(names, ["Cargo.toml", "src/lib.rs", ".gitignore"]);
    }

    #[test]
    fn with_admission_the_scaffold_adds_a_tested_policy_and_exports_it() {
        let files = scaffold(
            "my-plugin",
            &Sdk::Path(PathBuf::from("/sdk")),
            Halves::WithAdmission,
        );
        let file = |name| &files.iter().find(|(file, _)| *file == name).unwrap().1;
        let lib = file("src/lib.rs");
        assert!(lib.contains("\nmod policy;\n"));
        assert!(lib.contains("export_controller!(MyPlugin, admission: policy::Policy);"));
        let policy = file("src/policy.rs");
        assert!(policy.contains("impl Admission for Policy"));
        assert!(policy.contains("`spec.admission`"));
        assert!(policy.contains("\n//!   admission:\n"));
        assert!(policy.contains("const LABEL: &str = \"example.com/my-plugin\";"));
        assert!(policy.contains("FakeCluster::new().validate(&Policy, &request)"));
        for (name, text) in &files {
            assert!(!text.contains("{{"), "{name}: every placeholder is filled");
        }
    }

    #[test]
    fn a_javascript_plugin_is_a_package_on_the_js_sdk_with_a_test_and_pinned_tools() {
        let checkout =
            std::env::temp_dir().join(format!("leasehold-sdk-js-{}", std::process::id()));
        std::fs::create_dir_all(&checkout).unwrap();
        // A Rust SDK's manifest does not make a JavaScript SDK.
        std::fs::write(checkout.join("Cargo.toml"), "").unwrap();
        assert_eq!(
            Sdk::choose(Lang::Js, None, &checkout).unwrap(),
            Sdk::Published(SDK_VERSION)
        );
        let error = Sdk::choose(Lang::Js, Some(&checkout), &checkout).unwrap_err();
        assert!(
            error.to_string().starts_with("@leasehold/sdk not found"),
            "{error}"
        );
        std::fs::remove_dir_all(&checkout).unwrap();

        let files = scaffold_js("my-plugin", &Sdk::Published("1.2.3"), Halves::Reconciler);
        let names: Vec<_> = files.iter().map(|(file, _)| *file).collect();
        assert_eq!(
            names,
            [
                "package.json",
                "plugin.js",
                "test/plugin.test.js",
                ".gitignore"
            ]
        );
        let package: serde_json::Value = serde_json::from_str(&files[0].1).unwrap();
        assert_eq!(package["name"], "my-plugin");
        assert_eq!(package["dependencies"]["@leasehold/sdk"], "1.2.3");
        assert_eq!(package["leasehold"]["component"], "dist/my-plugin.wasm");
        assert_eq!(
            package["devDependencies"]["@bytecodealliance/componentize-js"],
            "0.23.0"
        );
        let sdk = Sdk::Path(PathBuf::from("/sdk-js"));
        let package: serde_json::Value =
            serde_json::from_str(&scaffold_js("my-plugin", &sdk, Halves::Reconciler)[0].1).unwrap();
        assert_eq!(package["dependencies"]["@leasehold/sdk"], "file:/sdk-js");
        for (name, text) in &files {
            assert!(!text.contains("{{"), "{name}: every placeholder is filled");
        }
        assert!(files[1].1.contains("const NAME = 'my-plugin';"));
        assert!(
            !files[1].1.contains("admission"),
            "no admission unless asked"
        );
        assert_eq!(
            package["scripts"]["build"], "leasehold-js build plugin.js --out dist/my-plugin.wasm",
            "the world without admission, leasehold-js's default"
        );
    }

    #[test]
    fn with_admission_a_javascript_plugin_exports_a_tested_check_built_for_its_world() {
        let files = scaffold_js(
            "my-plugin",
            &Sdk::Path(PathBuf::from("/sdk-js")),
            Halves::WithAdmission,
        );
        let names: Vec<_> = files.iter().map(|(file, _)| *file).collect();
        assert_eq!(
            names,
            [
                "package.json",
                "plugin.js",
                "test/plugin.test.js",
                ".gitignore",
                "test/admission.test.js"
            ]
        );
        let file = |name| &files.iter().find(|(file, _)| *file == name).unwrap().1;
        let package: serde_json::Value = serde_json::from_str(file("package.json")).unwrap();
        // Without the world, componentize-js drops the admission export.
        assert_eq!(
            package["scripts"]["build"],
            "leasehold-js build plugin.js --out dist/my-plugin.wasm \
             --world controller-with-admission"
        );
        let plugin = file("plugin.js");
        assert!(plugin.contains("export const reconciler = exportController({"));
        assert!(plugin.contains("export const admission = exportAdmission({"));
        assert!(plugin.contains("const LABEL = 'example.com/my-plugin';"));
        assert!(plugin.contains(" *         - {operations: [CREATE, UPDATE], apiGroups: [\"\"]"));
        let test = file("test/admission.test.js");
        assert!(test.contains("await Admission.load('dist/my-plugin.wasm')"));
        assert!(test.contains(
            r#"deny('label example.com/my-plugin must be "true" or "false", not "yes"')"#
        ));
        for (name, text) in &files {
            assert!(!text.contains("{{"), "{name}: every placeholder is filled");
        }
    }

    #[test]
    fn the_next_steps_of_an_admission_check_show_its_spec_admission() {
        let dir = Path::new("my-plugin");
        let steps = next_steps(dir, Halves::Reconciler);
        assert_eq!(
            steps,
            "next:\n  leasehold plugin test --path my-plugin\n  \
             leasehold plugin build --path my-plugin\n"
        );
        let steps = next_steps(dir, Halves::WithAdmission);
        assert!(steps.contains("in the Plugin's spec.admission:\n    spec:\n      admission:\n"));
        assert!(steps.ends_with("resources: [configmaps]}\n"), "{steps}");
    }

    /// A plugin scaffolded by this binary asks for `@leasehold/sdk` at
    /// this binary's version, and builds against the WIT the SDK ships: a
    /// copy of the repository's, which must not drift.
    #[test]
    fn the_js_sdk_has_this_version_and_ships_the_current_contract() {
        let manifest: serde_json::Value = serde_json::from_str(SDK_JS_MANIFEST).unwrap();
        assert_eq!(manifest["version"], SDK_VERSION);
        let shipped = include_str!("../../../plugins/sdk-js/wit/controller.wit");
        let contract = include_str!("../../../wit/controller.wit");
        assert!(
            shipped == contract,
            "plugins/sdk-js/wit/controller.wit differs from wit/controller.wit: \
             cp wit/controller.wit plugins/sdk-js/wit/"
        );
        let version = contract
            .lines()
            .find_map(|line| line.strip_prefix("package "))
            .unwrap()
            .trim_end_matches(';');
        assert_eq!(manifest["leasehold"]["contract"], version);
    }

    #[test]
    fn type_names_are_upper_camel_case() {
        assert_eq!(type_name("configmap-mirror"), "ConfigmapMirror");
        assert_eq!(type_name("a1-b"), "A1B");
    }
}
