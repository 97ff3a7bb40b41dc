//! The API server's audit log as the judge of leader-only writes.
//!
//! `tools/cluster.sh` records every Lease write with its response: the
//! election's, and those a plugin makes (the fencing tests' plugin writes a
//! Lease of its own, told apart by the plugin's account). Ordered
//! by the resourceVersion the API server gave each committed write (etcd's
//! revision: one order for all objects), the log says, with no help from
//! the replicas, whether a replica's write for a plugin was committed while
//! the election Lease named someone else.

use std::collections::BTreeMap;

use serde_json::Value;

/// A write a replica made for a plugin that the API server committed while
/// the Lease named another holder (or none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitBrain {
    /// The replica that made the write (from its user agent).
    pub replica: String,
    /// Who the Lease named when the write was committed.
    pub holder: Option<String>,
    pub resource_version: u64,
    pub object: String,
}

/// A write the API server refused, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub replica: String,
    pub code: u16,
    pub message: String,
}

/// What the audit log says about one election's plugin writes.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// Plugin writes the API server committed.
    pub committed: usize,
    /// The same, by the replica that made them.
    pub committed_by: BTreeMap<String, usize>,
    /// Committed plugin writes that the Lease's holder did not make.
    pub split_brain: Vec<SplitBrain>,
    /// Plugin writes the API server refused.
    pub refused: Vec<Refusal>,
    /// Committed changes of the Lease's holder.
    pub takeovers: usize,
}

/// Judges the plugin writes in `namespace` against the Lease
/// `namespace/lease`, from the audit log's text (one JSON event a line).
pub fn judge(log: &str, namespace: &str, lease: &str) -> Verdict {
    judge_by(log, namespace, &[lease.to_owned()], |_| lease.to_owned())
}

/// Judges each plugin write in `namespace` against the one of `leases`
/// that `lease_of` names for the object written (in spread placement, the
/// shard Lease of the plugin that writes it). `takeovers` counts over all
/// of `leases`.
pub fn judge_by(
    log: &str,
    namespace: &str,
    leases: &[String],
    lease_of: impl Fn(&str) -> String,
) -> Verdict {
    enum Committed {
        Lease {
            name: String,
            holder: Option<String>,
        },
        Write {
            replica: String,
            object: String,
        },
    }
    let mut verdict = Verdict::default();
    let mut committed: Vec<(u64, Committed)> = Vec::new();
    for event in log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
    {
        let target = &event["objectRef"];
        if event["stage"] != "ResponseComplete" || target["namespace"] != namespace {
            continue;
        }
        if !matches!(
            event["verb"].as_str(),
            Some("create" | "update" | "patch" | "delete")
        ) {
            continue;
        }
        let code = event["responseStatus"]["code"].as_u64().unwrap_or(0);
        let version = event["responseObject"]["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|version| version.parse::<u64>().ok());
        if target["resource"] != "leases" {
            continue;
        }
        match replica_of(&event) {
            None => {
                if let (200..=299, Some(version), Some(name)) =
                    (code, version, target["name"].as_str())
                    && leases.iter().any(|lease| lease == name)
                {
                    let holder = event["responseObject"]["spec"]["holderIdentity"]
                        .as_str()
                        .filter(|holder| !holder.is_empty())
                        .map(str::to_owned);
                    let name = name.to_owned();
                    committed.push((version, Committed::Lease { name, holder }));
                }
            }
            Some(replica) => match (code, version) {
                (200..=299, Some(version)) => {
                    let object = target["name"].as_str().unwrap_or_default().to_owned();
                    committed.push((version, Committed::Write { replica, object }));
                }
                (200..=299, None) => {}
                _ => verdict.refused.push(Refusal {
                    replica,
                    code: u16::try_from(code).unwrap_or(0),
                    message: event["responseStatus"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                }),
            },
        }
    }
    committed.sort_by_key(|(version, _)| *version);
    let mut holders: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (resource_version, change) in committed {
        match change {
            Committed::Lease { name, holder: now } => {
                let holder = holders.entry(name).or_default();
                if now.is_some() && now != *holder {
                    verdict.takeovers += 1;
                }
                *holder = now;
            }
            Committed::Write { replica, object } => {
                verdict.committed += 1;
                *verdict.committed_by.entry(replica.clone()).or_default() += 1;
                let holder = holders.get(&lease_of(&object)).cloned().flatten();
                if holder.as_deref() != Some(replica.as_str()) {
                    verdict.split_brain.push(SplitBrain {
                        replica,
                        holder,
                        resource_version,
                        object,
                    });
                }
            }
        }
    }
    verdict
}

/// The replica that made a request made for a plugin: the identity its
/// user agent names (`leasehold/<version> (<identity>)`), when it
/// impersonated a ServiceAccount (as it does for every plugin).
fn replica_of(event: &Value) -> Option<String> {
    let account = event["impersonatedUser"]["username"].as_str()?;
    if !account.starts_with("system:serviceaccount:") {
        return None;
    }
    let agent = event["userAgent"].as_str()?;
    let identity = agent.strip_prefix("leasehold/")?.split_once(" (")?.1;
    Some(identity.strip_suffix(')')?.to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn lease(version: u64, holder: &str) -> String {
        json!({
            "stage": "ResponseComplete", "verb": "update",
            "objectRef": {"resource": "leases", "namespace": "ns", "name": "election"},
            "responseStatus": {"code": 200},
            "responseObject": {"metadata": {"resourceVersion": version.to_string()},
                               "spec": {"holderIdentity": holder}},
        })
        .to_string()
    }

    fn write(version: Option<u64>, replica: &str, code: u64, message: &str) -> String {
        json!({
            "stage": "ResponseComplete", "verb": "patch",
            "objectRef": {"resource": "leases", "namespace": "ns", "name": "w-written"},
            "userAgent": format!("leasehold/0.1.0 ({replica})"),
            "impersonatedUser": {"username": "system:serviceaccount:ns:plugin"},
            "responseStatus": {"code": code, "message": message},
            "responseObject": version.map(|v| json!({"metadata": {"resourceVersion": v.to_string()}})),
        })
        .to_string()
    }

    #[test]
    fn writes_are_judged_in_resource_version_order_not_log_order() {
        // a's write was logged after b took over but committed before.
        let log = [
            lease(10, "a"),
            write(Some(11), "a", 200, ""),
            lease(13, "b"),
            write(Some(12), "a", 200, ""),
            write(Some(14), "b", 201, ""),
        ]
        .join("\n");
        let verdict = judge(&log, "ns", "election");
        assert_eq!(verdict.committed, 3);
        assert_eq!(verdict.committed_by["a"], 2);
        assert_eq!(verdict.takeovers, 2);
        assert!(verdict.split_brain.is_empty(), "{:?}", verdict.split_brain);
    }

    #[test]
    fn a_write_committed_after_another_took_over_is_split_brain() {
        let log = [
            lease(10, "a"),
            lease(12, "b"),
            write(Some(13), "a", 200, ""),
            lease(14, ""),
            write(Some(15), "b", 200, ""),
        ]
        .join("\n");
        let verdict = judge(&log, "ns", "election");
        assert_eq!(
            verdict.split_brain,
            [
                SplitBrain {
                    replica: "a".into(),
                    holder: Some("b".into()),
                    resource_version: 13,
                    object: "w-written".into()
                },
                SplitBrain {
                    replica: "b".into(),
                    holder: None,
                    resource_version: 15,
                    object: "w-written".into()
                }
            ]
        );
    }

    #[test]
    fn refusals_keep_their_reason_and_other_namespaces_leases_and_writers_are_ignored() {
        let other_lease = lease(11, "z").replace("\"election\"", "\"other\"");
        let announcement = lease(12, "z").replace("\"election\"", "\"replica-z\"");
        let other_namespace = write(Some(12), "z", 200, "").replace("\"ns\"", "\"elsewhere\"");
        let not_a_replica = write(Some(13), "z", 200, "").replace("leasehold/0.1.0", "kubectl/1");
        let log = [
            lease(10, "a"),
            other_lease,
            announcement,
            other_namespace,
            not_a_replica,
            write(None, "a", 403, "stale leadership term ns/election/a/1"),
            "not json".to_owned(),
        ]
        .join("\n");
        let verdict = judge(&log, "ns", "election");
        assert_eq!(verdict.committed, 0);
        assert!(verdict.split_brain.is_empty());
        assert_eq!(
            verdict.refused,
            [Refusal {
                replica: "a".into(),
                code: 403,
                message: "stale leadership term ns/election/a/1".into()
            }]
        );
    }
}
