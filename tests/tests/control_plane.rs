//! The test control plane is a real kube-apiserver with etcd: optimistic
//! concurrency, CRDs and RBAC behave as in production.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use leasehold_tests::{TestCluster, eventually, unique_name};

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        ..ObjectMeta::default()
    }
}

#[tokio::test]
async fn lease_written_with_a_stale_resource_version_gets_conflict() -> anyhow::Result<()> {
    let cluster = TestCluster::shared().await;
    let namespace = cluster.namespace("conflict").await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client()?, &namespace);
    let holder = |who: &str| LeaseSpec {
        holder_identity: Some(who.into()),
        ..LeaseSpec::default()
    };
    let created = leases
        .create(
            &PostParams::default(),
            &Lease {
                metadata: meta("election"),
                spec: Some(holder("a")),
            },
        )
        .await?;

    let mut first = created.clone();
    first.spec = Some(holder("b"));
    leases
        .replace("election", &PostParams::default(), &first)
        .await?;

    let mut stale = created;
    stale.spec = Some(holder("c"));
    let error = leases
        .replace("election", &PostParams::default(), &stale)
        .await
        .expect_err("a write carrying an old resourceVersion must be refused");
    assert!(
        matches!(&error, kube::Error::Api(status) if status.code == 409),
        "{error}"
    );
    let current = leases.get("election").await?;
    assert_eq!(current.spec.unwrap().holder_identity.as_deref(), Some("b"));
    Ok(())
}

#[tokio::test]
async fn installed_crd_becomes_established() -> anyhow::Result<()> {
    let cluster = TestCluster::shared().await;
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client()?);
    // Kind and plural both unique: a reused control plane keeps every CRD,
    // and a second CRD with the same kind in a group is never Established.
    let suffix = unique_name("").replace('-', "");
    let (plural, kind) = (format!("widgets{suffix}"), format!("Widget{suffix}"));
    let name = format!("{plural}.example.leasehold.dev");
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": "example.leasehold.dev",
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": plural, "kind": kind},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
            }]
        }
    }))?;
    crds.create(&PostParams::default(), &crd).await?;
    eventually(
        Duration::from_secs(30),
        "the CRD to be Established",
        || async {
            let crd = crds.get(&name).await.ok()?;
            let conditions = crd.status?.conditions?;
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        },
    )
    .await
}

#[tokio::test]
async fn identity_without_rbac_is_forbidden_until_granted() -> anyhow::Result<()> {
    let cluster = TestCluster::shared().await;
    let namespace = cluster.namespace("rbac").await?;
    let admin = cluster.client()?;
    let plugin = cluster.service_account_client(&namespace, "plugin").await?;
    let as_plugin: Api<ConfigMap> = Api::namespaced(plugin, &namespace);

    let error = as_plugin
        .list(&Default::default())
        .await
        .expect_err("no RBAC yet");
    assert!(
        matches!(&error, kube::Error::Api(status) if status.code == 403),
        "{error}"
    );

    grant_configmap_read(admin, &namespace, "plugin").await?;
    eventually(
        Duration::from_secs(30),
        "the RoleBinding to take effect",
        || async { as_plugin.list(&Default::default()).await.ok() },
    )
    .await?;
    Ok(())
}

async fn grant_configmap_read(admin: Client, namespace: &str, account: &str) -> anyhow::Result<()> {
    let role = Role {
        metadata: meta("read-configmaps"),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &role)
        .await?;
    let binding = RoleBinding {
        metadata: meta("read-configmaps"),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "read-configmaps".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: account.into(),
            namespace: Some(namespace.into()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin, namespace)
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}
