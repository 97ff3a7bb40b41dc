//! A plugin's `get` and `list` answered from the stores its watches keep
//! anyway, the way controller-runtime's client reads from its informers:
//! a reconcile's reads cost no request. Writes still go to the API server.
//!
//! A store answers only what it can answer completely and correctly:
//!
//! * **Completely**: the store's watch covers the request: same kind, a
//!   namespace inside the watch's, and a label selector at least as narrow
//!   as the watch's (every requirement of the watch's selector is in the
//!   request's, or implied by it). A field selector always goes to the API
//!   server. A store that filters by labels answers a `get` only when it
//!   holds the object (a miss may be an object without the label).
//! * **Correctly, after the plugin's own writes**: every write made through
//!   the plugin's client is remembered until its store shows it (the same
//!   or a later resourceVersion, or the object gone after a delete). A read
//!   that could return one of them (a `get` of that object; a list in its
//!   namespace whose selector the labels before or after the write match)
//!   goes to the API server until then. Writes a read cannot return do not
//!   send it there: at 10 000 ConfigMaps (`make bench-scale`) every list of
//!   the kind went live while any write was unseen, and a live list is
//!   paged, which the API server answers from etcd, reading the whole kind.
//!   (Waiting for the watch instead stalls under load: kube-runtime polls a
//!   controller's watches only while a reconcile slot is free.)
//!   So a reconcile always sees what the previous ones wrote, as it would
//!   reading live; it may see other writers' changes a watch-delivery late,
//!   as any informer does, and its next trigger brings them.
//! * **Once listed**: a store whose first list has not completed answers
//!   nothing.
//!
//! A list costs what it returns, not the size of the store: each store is
//! indexed by label and namespace ([`index`](super::index)).
//!
//! The stores keep objects without `managedFields` ([`strip`]): the host
//! never reads them, they are often the largest part of an object, and
//! Kubewarden's field masks drop them for the same reason.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::index::Indexed;
use futures::FutureExt;
use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::core::{Expression, Selector, SelectorExt};

/// How long a write may stay unseen by its store before it is presumed
/// superseded (deleted or rewritten by someone else meanwhile). A watch
/// delivers in milliseconds; this only keeps a lost write from sending
/// every read of its kind to the API server for ever.
const UNSEEN_LIMIT: Duration = Duration::from_secs(10);
/// Unseen writes are swept once there are this many (a plugin that writes
/// thousands of objects without reading them back).
const SWEEP_AT: usize = 1024;
/// The stores of one plugin's controller.
#[derive(Default)]
pub struct Caches {
    stores: Vec<Cached>,
    unseen: Mutex<HashMap<Written, Unseen>>,
}

/// Why a list cannot be answered from the stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Live {
    /// No store covers it (kind, namespace, selectors), or one that does
    /// has not finished its first list.
    Uncovered,
    /// A store covers it but does not show some of the plugin's writes yet.
    Unseen,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("stores", &self.stores.len())
            .finish_non_exhaustive()
    }
}

struct Cached {
    /// The namespace the watch is limited to; `None` watches all.
    namespace: Option<String>,
    /// The watch's label selector, parsed.
    selector: Vec<Expression>,
    indexed: Indexed,
}

/// One object a plugin wrote.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Written {
    api_version: String,
    kind: String,
    namespace: Option<String>,
    name: String,
}

/// What the store must show for a write to be seen.
struct Unseen {
    expected: Expected,
    /// The labels the write left on the object; `None` after a delete (a
    /// list can then return only the version its store still holds).
    labels: Option<BTreeMap<String, String>>,
    at: Instant,
}

enum Expected {
    /// This resourceVersion or a later one.
    Version(String),
    /// The object gone.
    Gone,
}

/// A kind, as the plugin names it in a call.
#[derive(Clone, Copy, Debug)]
pub struct Kind<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
}

impl Caches {
    /// Adds the store (`indexed`) of a watch in `namespace` (all when
    /// `None`) with `label_selector`. A selector this module cannot read
    /// (the API server accepted it, so that is this parser's limit) makes
    /// the store answer nothing rather than answer wrongly.
    pub fn add(
        &mut self,
        namespace: Option<String>,
        label_selector: Option<&str>,
        indexed: Indexed,
    ) {
        let selector = match label_selector.map(parse_selector).transpose() {
            Ok(selector) => selector.unwrap_or_default(),
            Err(error) => {
                tracing::debug!(%error, "watch selector not understood; its store answers no reads");
                return;
            }
        };
        self.stores.push(Cached {
            namespace,
            selector,
            indexed,
        });
    }

    /// The object, or that it does not exist, if a store can say so; `None`
    /// sends the read to the API server.
    pub fn get(
        &self,
        kind: Kind<'_>,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Option<Arc<DynamicObject>>> {
        let this_object = |written: &Written, _: &Unseen| {
            written.namespace.as_deref() == namespace && written.name == name
        };
        if !self.all_seen(kind, this_object) {
            return None;
        }
        let mut fallback = None;
        // Any store's hit is the object; only a store of everything can
        // say it does not exist.
        for cached in self.covering(kind, namespace, None) {
            match cached.indexed.get(namespace, name) {
                Some(found) => return Some(Some(found)),
                None if cached.selector.is_empty() => fallback = Some(None),
                None => {}
            }
        }
        fallback
    }

    /// The objects a list would return, sorted as the API server sorts
    /// them, if a store holds all of them; otherwise why the list must go to
    /// the API server.
    pub fn list(
        &self,
        kind: Kind<'_>,
        namespace: Option<&str>,
        label_selector: Option<&str>,
        field_selector: Option<&str>,
    ) -> Result<Vec<Arc<DynamicObject>>, Live> {
        if field_selector.is_some_and(|fields| !fields.trim().is_empty()) {
            return Err(Live::Uncovered);
        }
        // A selector this parser cannot read goes to the API server, which
        // says what is wrong with it.
        let wanted = match label_selector {
            Some(text) => parse_selector(text).map_err(|_| Live::Uncovered)?,
            None => Vec::new(),
        };
        let cached = self
            .covering(kind, namespace, Some(&wanted))
            .next()
            .ok_or(Live::Uncovered)?;
        let selector: Selector = wanted.iter().cloned().collect();
        let listable = |written: &Written, unseen: &Unseen| {
            namespace.is_none_or(|namespace| written.namespace.as_deref() == Some(namespace))
                && (unseen
                    .labels
                    .as_ref()
                    .is_some_and(|labels| selector.matches(labels))
                    || self.stored_matches(written, &selector))
        };
        if !self.all_seen(kind, listable) {
            return Err(Live::Unseen);
        }
        let mut items: Vec<_> = cached
            .indexed
            .candidates(namespace, &wanted)
            .into_iter()
            .filter(|object| {
                namespace
                    .is_none_or(|namespace| object.metadata.namespace.as_deref() == Some(namespace))
                    && selector.matches(object.labels())
            })
            .collect();
        items.sort_by_key(|item| (item.namespace(), item.name_any()));
        Ok(items)
    }

    /// Remembers a write the API server answered with `object`, until its
    /// store shows it.
    pub fn wrote(&self, kind: Kind<'_>, object: &DynamicObject) {
        let Some(version) = object.resource_version() else {
            return;
        };
        let unseen = Unseen {
            expected: Expected::Version(version),
            labels: Some(object.labels().clone()),
            at: Instant::now(),
        };
        self.remember(kind, object.namespace(), object.name_any(), unseen);
    }

    /// Remembers a delete, until its store no longer holds the object.
    pub fn deleted(&self, kind: Kind<'_>, namespace: Option<String>, name: String) {
        let unseen = Unseen {
            expected: Expected::Gone,
            labels: None,
            at: Instant::now(),
        };
        self.remember(kind, namespace, name, unseen);
    }

    fn remember(&self, kind: Kind<'_>, namespace: Option<String>, name: String, write: Unseen) {
        if !self.stores.iter().any(|cached| of_kind(cached, kind)) {
            return;
        }
        let written = Written {
            api_version: kind.api_version.to_owned(),
            kind: kind.kind.to_owned(),
            namespace,
            name,
        };
        let mut unseen = self.unseen.lock().unwrap_or_else(|e| e.into_inner());
        unseen.insert(written, write);
        if unseen.len() >= SWEEP_AT {
            unseen.retain(|written, unseen| !self.shows(written, unseen));
        }
    }

    /// Whether the stores show every write of `kind` that a read could
    /// return (`relevant`), forgetting the writes they show.
    fn all_seen(&self, kind: Kind<'_>, relevant: impl Fn(&Written, &Unseen) -> bool) -> bool {
        let mut unseen = self.unseen.lock().unwrap_or_else(|e| e.into_inner());
        unseen.retain(|written, unseen| {
            written.api_version != kind.api_version
                || written.kind != kind.kind
                || !self.shows(written, unseen)
        });
        !unseen.iter().any(|(written, unseen)| {
            written.api_version == kind.api_version
                && written.kind == kind.kind
                && relevant(written, unseen)
        })
    }

    /// Whether a store holds `written` as it was before the write with
    /// labels `selector` matches (a list would return that old version).
    fn stored_matches(&self, written: &Written, selector: &Selector) -> bool {
        self.stores
            .iter()
            .filter(|cached| of_kind(cached, written.kind()))
            .any(|cached| {
                cached
                    .holding(written)
                    .is_some_and(|stored| selector.matches(stored.labels()))
            })
    }

    /// Whether the stores show `written` as expected (or it is too old to wait for).
    fn shows(&self, written: &Written, unseen: &Unseen) -> bool {
        if unseen.at.elapsed() > UNSEEN_LIMIT {
            return true;
        }
        self.stores
            .iter()
            .filter(|cached| of_kind(cached, written.kind()))
            // A store watching another namespace never will.
            .filter(|cached| {
                cached
                    .namespace
                    .as_ref()
                    .is_none_or(|watched| written.namespace.as_ref() == Some(watched))
            })
            .all(|cached| {
                let found = cached.holding(written);
                match (&unseen.expected, found) {
                    (Expected::Gone, found) => found.is_none(),
                    // A store that filters by labels may never hold it.
                    (Expected::Version(_), None) => !cached.selector.is_empty(),
                    (Expected::Version(expected), Some(found)) => found
                        .resource_version()
                        .is_some_and(|seen| seen == *expected || newer(&seen, expected)),
                }
            })
    }

    /// The listed stores of `kind` whose watch covers `namespace` and, with
    /// `wanted`, whose selector `wanted` is at least as narrow as.
    fn covering<'a>(
        &'a self,
        kind: Kind<'a>,
        namespace: Option<&'a str>,
        wanted: Option<&'a [Expression]>,
    ) -> impl Iterator<Item = &'a Cached> + 'a {
        self.stores.iter().filter(move |cached| {
            of_kind(cached, kind)
                && cached
                    .namespace
                    .as_deref()
                    .is_none_or(|watched| namespace == Some(watched))
                && wanted.is_none_or(|wanted| {
                    cached
                        .selector
                        .iter()
                        .all(|required| wanted.iter().any(|asked| implies(asked, required)))
                })
                && cached
                    .indexed
                    .store()
                    .wait_until_ready()
                    .now_or_never()
                    .is_some_and(|ready| ready.is_ok())
        })
    }
}

impl Written {
    fn kind(&self) -> Kind<'_> {
        Kind {
            api_version: &self.api_version,
            kind: &self.kind,
        }
    }
}

impl Cached {
    /// The store's version of the object `written` names.
    fn holding(&self, written: &Written) -> Option<Arc<DynamicObject>> {
        self.indexed
            .get(written.namespace.as_deref(), &written.name)
    }
}

fn of_kind(cached: &Cached, kind: Kind<'_>) -> bool {
    let resource = cached.indexed.resource();
    resource.api_version == kind.api_version && resource.kind == kind.kind
}

/// resourceVersions are opaque to clients, but the API server's are etcd
/// revisions: a larger number is a later write. Anything else is "not
/// known to be newer", which only costs a live read.
fn newer(seen: &str, expected: &str) -> bool {
    match (seen.parse::<u64>(), expected.parse::<u64>()) {
        (Ok(seen), Ok(expected)) => seen > expected,
        _ => false,
    }
}

/// Whether every object `asked` selects, `required` selects too.
fn implies(asked: &Expression, required: &Expression) -> bool {
    use Expression::{Equal, Exists, In};
    asked == required
        || matches!((asked, required),
            (Equal(key, _) | In(key, _), Exists(required)) if key == required)
        || matches!((asked, required),
            (Equal(key, value), In(required, values)) if key == required && values.contains(value))
}

/// Strips what the host never reads from an object before a store keeps
/// it: `managedFields`.
pub fn strip(object: &mut DynamicObject) {
    object.metadata.managed_fields = None;
}

/// Why a label selector could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot read label selector {selector:?}: {reason}")]
pub struct SelectorError {
    selector: String,
    reason: &'static str,
}

/// Parses a label selector as the API server reads one: requirements
/// separated by commas, each `key`, `!key`, `key=value`, `key==value`,
/// `key!=value`, `key in (a,b)` or `key notin (a,b)`. Written here because
/// kube-core's `Selector` matches but does not parse text, and no
/// maintained crate does.
pub fn parse_selector(text: &str) -> Result<Vec<Expression>, SelectorError> {
    let error = |reason| SelectorError {
        selector: text.to_owned(),
        reason,
    };
    let mut requirements = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (index, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| error("unbalanced ')'"))?
            }
            ',' if depth == 0 => {
                requirements.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(error("unbalanced '('"));
    }
    requirements.push(&text[start..]);
    let mut expressions = Vec::new();
    for requirement in requirements {
        let requirement = requirement.trim();
        if requirement.is_empty() {
            if text.trim().is_empty() {
                continue;
            }
            return Err(error("empty requirement"));
        }
        expressions.push(parse_requirement(requirement).map_err(error)?);
    }
    Ok(expressions)
}

fn parse_requirement(text: &str) -> Result<Expression, &'static str> {
    let key = |key: &str| {
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            Err("a requirement needs one key")
        } else {
            Ok(key.to_owned())
        }
    };
    if let Some(rest) = text.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(key(rest)?));
    }
    for (operator, negated) in [(" notin ", true), (" in ", false)] {
        if let Some((name, values)) = text.split_once(operator) {
            let values = values
                .trim()
                .strip_prefix('(')
                .and_then(|values| values.strip_suffix(')'))
                .ok_or("a set needs parentheses")?;
            let values: BTreeSet<String> = values
                .split(',')
                .map(|value| value.trim().to_owned())
                .collect();
            let name = key(name)?;
            return Ok(if negated {
                Expression::NotIn(name, values)
            } else {
                Expression::In(name, values)
            });
        }
    }
    if let Some((name, value)) = text.split_once("!=") {
        return Ok(Expression::NotEqual(key(name)?, value.trim().to_owned()));
    }
    if let Some((name, value)) = text.split_once("==").or_else(|| text.split_once('=')) {
        return Ok(Expression::Equal(key(name)?, value.trim().to_owned()));
    }
    Ok(Expression::Exists(key(text)?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;

    use kube::api::ApiResource;

    use super::*;
    use crate::controllers::index::{self, Feed};

    fn config_maps() -> ApiResource {
        ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&())
    }

    const CONFIG_MAP: Kind<'static> = Kind {
        api_version: "v1",
        kind: "ConfigMap",
    };

    fn object(
        namespace: &str,
        name: &str,
        version: &str,
        labels: &[(&str, &str)],
    ) -> DynamicObject {
        let mut object = DynamicObject::new(name, &config_maps()).within(namespace);
        object.metadata.resource_version = Some(version.to_owned());
        object.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        );
        object
    }

    /// A listed store holding `objects`, watched with `selector`.
    fn caches(selector: Option<&str>, objects: Vec<DynamicObject>) -> (Caches, Feed) {
        watched_in(None, selector, Some(objects))
    }

    /// A store watched in `namespace` with `selector`, listed with
    /// `objects` (not yet listed with `None`).
    fn watched_in(
        namespace: Option<&str>,
        selector: Option<&str>,
        objects: Option<Vec<DynamicObject>>,
    ) -> (Caches, Feed) {
        let (indexed, mut feed) = index::indexed(config_maps(), Writer::new(config_maps()));
        if let Some(objects) = objects {
            feed.apply(&Event::Init);
            for object in objects {
                feed.apply(&Event::InitApply(object));
            }
            feed.apply(&Event::InitDone);
        }
        let mut caches = Caches::default();
        caches.add(namespace.map(str::to_owned), selector, indexed);
        (caches, feed)
    }

    fn names(items: &[Arc<DynamicObject>]) -> Vec<String> {
        items.iter().map(|item| item.name_any()).collect()
    }

    #[test]
    fn a_full_store_answers_gets_and_lists_with_any_label_selector() {
        let (caches, _feed) = caches(
            None,
            vec![
                object("b", "two", "5", &[("app", "web")]),
                object("a", "one", "4", &[("app", "db")]),
            ],
        );
        let found = caches.get(CONFIG_MAP, Some("a"), "one").unwrap();
        assert_eq!(found.unwrap().name_any(), "one");
        assert!(caches.get(CONFIG_MAP, Some("a"), "none").unwrap().is_none());
        let all = caches.list(CONFIG_MAP, None, None, None).unwrap();
        assert_eq!(names(&all), ["one", "two"], "sorted by namespace and name");
        let web = caches
            .list(CONFIG_MAP, None, Some("app in (web)"), None)
            .unwrap();
        assert_eq!(names(&web), ["two"]);
        let in_b = caches
            .list(CONFIG_MAP, Some("b"), Some("app!=db"), None)
            .unwrap();
        assert_eq!(names(&in_b), ["two"]);
        assert!(
            caches.list(CONFIG_MAP, None, None, Some("metadata.name=one")) == Err(Live::Uncovered)
        );
        let other = Kind {
            api_version: "v1",
            kind: "Secret",
        };
        assert!(caches.get(other, Some("a"), "one").is_none());
    }

    #[test]
    fn a_selected_store_answers_only_what_it_holds_all_of() {
        let (caches, _feed) = caches(
            Some("copy-of"),
            vec![object("a", "copy", "4", &[("copy-of", "x")])],
        );
        let copies = caches
            .list(CONFIG_MAP, None, Some("copy-of=x"), None)
            .unwrap();
        assert_eq!(names(&copies), ["copy"]);
        assert!(
            caches.list(CONFIG_MAP, None, None, None) == Err(Live::Uncovered),
            "wider than the watch"
        );
        assert!(caches.list(CONFIG_MAP, None, Some("other=y"), None) == Err(Live::Uncovered));
        assert!(caches.get(CONFIG_MAP, Some("a"), "copy").unwrap().is_some());
        assert!(
            caches.get(CONFIG_MAP, Some("a"), "unlabelled").is_none(),
            "a miss is not an answer"
        );
    }

    #[test]
    fn a_plugins_own_write_is_read_live_until_its_store_shows_it() {
        let (caches, mut feed) = caches(None, vec![object("a", "one", "4", &[])]);
        caches.wrote(CONFIG_MAP, &object("a", "one", "9", &[]));
        assert!(caches.get(CONFIG_MAP, Some("a"), "one").is_none());
        assert_eq!(caches.list(CONFIG_MAP, None, None, None), Err(Live::Unseen));
        feed.apply(&Event::Apply(object("a", "one", "9", &[])));
        let found = caches.get(CONFIG_MAP, Some("a"), "one").unwrap().unwrap();
        assert_eq!(found.resource_version().as_deref(), Some("9"));

        caches.deleted(CONFIG_MAP, Some("a".into()), "one".into());
        assert!(caches.get(CONFIG_MAP, Some("a"), "one").is_none());
        feed.apply(&Event::Delete(object("a", "one", "10", &[])));
        assert!(caches.get(CONFIG_MAP, Some("a"), "one").unwrap().is_none());
    }

    #[test]
    fn only_writes_a_read_could_return_hold_it_back() {
        let (caches, _feed) = caches(
            None,
            vec![
                object("a", "copy-x", "4", &[("copy-of", "x")]),
                object("a", "copy-y", "5", &[("copy-of", "y")]),
                object("c", "copy-w", "6", &[("copy-of", "w")]),
            ],
        );
        // Another reconcile rewrote y's copy; the watch has not brought it.
        caches.wrote(CONFIG_MAP, &object("a", "copy-y", "9", &[("copy-of", "y")]));
        assert!(
            caches
                .list(CONFIG_MAP, None, Some("copy-of=x"), None)
                .is_ok(),
            "x's copies cannot include y's"
        );
        assert!(caches.list(CONFIG_MAP, Some("b"), None, None).is_ok());
        assert!(caches.get(CONFIG_MAP, Some("a"), "copy-x").is_some());
        assert_eq!(
            caches.list(CONFIG_MAP, None, Some("copy-of=y"), None),
            Err(Live::Unseen)
        );
        assert!(caches.get(CONFIG_MAP, Some("a"), "copy-y").is_none());

        // Relabelled out of x's selector: x's list still holds the old one.
        caches.wrote(
            CONFIG_MAP,
            &object("a", "copy-x", "10", &[("copy-of", "z")]),
        );
        assert_eq!(
            caches.list(CONFIG_MAP, None, Some("copy-of=x"), None),
            Err(Live::Unseen)
        );
        // Deleted, still in the store: the lists it matched wait.
        caches.deleted(CONFIG_MAP, Some("c".into()), "copy-w".into());
        assert_eq!(
            caches.list(CONFIG_MAP, Some("c"), Some("copy-of=w"), None),
            Err(Live::Unseen)
        );
        assert!(
            caches
                .list(CONFIG_MAP, Some("c"), Some("copy-of=v"), None)
                .is_ok()
        );
    }

    #[test]
    fn a_store_not_yet_listed_answers_nothing() {
        let (caches, _feed) = watched_in(None, None, None);
        assert!(caches.get(CONFIG_MAP, Some("a"), "one").is_none());
        assert!(caches.list(CONFIG_MAP, None, None, None).is_err());
    }

    #[test]
    fn a_write_outside_a_namespaced_watch_does_not_hold_back_its_reads() {
        let (caches, _feed) = watched_in(Some("a"), None, Some(Vec::new()));
        caches.wrote(CONFIG_MAP, &object("b", "elsewhere", "9", &[]));
        assert!(caches.list(CONFIG_MAP, Some("a"), None, None).is_ok());
    }

    #[test]
    fn a_namespaced_watch_answers_only_in_its_namespace() {
        let (caches, _feed) = watched_in(Some("a"), None, Some(Vec::new()));
        assert!(caches.list(CONFIG_MAP, Some("a"), None, None).is_ok());
        assert!(caches.list(CONFIG_MAP, Some("b"), None, None).is_err());
        assert!(caches.list(CONFIG_MAP, None, None, None).is_err());
    }

    #[test]
    fn selectors_parse_as_the_api_server_reads_them() {
        use Expression::*;
        let set = |values: &[&str]| values.iter().map(|v| (*v).to_owned()).collect();
        assert_eq!(
            parse_selector(
                "app=web, tier==front,env!=dev,ready,!legacy,zone in (a, b),os notin (x)"
            )
            .unwrap(),
            [
                Equal("app".into(), "web".into()),
                Equal("tier".into(), "front".into()),
                NotEqual("env".into(), "dev".into()),
                Exists("ready".into()),
                DoesNotExist("legacy".into()),
                In("zone".into(), set(&["a", "b"])),
                NotIn("os".into(), set(&["x"])),
            ]
        );
        assert_eq!(parse_selector("").unwrap(), []);
        for bad in ["app=web,", "zone in (a", "zone in a)", "a b", "zone in a"] {
            assert!(parse_selector(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn managed_fields_are_not_kept() {
        let mut object = object("a", "one", "1", &[]);
        object.metadata.managed_fields = Some(vec![Default::default()]);
        strip(&mut object);
        assert_eq!(object.metadata.managed_fields, None);
    }
}
