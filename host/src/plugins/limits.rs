//! Reading a plugin's limits from the text users write (`64Mi`, `0.5Gi`,
//! `2s`, `1m30s`), the same way for manifests and Plugin objects: memory as
//! a Kubernetes quantity (`kube_quantity`), time as a Go duration
//! (`kube::core::Duration`), as everywhere else in a Kubernetes object.

use std::num::NonZeroU32;
use std::time::Duration;

use kube_quantity::ParsedQuantity;

use crate::runtime::{Limits, MAX_MEMORY_BYTES};

/// The longest reconcile budget a plugin may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// A field with a value the host cannot use, named as the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("field {field}: {reason}")]
pub struct InvalidField {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidField {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// Limits from their text forms; absent values take [`Limits::default`].
/// `concurrency_field` is what the concurrency is called where it was read.
pub fn parse_limits(
    memory: Option<&str>,
    timeout: Option<&str>,
    concurrency: Option<u16>,
    concurrency_field: &'static str,
) -> Result<Limits, InvalidField> {
    let defaults = Limits::default();
    let memory_bytes = match memory {
        None => defaults.memory_bytes,
        Some(text) => {
            parse_quantity(text).map_err(|reason| InvalidField::new("limits.memory", reason))?
        }
    };
    if memory_bytes > MAX_MEMORY_BYTES {
        return Err(InvalidField::new(
            "limits.memory",
            format!("{memory_bytes} bytes is more than the host maximum of {MAX_MEMORY_BYTES}"),
        ));
    }
    let timeout = match timeout {
        None => defaults.timeout,
        Some(text) => {
            parse_duration(text).map_err(|reason| InvalidField::new("limits.timeout", reason))?
        }
    };
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(InvalidField::new(
            "limits.timeout",
            "must be between 1ms and 5m",
        ));
    }
    let concurrency = concurrency.unwrap_or(defaults.concurrency);
    if concurrency == 0 {
        return Err(InvalidField::new(concurrency_field, "must be at least 1"));
    }
    Ok(Limits {
        memory_bytes,
        timeout,
        concurrency,
        ..defaults
    })
}

/// What the host holds a plugin's use of the API server to, around the
/// runtime's per-call [`Limits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Requests per second its client may send, on average...
    pub qps: NonZeroU32,
    /// ...and at once after a quiet spell.
    pub burst: NonZeroU32,
    /// The shortest requeue or resync it may ask for; shorter ones wait this long.
    pub min_requeue: Duration,
}

/// The shortest requeue floor a Plugin may set.
pub const MIN_REQUEUE_FLOOR: Duration = Duration::from_millis(100);

impl Default for Budget {
    /// 10 requests a second with bursts of 20 (client-go's default is 5 and
    /// 10 for a whole controller manager's client), requeues at most once a
    /// second per object.
    fn default() -> Self {
        Self {
            qps: NonZeroU32::new(10).expect("non-zero"),
            burst: NonZeroU32::new(20).expect("non-zero"),
            min_requeue: Duration::from_secs(1),
        }
    }
}

/// A budget from a Plugin's `limits`; absent values take [`Budget::default`].
pub fn parse_budget(
    qps: Option<u32>,
    burst: Option<u32>,
    min_requeue: Option<&str>,
) -> Result<Budget, InvalidField> {
    let defaults = Budget::default();
    let positive = |value: Option<u32>, default: NonZeroU32, field| match value {
        None => Ok(default),
        Some(value) => {
            NonZeroU32::new(value).ok_or_else(|| InvalidField::new(field, "must be at least 1"))
        }
    };
    let qps = positive(qps, defaults.qps, "limits.apiQPS")?;
    let burst = positive(burst, defaults.burst.max(qps), "limits.apiBurst")?;
    let min_requeue = match min_requeue {
        None => defaults.min_requeue,
        Some(text) => parse_duration(text)
            .map_err(|reason| InvalidField::new("limits.minRequeueAfter", reason))?,
    };
    if min_requeue < MIN_REQUEUE_FLOOR {
        return Err(InvalidField::new(
            "limits.minRequeueAfter",
            format!("must be at least {MIN_REQUEUE_FLOOR:?}"),
        ));
    }
    Ok(Budget {
        qps,
        burst,
        min_requeue,
    })
}

/// Parses a Kubernetes quantity of bytes: `1048576`, `512Ki`, `64Mi`,
/// `0.5Gi`, `64M`, `1e9`. A fraction of a byte rounds up, as the kubelet's
/// memory limits do.
pub fn parse_quantity(text: &str) -> Result<usize, String> {
    let not_a_quantity =
        || format!("{text:?} is not a Kubernetes quantity (examples: 64Mi, 0.5Gi, 512Ki, 64M)");
    // kube_quantity reads a bare suffix ("Mi") as zero; the API server
    // refuses it, and so do we.
    if !text.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '.' | '+' | '-')) {
        return Err(not_a_quantity());
    }
    let quantity = ParsedQuantity::try_from(text).map_err(|_| not_a_quantity())?;
    let bytes = quantity
        .to_bytes_f64()
        .filter(|bytes| bytes.is_finite())
        .ok_or_else(|| format!("{text:?} is not a number of bytes"))?;
    if bytes < 0.0 {
        return Err(format!("{text:?} is negative"));
    }
    // Exact below 2^53; past that no limit the host accepts lies.
    if bytes.ceil() > usize::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes.ceil() as usize)
}

/// Parses a Go duration (`2s`, `500ms`, `1m30s`), as Kubernetes objects
/// write them.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration: kube::core::Duration = text.parse().map_err(|error| {
        format!("{text:?} is not a duration ({error}; examples: 2s, 500ms, 1m30s)")
    })?;
    if duration.is_negative() {
        return Err(format!("{text:?} is negative"));
    }
    Ok(duration.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_as_kubernetes_reads_them() {
        assert_eq!(parse_quantity("1048576"), Ok(1 << 20));
        assert_eq!(parse_quantity("512Ki"), Ok(512 << 10));
        assert_eq!(parse_quantity("1Gi"), Ok(1 << 30));
        assert_eq!(parse_quantity("0.5Gi"), Ok(512 << 20));
        assert_eq!(parse_quantity("64M"), Ok(64_000_000));
        assert_eq!(
            parse_quantity("1.5"),
            Ok(2),
            "a fraction of a byte rounds up"
        );
    }

    #[test]
    fn what_is_not_a_quantity_of_bytes_says_so() {
        assert!(
            parse_quantity("1MB")
                .unwrap_err()
                .contains("not a Kubernetes quantity")
        );
        assert!(
            parse_quantity("Mi")
                .unwrap_err()
                .contains("not a Kubernetes quantity")
        );
        assert!(
            parse_quantity("")
                .unwrap_err()
                .contains("not a Kubernetes quantity")
        );
        assert!(parse_quantity("-1Mi").unwrap_err().contains("negative"));
    }

    #[test]
    fn durations_are_go_durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(
            parse_duration("2 seconds")
                .unwrap_err()
                .contains("examples: 2s")
        );
        assert!(parse_duration("-1s").unwrap_err().contains("negative"));
    }

    #[test]
    fn absent_limits_are_the_defaults() {
        assert_eq!(parse_limits(None, None, None, "c"), Ok(Limits::default()));
    }

    #[test]
    fn each_bad_limit_names_its_field() {
        let field = |result: Result<Limits, InvalidField>| result.unwrap_err().field;
        assert_eq!(
            field(parse_limits(Some("lots"), None, None, "c")),
            "limits.memory"
        );
        assert_eq!(
            field(parse_limits(Some("4Gi"), None, None, "c")),
            "limits.memory"
        );
        assert_eq!(
            field(parse_limits(None, Some("0s"), None, "c")),
            "limits.timeout"
        );
        assert_eq!(
            field(parse_limits(None, Some("forever"), None, "c")),
            "limits.timeout"
        );
        assert_eq!(
            field(parse_limits(None, Some("1h"), None, "c")),
            "limits.timeout"
        );
        assert_eq!(field(parse_limits(None, None, Some(0), "c")), "c");
    }
}
