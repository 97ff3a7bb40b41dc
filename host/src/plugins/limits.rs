//! Reading a plugin's limits from the text users write (`64Mi`, `2s`), the
//! same way for manifests and Plugin objects.

use std::time::Duration;

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
        Some(text) => humantime::parse_duration(text)
            .map_err(|error| InvalidField::new("limits.timeout", format!("{text:?}: {error}")))?,
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
    })
}

/// Parses a Kubernetes-style byte quantity: `1048576`, `512Ki`, `64Mi`, `1Gi`.
pub fn parse_quantity(text: &str) -> Result<usize, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let number: usize = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a byte quantity (examples: 64Mi, 512Ki, 1Gi)"))?;
    let unit: usize = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return Err(format!("{text:?} has an unknown unit (use Ki, Mi or Gi)")),
    };
    number
        .checked_mul(unit)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_use_binary_units() {
        assert_eq!(parse_quantity("1048576"), Ok(1 << 20));
        assert_eq!(parse_quantity("512Ki"), Ok(512 << 10));
        assert_eq!(parse_quantity("1Gi"), Ok(1 << 30));
        assert!(parse_quantity("1MB").unwrap_err().contains("unknown unit"));
        assert!(
            parse_quantity("Mi")
                .unwrap_err()
                .contains("not a byte quantity")
        );
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
