//! Election settings: the command-line group and its validated form.

use std::time::Duration;

/// client-go's defaults (kube-controller-manager, the scheduler): well
/// understood by operators, and they keep a healthy API server's write load
/// to one Lease update every two seconds.
const DEFAULT_LEASE_DURATION: &str = "15s";
const DEFAULT_RENEW_DEADLINE: &str = "10s";
const DEFAULT_RETRY_PERIOD: &str = "2s";

/// client-go requires `renewDeadline > 1.2 × retryPeriod` so that a leader
/// gets at least one retry of a failed renewal before it must step down.
const RETRY_JITTER_FACTOR: f64 = 1.2;

/// Leader-election options, flattened into `leasehold run`.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Leader election")]
#[group(id = "election-options")]
pub struct Options {
    /// Namespace of the election Lease.
    #[arg(
        long = "lease-namespace",
        env = "LEASEHOLD_LEASE_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,

    /// Name of the election Lease; replicas with the same name form one group.
    #[arg(
        long = "lease-name",
        env = "LEASEHOLD_LEASE_NAME",
        default_value = "leasehold"
    )]
    pub lease_name: String,

    /// This replica's identity in the Lease. Defaults to $POD_NAME, else the
    /// hostname with a random suffix (two processes must never share one).
    #[arg(long, env = "LEASEHOLD_IDENTITY")]
    pub identity: Option<String>,

    /// How long a Lease stays valid without renewal (whole seconds).
    #[arg(long, env = "LEASEHOLD_LEASE_DURATION", default_value = DEFAULT_LEASE_DURATION, value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// How long the leader keeps trying to renew before it stops all
    /// leader-only work and steps down. Must be less than the lease duration.
    #[arg(long, env = "LEASEHOLD_RENEW_DEADLINE", default_value = DEFAULT_RENEW_DEADLINE, value_parser = parse_duration)]
    pub renew_deadline: Duration,

    /// How often to renew (leader) or retry acquiring (followers, as a
    /// fallback to watching the Lease).
    #[arg(long, env = "LEASEHOLD_RETRY_PERIOD", default_value = DEFAULT_RETRY_PERIOD, value_parser = parse_duration)]
    pub retry_period: Duration,

    /// Send each leadership term with every write made for a plugin, for
    /// the API server's fencing policy to check against the Lease (the
    /// chart installs the policy and sets this). Needs `impersonate` on
    /// `userextras/leasehold.dev/term`.
    #[arg(long, env = "LEASEHOLD_FENCING", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub fencing: bool,
}

/// Validated election settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    /// Whether writes made for plugins carry their term (see `--fencing`).
    pub fencing: bool,
}

/// Why election options were rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A duration that must be positive was zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The Lease stores its duration in whole seconds.
    #[error(
        "lease duration must be a whole number of seconds (it is written to leaseDurationSeconds), got {0:?}"
    )]
    FractionalLeaseDuration(Duration),
    /// The leader must give up before followers may take over.
    #[error(
        "lease duration ({lease_duration:?}) must be greater than renew deadline ({renew_deadline:?})"
    )]
    DeadlineNotBeforeExpiry {
        lease_duration: Duration,
        renew_deadline: Duration,
    },
    /// The leader must get at least one retry before the deadline.
    #[error(
        "renew deadline ({renew_deadline:?}) must be greater than 1.2 × retry period ({retry_period:?})"
    )]
    RetryTooSlow {
        renew_deadline: Duration,
        retry_period: Duration,
    },
    /// Names end up in object names and label values.
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
}

impl Options {
    /// Validates the options; `pod_name` and `hostname` supply the default
    /// identity (passed in so that this stays pure).
    pub fn into_config(
        self,
        pod_name: Option<String>,
        hostname: &str,
    ) -> Result<Config, ConfigError> {
        let identity = self
            .identity
            .or(pod_name)
            .unwrap_or_else(|| format!("{hostname}_{:08x}", rand::random::<u32>()));
        for (field, value) in [
            ("lease namespace", &self.namespace),
            ("lease name", &self.lease_name),
            ("identity", &identity),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::Empty { field });
            }
        }
        for (name, value) in [
            ("lease duration", self.lease_duration),
            ("renew deadline", self.renew_deadline),
            ("retry period", self.retry_period),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.lease_duration.subsec_nanos() != 0 {
            return Err(ConfigError::FractionalLeaseDuration(self.lease_duration));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(ConfigError::DeadlineNotBeforeExpiry {
                lease_duration: self.lease_duration,
                renew_deadline: self.renew_deadline,
            });
        }
        if self.renew_deadline.as_secs_f64()
            <= RETRY_JITTER_FACTOR * self.retry_period.as_secs_f64()
        {
            return Err(ConfigError::RetryTooSlow {
                renew_deadline: self.renew_deadline,
                retry_period: self.retry_period,
            });
        }
        Ok(Config {
            namespace: self.namespace,
            lease_name: self.lease_name,
            identity,
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
            fencing: self.fencing,
        })
    }
}

impl Config {
    /// Each Lease request may take at most this long: client-go's
    /// `max(1 s, renewDeadline / 2)`, so a hung request leaves time for a retry.
    pub fn request_timeout(&self) -> Duration {
        (self.renew_deadline / 2).max(Duration::from_secs(1))
    }

    /// `leaseDurationSeconds` as written to the Lease.
    pub fn lease_duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// Parses `15s`, `500ms`, `1m30s`, ...
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| format!("{error} (examples: 15s, 500ms, 1m)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(lease: u64, renew: u64, retry: u64) -> Options {
        Options {
            namespace: "default".into(),
            lease_name: "leasehold".into(),
            identity: Some("replica-a".into()),
            lease_duration: Duration::from_millis(lease),
            renew_deadline: Duration::from_millis(renew),
            retry_period: Duration::from_millis(retry),
            fencing: false,
        }
    }

    #[test]
    fn defaults_match_client_go() {
        let config = options(15_000, 10_000, 2_000)
            .into_config(None, "host")
            .unwrap();
        assert_eq!(config.request_timeout(), Duration::from_secs(5));
        assert_eq!(config.lease_duration_seconds(), 15);
    }

    #[test]
    fn renew_deadline_must_be_shorter_than_the_lease() {
        let error = options(10_000, 10_000, 2_000)
            .into_config(None, "host")
            .unwrap_err();
        assert!(matches!(error, ConfigError::DeadlineNotBeforeExpiry { .. }));
        assert!(
            error
                .to_string()
                .contains("must be greater than renew deadline")
        );
    }

    #[test]
    fn renew_deadline_must_leave_room_for_a_retry() {
        let error = options(15_000, 2_400, 2_000)
            .into_config(None, "host")
            .unwrap_err();
        assert!(matches!(error, ConfigError::RetryTooSlow { .. }));
        assert!(
            options(15_000, 2_401, 2_000)
                .into_config(None, "host")
                .is_ok()
        );
    }

    #[test]
    fn lease_duration_must_be_whole_seconds() {
        let error = options(2_500, 2_000, 500)
            .into_config(None, "host")
            .unwrap_err();
        assert_eq!(
            error,
            ConfigError::FractionalLeaseDuration(Duration::from_millis(2_500))
        );
    }

    #[test]
    fn zero_durations_are_rejected() {
        let error = options(15_000, 10_000, 0)
            .into_config(None, "host")
            .unwrap_err();
        assert_eq!(error, ConfigError::Zero("retry period"));
    }

    #[test]
    fn identity_defaults_to_pod_name_then_a_unique_hostname() {
        let mut anonymous = options(15_000, 10_000, 2_000);
        anonymous.identity = None;
        let from_pod = anonymous
            .clone()
            .into_config(Some("leasehold-7d9f-abc".into()), "host")
            .unwrap();
        assert_eq!(from_pod.identity, "leasehold-7d9f-abc");

        let first = anonymous
            .clone()
            .into_config(None, "host")
            .unwrap()
            .identity;
        let second = anonymous.into_config(None, "host").unwrap().identity;
        assert!(first.starts_with("host_"), "{first}");
        assert_ne!(
            first, second,
            "two processes on one host need distinct identities"
        );
    }

    #[test]
    fn empty_identity_is_rejected() {
        let mut blank = options(15_000, 10_000, 2_000);
        blank.identity = Some(" ".into());
        assert_eq!(
            blank.into_config(None, "host").unwrap_err(),
            ConfigError::Empty { field: "identity" }
        );
    }

    #[test]
    fn durations_parse_with_units_and_explain_bad_input() {
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        let error = parse_duration("fifteen").unwrap_err();
        assert!(error.contains("examples: 15s"), "{error}");
    }
}
