//! Kubernetes label selectors, parsed and matched locally.
//!
//! The API server applies selectors in `list` calls; this is for the rest:
//! checking one object a plugin already holds, validating a selector from
//! configuration before using it, and the in-memory cluster of
//! [`crate::testing`].
//!
//! ```
//! use std::collections::BTreeMap;
//! use leasehold_sdk::selector::Selector;
//!
//! let selector: Selector = "team in (a,b),!legacy".parse().unwrap();
//! let labels = BTreeMap::from([("team".to_string(), "a".to_string())]);
//! assert!(selector.matches(&labels));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Why a selector does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A requirement has no key, as in `=value` or `!`.
    #[error("requirement {requirement:?} has no label key")]
    MissingKey {
        /// The requirement as written.
        requirement: String,
    },
    /// A set requirement is not `key in (…)` or `key notin (…)`.
    #[error("requirement {requirement:?} is not `key in (values)` or `key notin (values)`")]
    BadSet {
        /// The requirement as written.
        requirement: String,
    },
    /// Parentheses do not pair up.
    #[error("unbalanced parentheses in selector {selector:?}")]
    Unbalanced {
        /// The selector as written.
        selector: String,
    },
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key`: the label is set.
    Exists(String),
    /// `!key`: the label is not set.
    DoesNotExist(String),
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value`: not set, or set to something else.
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)`: not set, or set to none of them.
    NotIn(String, Vec<String>),
}

impl Requirement {
    /// Whether `labels` satisfy this requirement.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use leasehold_sdk::selector::Requirement;
    /// let requirement = Requirement::NotEquals("tier".into(), "cache".into());
    /// assert!(requirement.matches(&BTreeMap::new()));
    /// ```
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Self::Exists(key) => labels.contains_key(key),
            Self::DoesNotExist(key) => !labels.contains_key(key),
            Self::Equals(key, value) => labels.get(key) == Some(value),
            Self::NotEquals(key, value) => labels.get(key) != Some(value),
            Self::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Self::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
        }
    }
}

/// A parsed label selector: every requirement must hold. The empty selector
/// matches everything.
///
/// ```
/// use leasehold_sdk::selector::Selector;
/// let selector: Selector = "app=web, tier!=cache".parse().unwrap();
/// assert_eq!(selector.to_string(), "app=web,tier!=cache");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// The requirements, all of which must hold.
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// Whether `labels` satisfy every requirement.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// let selector: leasehold_sdk::selector::Selector = "".parse().unwrap();
    /// assert!(selector.matches(&BTreeMap::new()));
    /// ```
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements
            .iter()
            .all(|requirement| requirement.matches(labels))
    }
}

impl FromStr for Selector {
    type Err = Error;

    fn from_str(selector: &str) -> Result<Self, Error> {
        let requirements = split_top_level(selector)?
            .into_iter()
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(requirement)
            .collect::<Result<_, _>>()?;
        Ok(Self { requirements })
    }
}

/// Splits on the commas that separate requirements, not those inside a set.
fn split_top_level(selector: &str) -> Result<Vec<&str>, Error> {
    let unbalanced = || Error::Unbalanced {
        selector: selector.to_owned(),
    };
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0u32, 0);
    for (index, character) in selector.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or_else(unbalanced)?,
            ',' if depth == 0 => {
                parts.push(&selector[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(unbalanced());
    }
    parts.push(&selector[start..]);
    Ok(parts)
}

fn requirement(text: &str) -> Result<Requirement, Error> {
    let key = |key: &str| {
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            Err(Error::MissingKey {
                requirement: text.to_owned(),
            })
        } else {
            Ok(key.to_owned())
        }
    };
    if let Some(open) = text.find('(') {
        let bad_set = || Error::BadSet {
            requirement: text.to_owned(),
        };
        let values = text[open + 1..].strip_suffix(')').ok_or_else(bad_set)?;
        let values = values
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        let head = text[..open].trim();
        return if let Some(name) = head.strip_suffix("notin") {
            Ok(Requirement::NotIn(key(name)?, values))
        } else if let Some(name) = head.strip_suffix("in") {
            // `key in` needs a space before `in`, or `domain=login` style
            // keys would lose their last letters.
            if !name.ends_with(char::is_whitespace) {
                return Err(bad_set());
            }
            Ok(Requirement::In(key(name)?, values))
        } else {
            Err(bad_set())
        };
    }
    if let Some((name, value)) = text.split_once("!=") {
        return Ok(Requirement::NotEquals(key(name)?, value.trim().to_owned()));
    }
    if let Some((name, value)) = text.split_once("==").or_else(|| text.split_once('=')) {
        return Ok(Requirement::Equals(key(name)?, value.trim().to_owned()));
    }
    if let Some(name) = text.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(key(name)?));
    }
    Ok(Requirement::Exists(key(text)?))
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exists(key) => write!(f, "{key}"),
            Self::DoesNotExist(key) => write!(f, "!{key}"),
            Self::Equals(key, value) => write!(f, "{key}={value}"),
            Self::NotEquals(key, value) => write!(f, "{key}!={value}"),
            Self::In(key, values) => write!(f, "{key} in ({})", values.join(",")),
            Self::NotIn(key, values) => write!(f, "{key} notin ({})", values.join(",")),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, requirement) in self.requirements.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn parse(selector: &str) -> Selector {
        selector.parse().unwrap()
    }

    #[test]
    fn every_requirement_form_parses() {
        let selector = parse("a, !b, c=1, d==2, e!=3, f in (x, y), g notin (z)");
        assert_eq!(
            selector.requirements,
            [
                Requirement::Exists("a".into()),
                Requirement::DoesNotExist("b".into()),
                Requirement::Equals("c".into(), "1".into()),
                Requirement::Equals("d".into(), "2".into()),
                Requirement::NotEquals("e".into(), "3".into()),
                Requirement::In("f".into(), vec!["x".into(), "y".into()]),
                Requirement::NotIn("g".into(), vec!["z".into()]),
            ]
        );
    }

    #[test]
    fn keys_with_prefixes_and_dots_parse() {
        let selector = parse("leasehold.dev/mirror=true");
        assert!(selector.matches(&labels(&[("leasehold.dev/mirror", "true")])));
    }

    #[test]
    fn negative_requirements_match_objects_without_the_label() {
        let selector = parse("tier!=cache,zone notin (a)");
        assert!(selector.matches(&labels(&[])));
        assert!(!selector.matches(&labels(&[("tier", "cache")])));
        assert!(!selector.matches(&labels(&[("zone", "a")])));
    }

    #[test]
    fn all_requirements_must_hold() {
        let selector = parse("team in (a,b),env=prod");
        assert!(selector.matches(&labels(&[("team", "b"), ("env", "prod")])));
        assert!(!selector.matches(&labels(&[("team", "b"), ("env", "dev")])));
        assert!(!selector.matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn malformed_selectors_are_errors_not_match_alls() {
        assert!(matches!(
            "=x".parse::<Selector>(),
            Err(Error::MissingKey { .. })
        ));
        assert!(matches!(
            "a in (x".parse::<Selector>(),
            Err(Error::Unbalanced { .. })
        ));
        assert!(matches!(
            "a within (x)".parse::<Selector>(),
            Err(Error::BadSet { .. })
        ));
        assert!(matches!(
            "a b".parse::<Selector>(),
            Err(Error::MissingKey { .. })
        ));
    }

    #[test]
    fn a_selector_prints_as_it_parses() {
        let text = "a,!b,c=1,e!=3,f in (x,y),g notin (z)";
        assert_eq!(parse(text).to_string(), text);
    }
}
