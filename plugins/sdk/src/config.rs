//! The plugin's configuration: the JSON in its Plugin object's spec, read
//! into a type of the plugin's own.
//!
//! ```no_run
//! #[derive(serde::Deserialize)]
//! #[serde(rename_all = "camelCase")]
//! struct Config {
//!     namespace_selector: String,
//! }
//!
//! # fn example() -> Result<(), leasehold_sdk::config::Error> {
//! let config: Config = leasehold_sdk::config()?;
//! # Ok(()) }
//! ```

use serde::de::DeserializeOwned;

use crate::host;

/// Why the configuration cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The JSON does not fit the plugin's configuration type; a person must
    /// fix the Plugin object, so retrying does not help.
    #[error("invalid plugin configuration")]
    Invalid(#[source] serde_json::Error),
}

/// Reads the configuration as `T`; see [`crate::config()`].
///
/// ```no_run
/// let config: serde_json::Value = leasehold_sdk::config::load().unwrap();
/// ```
pub fn load<T: DeserializeOwned>() -> Result<T, Error> {
    parse(&host::with(|host| host.config()))
}

/// Reads `json` as `T`, treating empty text as `{}` so that a plugin whose
/// fields all have defaults runs without configuration.
///
/// ```
/// #[derive(serde::Deserialize, Default)]
/// struct Config { #[serde(default)] verbose: bool }
///
/// let config: Config = leasehold_sdk::config::parse("").unwrap();
/// assert!(!config.verbose);
/// ```
pub fn parse<T: DeserializeOwned>(json: &str) -> Result<T, Error> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    serde_json::from_str(json).map_err(Error::Invalid)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Config {
        namespace_selector: String,
        #[serde(default)]
        dry_run: bool,
    }

    #[test]
    fn configuration_reads_into_the_plugins_type() {
        let config: Config = parse(r#"{"namespaceSelector":"team"}"#).unwrap();
        assert_eq!(
            config,
            Config {
                namespace_selector: "team".into(),
                dry_run: false
            }
        );
    }

    #[test]
    fn a_missing_required_field_is_an_invalid_configuration() {
        let error = parse::<Config>("{}").unwrap_err();
        assert_eq!(error.to_string(), "invalid plugin configuration");
        assert!(
            std::error::Error::source(&error)
                .unwrap()
                .to_string()
                .contains("namespaceSelector")
        );
    }
}
