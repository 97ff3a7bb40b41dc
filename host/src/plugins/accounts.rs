//! Which ServiceAccounts a Plugin object may run as. RBAC decides what an
//! account may do; this decides which accounts are off limits whatever a
//! Plugin's author may use: the host's own (a plugin acting as the host
//! could create Plugins anywhere, naming any account) and any the operator
//! denies (`--deny-service-account kube-system/*`). Plugins given as
//! manifests are the operator's own and are not checked.

use std::fmt;
use std::str::FromStr;

use super::definition::ServiceAccount;

/// `namespace/name`, or `namespace/*` for every account of a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountPattern {
    namespace: String,
    /// `None` for `*`.
    name: Option<String>,
}

impl FromStr for AccountPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (namespace, name) = text
            .split_once('/')
            .filter(|(namespace, name)| {
                !namespace.is_empty() && !name.is_empty() && !name.contains('/')
            })
            .ok_or_else(|| format!("{text:?} must be namespace/name or namespace/*"))?;
        Ok(Self {
            namespace: namespace.to_owned(),
            name: (name != "*").then(|| name.to_owned()),
        })
    }
}

impl fmt::Display for AccountPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.namespace,
            self.name.as_deref().unwrap_or("*")
        )
    }
}

impl AccountPattern {
    fn matches(&self, account: &ServiceAccount) -> bool {
        self.namespace == account.namespace
            && self.name.as_ref().is_none_or(|name| *name == account.name)
    }
}

/// The accounts Plugin objects may not name.
#[derive(Clone, Debug, Default)]
pub struct AccountPolicy {
    denied: Vec<AccountPattern>,
    /// The host's own account, when it runs as one.
    own: Option<ServiceAccount>,
}

impl AccountPolicy {
    pub fn new(denied: Vec<AccountPattern>, own: Option<ServiceAccount>) -> Self {
        Self { denied, own }
    }

    /// The account of `username` when it is a ServiceAccount's
    /// (`system:serviceaccount:<namespace>:<name>`).
    pub fn account_of(username: &str) -> Option<ServiceAccount> {
        let (namespace, name) = username
            .strip_prefix("system:serviceaccount:")?
            .split_once(':')?;
        Some(ServiceAccount::new(namespace, name))
    }

    /// Why `account` may not be used, if it may not.
    pub fn refusal(&self, account: &ServiceAccount) -> Option<String> {
        if self.own.as_ref() == Some(account) {
            return Some(format!(
                "ServiceAccount {account} is the host's own; a plugin may not act as the host"
            ));
        }
        self.denied
            .iter()
            .find(|pattern| pattern.matches(account))
            .map(|pattern| {
                format!("ServiceAccount {account} is denied to plugins by the operator ({pattern})")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(namespace: &str, name: &str) -> ServiceAccount {
        ServiceAccount::new(namespace, name)
    }

    #[test]
    fn the_hosts_own_and_denied_accounts_are_refused_by_name() {
        let policy = AccountPolicy::new(
            vec![
                "kube-system/*".parse().unwrap(),
                "team/admin".parse().unwrap(),
            ],
            AccountPolicy::account_of("system:serviceaccount:leasehold:leasehold"),
        );
        let own = policy.refusal(&account("leasehold", "leasehold")).unwrap();
        assert!(own.contains("the host's own"), "{own}");
        let system = policy.refusal(&account("kube-system", "anything")).unwrap();
        assert!(system.ends_with("(kube-system/*)"), "{system}");
        assert!(policy.refusal(&account("team", "admin")).is_some());
        assert_eq!(policy.refusal(&account("team", "mirror")), None);
        assert_eq!(policy.refusal(&account("leasehold", "other")), None);
    }

    #[test]
    fn patterns_and_usernames_are_read_strictly() {
        for bad in ["", "team", "/x", "team/", "a/b/c"] {
            assert!(bad.parse::<AccountPattern>().is_err(), "{bad}");
        }
        assert_eq!(AccountPolicy::account_of("admin"), None);
        assert_eq!(
            AccountPolicy::account_of("system:serviceaccount:ns:sa"),
            Some(account("ns", "sa"))
        );
    }
}
