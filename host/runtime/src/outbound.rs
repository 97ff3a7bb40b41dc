//! Outbound HTTP (`wasi:http/outgoing-handler`): off unless a plugin's
//! Plugin names the hosts it may reach, as Spin's `allowed_outbound_hosts`
//! does.
//!
//! A request leaves only when all of these hold, checked in this order when
//! the plugin sends it:
//! 1. its scheme, host and port match an entry of [`AllowedHosts`];
//! 2. the call's budget has room: a request counts as one of the
//!    reconcile's `max_calls`, like a Kubernetes call;
//! 3. the [`Backend`](super::Backend) lets it go: on a leader that waits for
//!    the plugin's rate limit and refuses once the term is over, so a plugin
//!    that lost its lease reaches nothing outside either.
//!
//! Any refusal reaches the plugin as wasi:http's `HTTP-request-denied`
//! error value (the contract's error codes carry no message), and the host
//! says why in its log and the plugin's `limited` counter. The request is
//! bounded by the call's deadline: its connect, first-byte and
//! between-bytes timeouts are cut to the time left, so a plugin blocked on
//! a slow server wakes when its reconcile's time is up.

use std::future::Future;
use std::time::{Duration, Instant};

use http::uri::{Scheme, Uri};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::Call;

/// Where a plugin's outbound HTTP requests may go: a list of
/// `scheme://host[:port]` entries.
///
/// * `scheme` is `http`, `https` or `*` (either);
/// * `host` is a DNS name or an IP address (IPv6 in brackets), `*` for any
///   host, or `*.example.com` for any name under `example.com` (not
///   `example.com` itself);
/// * `port` is a number or `*`; without one, the scheme's default (80 or
///   443) is the only port allowed.
///
/// Names compare without regard to case. Paths are not part of an entry: a
/// plugin that may reach a host may reach all of it. The default allows
/// nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedHosts(Vec<Entry>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    scheme: Option<Scheme>,
    host: Host,
    port: Port,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    Any,
    /// `*.suffix`: any name ending in `.suffix`.
    Under(String),
    Exactly(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Port {
    Any,
    /// None: the scheme's default.
    Exactly(Option<u16>),
}

/// An entry of a Plugin's `allowedOutboundHosts` that is not
/// `scheme://host[:port]`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("entry {entry:?}: {reason}")]
pub struct InvalidHost {
    entry: String,
    reason: &'static str,
}

impl AllowedHosts {
    /// Parses every entry; the first malformed one is the error.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, InvalidHost> {
        entries
            .iter()
            .map(|entry| Entry::parse(entry.as_ref()))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether nothing may be reached.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a request to `uri` may leave.
    pub fn permits(&self, uri: &Uri) -> bool {
        let (Some(scheme), Some(host)) = (uri.scheme(), uri.host()) else {
            return false;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.0
            .iter()
            .any(|entry| entry.permits(scheme, host, uri.port_u16()))
    }
}

impl Entry {
    fn parse(entry: &str) -> Result<Self, InvalidHost> {
        let invalid = |reason| InvalidHost {
            entry: entry.to_owned(),
            reason,
        };
        let (scheme, rest) = entry
            .split_once("://")
            .ok_or_else(|| invalid("name a scheme, as in https://api.example.com"))?;
        let scheme = match scheme {
            "http" => Some(Scheme::HTTP),
            "https" => Some(Scheme::HTTPS),
            "*" => None,
            _ => return Err(invalid("the scheme must be http, https or *")),
        };
        if rest.contains(['/', '?', '#', '@']) {
            return Err(invalid(
                "only scheme://host[:port]: no path, query or user; a plugin that may reach a host may reach all of it",
            ));
        }
        let (host, port) = split_port(rest).ok_or_else(|| invalid("unclosed [ in an IPv6 host"))?;
        let port = match port {
            None => Port::Exactly(None),
            Some("*") => Port::Any,
            Some(port) => Port::Exactly(Some(
                port.parse::<u16>()
                    .ok()
                    .filter(|port| *port != 0)
                    .ok_or_else(|| invalid("the port must be 1-65535 or *"))?,
            )),
        };
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            Host::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if !is_name(suffix) {
                return Err(invalid("a wildcard is *.domain, with a domain after it"));
            }
            Host::Under(suffix.to_owned())
        } else if is_name(&host) || host.parse::<std::net::IpAddr>().is_ok() {
            Host::Exactly(host)
        } else {
            return Err(invalid(
                "the host must be a DNS name, an IP address, * or *.domain",
            ));
        };
        Ok(Self { scheme, host, port })
    }

    fn permits(&self, scheme: &Scheme, host: &str, port: Option<u16>) -> bool {
        let scheme_matches = self.scheme.as_ref().is_none_or(|allowed| allowed == scheme);
        let host_matches = match &self.host {
            Host::Any => true,
            Host::Under(suffix) => host
                .to_ascii_lowercase()
                .strip_suffix(suffix.as_str())
                .is_some_and(|label| label.len() > 1 && label.ends_with('.')),
            Host::Exactly(name) => host.eq_ignore_ascii_case(name),
        };
        let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
        let port = port.unwrap_or(default_port);
        let port_matches = match self.port {
            Port::Any => true,
            Port::Exactly(allowed) => port == allowed.unwrap_or(default_port),
        };
        scheme_matches && host_matches && port_matches
    }
}

/// `host[:port]`, with an IPv6 host in brackets; `None` when a bracket is
/// not closed.
fn split_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return Some((host, after.strip_prefix(':')));
    }
    Some(match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

/// A DNS name: dot-separated labels of letters, digits and hyphens.
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

type Response = http::Response<WasiBody>;
type Io = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for Call {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Io,
    ) -> Box<dyn Future<Output = Result<(Response, Io), HttpError>> + Send> {
        drop(fut);
        let backend = self.context.backend.clone();
        let uri = request.uri();
        let origin = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("https"),
            uri.authority().map_or("", |authority| authority.as_str())
        );
        let method = request.method().clone();
        let allowed = self.context.allowed_hosts.permits(uri);
        // Counted like a Kubernetes call, whether or not it may leave.
        let admitted = self.admit(0);
        Box::new(async move {
            if !allowed {
                backend.limited(
                    "OutboundDenied",
                    &format!(
                        "{method} {origin}: not in the Plugin's allowedOutboundHosts; add the host there to allow it"
                    ),
                );
                backend.called("http", 0);
                return Err(HttpError::HttpRequestDenied);
            }
            let Ok(deadline) = admitted else {
                backend.called("http", 0);
                return Err(HttpError::HttpRequestDenied);
            };
            let sent = tokio::time::timeout_at(deadline.into(), async {
                if let Err(refused) = backend.outbound(&method, &origin).await {
                    backend.limited(
                        "OutboundDenied",
                        &format!("{method} {origin}: {}", refused.message),
                    );
                    return Err(HttpError::HttpRequestDenied);
                }
                let options = within(options, deadline);
                wasmtime_wasi_http::default_send_request(request, Some(options)).await
            })
            .await;
            match sent {
                Ok(Ok((response, io))) => {
                    backend.called("http", response.status().as_u16());
                    Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Io))
                }
                Ok(Err(error)) => {
                    backend.called("http", 0);
                    Err(error)
                }
                Err(_) => {
                    backend.limited(
                        "Timeout",
                        &format!("{method} {origin}: no answer before the call's deadline"),
                    );
                    backend.called("http", 504);
                    Err(HttpError::ConnectionTimeout)
                }
            }
        })
    }
}

/// The plugin's request options with every timeout cut to the time left
/// before `deadline`.
fn within(options: Option<RequestOptions>, deadline: Instant) -> RequestOptions {
    let left = deadline.saturating_duration_since(Instant::now());
    let cut = |asked: Option<Duration>| Some(asked.map_or(left, |asked| asked.min(left)));
    let options = options.unwrap_or_default();
    RequestOptions {
        connect_timeout: cut(options.connect_timeout),
        first_byte_timeout: cut(options.first_byte_timeout),
        between_bytes_timeout: cut(options.between_bytes_timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(entries).unwrap()
    }

    fn permits(hosts: &AllowedHosts, uri: &str) -> bool {
        hosts.permits(&uri.parse().unwrap())
    }

    #[test]
    fn nothing_is_reachable_by_default() {
        assert!(!permits(&AllowedHosts::default(), "https://example.com/"));
    }

    #[test]
    fn an_entry_allows_its_scheme_host_and_default_port_only() {
        let hosts = allowed(&["https://api.example.com"]);
        assert!(permits(&hosts, "https://api.example.com/v1/zones"));
        assert!(permits(&hosts, "https://API.Example.com:443/"));
        assert!(!permits(&hosts, "http://api.example.com/"));
        assert!(!permits(&hosts, "https://api.example.com:8443/"));
        assert!(!permits(&hosts, "https://example.com/"));
        assert!(!permits(&hosts, "https://api.example.com.evil.io/"));
    }

    #[test]
    fn ports_and_schemes_can_be_named_or_wildcards() {
        let hosts = allowed(&["http://127.0.0.1:8080", "*://cache.local:*"]);
        assert!(permits(&hosts, "http://127.0.0.1:8080/hook"));
        assert!(!permits(&hosts, "http://127.0.0.1:8081/hook"));
        assert!(!permits(&hosts, "http://127.0.0.1/hook"));
        assert!(permits(&hosts, "https://cache.local:9999/"));
        assert!(permits(&hosts, "http://cache.local/"));
    }

    #[test]
    fn a_wildcard_covers_names_under_a_domain_but_not_the_domain() {
        let hosts = allowed(&["https://*.example.com"]);
        assert!(permits(&hosts, "https://a.example.com/"));
        assert!(permits(&hosts, "https://a.b.example.com/"));
        assert!(!permits(&hosts, "https://example.com/"));
        assert!(!permits(&hosts, "https://notexample.com/"));
        assert!(permits(&allowed(&["https://*"]), "https://anything.io/"));
    }

    #[test]
    fn ipv6_hosts_are_written_in_brackets() {
        let hosts = allowed(&["http://[::1]:8080"]);
        assert!(permits(&hosts, "http://[::1]:8080/"));
        assert!(!permits(&hosts, "http://[::2]:8080/"));
    }

    #[test]
    fn malformed_entries_are_refused_with_the_reason() {
        for (entry, reason) in [
            ("api.example.com", "name a scheme"),
            ("ftp://example.com", "http, https or *"),
            ("https://example.com/path", "no path"),
            ("https://user@example.com", "no path, query or user"),
            ("https://example.com:0", "1-65535"),
            ("https://example.com:http", "1-65535"),
            ("https://*.", "*.domain"),
            ("https://exa mple.com", "DNS name"),
            ("https://", "DNS name"),
            ("https://[::1", "unclosed ["),
        ] {
            let error = AllowedHosts::parse(&[entry]).unwrap_err().to_string();
            assert!(error.contains(reason), "{entry}: {error}");
            assert!(error.contains(entry), "{entry}: {error}");
        }
    }

    #[test]
    fn timeouts_are_cut_to_the_time_left() {
        let deadline = Instant::now() + Duration::from_secs(2);
        let options = within(
            Some(RequestOptions {
                connect_timeout: Some(Duration::from_millis(100)),
                first_byte_timeout: Some(Duration::from_secs(60)),
                between_bytes_timeout: None,
            }),
            deadline,
        );
        assert_eq!(options.connect_timeout, Some(Duration::from_millis(100)));
        assert!(options.first_byte_timeout.unwrap() <= Duration::from_secs(2));
        assert!(options.between_bytes_timeout.unwrap() <= Duration::from_secs(2));
    }
}
