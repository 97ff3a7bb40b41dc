//! Structured logs, written by the host with the plugin's name attached.
//!
//! Use the macros: a lowercase message, then `key = value` fields whose
//! values are formatted with `Display`.
//!
//! ```no_run
//! # let (namespace, copies) = ("default", 3);
//! leasehold_sdk::info!("mirrored configmap", namespace = namespace, copies = copies);
//! leasehold_sdk::debug!("nothing to do");
//! ```

use std::fmt::Display;

use crate::host;

/// How important a log record is.
///
/// ```
/// use leasehold_sdk::log::Level;
/// assert!(Level::Warn > Level::Info);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Step-by-step detail, off unless asked for.
    Trace,
    /// Detail that helps a developer.
    Debug,
    /// Something normal worth knowing.
    Info,
    /// Something a person may need to act on.
    Warn,
    /// Something failed or was lost.
    Error,
}

/// Writes one log record; the macros call this.
///
/// ```no_run
/// use leasehold_sdk::log::{self, Level};
/// log::write(Level::Info, "started", &[("copies", &3)]);
/// ```
pub fn write(level: Level, message: &str, fields: &[(&str, &dyn Display)]) {
    let fields: Vec<(&str, String)> = fields
        .iter()
        .map(|(key, value)| (*key, value.to_string()))
        .collect();
    host::with(|host| host.log(level, message, &fields));
}

/// Logs at a level: `log!(Level::Info, "message", key = value, ...)`.
///
/// ```no_run
/// use leasehold_sdk::log::Level;
/// leasehold_sdk::log!(Level::Info, "resynced", objects = 12);
/// ```
#[macro_export]
macro_rules! log {
    ($level:expr, $message:expr $(, $key:ident = $value:expr)* $(,)?) => {
        $crate::log::write(
            $level,
            &$message,
            &[$((::core::stringify!($key), &$value as &dyn ::core::fmt::Display)),*],
        )
    };
}

/// Logs step-by-step detail.
///
/// ```no_run
/// leasehold_sdk::trace!("comparing", key = "mode");
/// ```
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Trace, $($arg)+) };
}

/// Logs detail that helps a developer, such as a transient failure.
///
/// ```no_run
/// leasehold_sdk::debug!("copy up to date", namespace = "team-a");
/// ```
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Debug, $($arg)+) };
}

/// Logs something normal worth knowing.
///
/// ```no_run
/// leasehold_sdk::info!("created copy", namespace = "team-a", name = "settings");
/// ```
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Info, $($arg)+) };
}

/// Logs something a person may need to act on.
///
/// ```no_run
/// leasehold_sdk::warn!("cannot copy", namespace = "team-a", error = "forbidden");
/// ```
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Warn, $($arg)+) };
}

/// Logs something that failed or was lost.
///
/// ```no_run
/// leasehold_sdk::error!("copy lost", namespace = "team-a");
/// ```
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Error, $($arg)+) };
}
