//! An index of a store by label and by namespace, so that a plugin's list
//! from the cache costs what it returns rather than the whole store: at
//! 10 000 ConfigMaps, walking the store and matching every object's labels
//! for each reconcile was the largest part of the host's CPU
//! (`make bench-scale`), on two cores it shares with the API server.
//!
//! kube-runtime's `Store` has no index (controller-runtime's cache has
//! field indexes, which a controller declares; here every label is
//! indexed, as a plugin's selectors are not known in advance). The index
//! and its store change together: [`Feed::apply`] updates both under one
//! lock, and [`Indexed::candidates`] reads under it, so a reader never sees
//! one ahead of the other.
//!
//! Buckets are keyed by a hash of `key=value` (or of the namespace), not
//! the strings, to keep the index small; a collision only adds candidates,
//! and every candidate is checked against the store's object anyway.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject};
use kube::core::Expression;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef as StoreRef, Store};
use kube::runtime::watcher::Event;

/// An object of the store, by namespace and name (shared by its buckets).
type Key = Arc<(Option<String>, String)>;

/// The objects of a store by label and by namespace.
#[derive(Default)]
struct Buckets {
    by_hash: HashMap<u64, HashSet<Key>>,
}

impl Buckets {
    fn insert(&mut self, object: &DynamicObject) {
        let key: Key = Arc::new((object.namespace(), object.name_any()));
        for hash in hashes(object) {
            self.by_hash.entry(hash).or_default().insert(key.clone());
        }
    }

    fn remove(&mut self, object: &DynamicObject) {
        let key = (object.namespace(), object.name_any());
        for hash in hashes(object) {
            if let Some(bucket) = self.by_hash.get_mut(&hash) {
                bucket.remove(&key);
                if bucket.is_empty() {
                    self.by_hash.remove(&hash);
                }
            }
        }
    }
}

/// Where an object is filed: under each of its labels and its namespace.
fn hashes(object: &DynamicObject) -> impl Iterator<Item = u64> + '_ {
    object
        .labels()
        .iter()
        .map(|(key, value)| label_hash(key, value))
        .chain(std::iter::once(namespace_hash(
            object.metadata.namespace.as_deref(),
        )))
}

fn label_hash(key: &str, value: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    ("label", key, value).hash(&mut hasher);
    hasher.finish()
}

fn namespace_hash(namespace: Option<&str>) -> u64 {
    let mut hasher = DefaultHasher::new();
    ("namespace", namespace).hash(&mut hasher);
    hasher.finish()
}

/// What the index and its store share: the buckets of the store's current
/// state, and those of a re-list in progress (the store swaps its state in
/// only when the list is done; so do they).
#[derive(Default)]
struct State {
    live: Buckets,
    relisting: Option<Buckets>,
}

/// A store with its index, for reading.
#[derive(Clone)]
pub struct Indexed {
    resource: ApiResource,
    store: Store<DynamicObject>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Indexed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexed")
            .field("kind", &self.resource.kind)
            .finish_non_exhaustive()
    }
}

/// Feeds a watch's events to a store and its index.
pub struct Feed {
    writer: Writer<DynamicObject>,
    indexed: Indexed,
}

/// The index of the store `writer` keeps: the reading half, and the half
/// its watch's events go through.
pub fn indexed(resource: ApiResource, writer: Writer<DynamicObject>) -> (Indexed, Feed) {
    let indexed = Indexed {
        resource,
        store: writer.as_reader(),
        state: Arc::default(),
    };
    let feed = Feed {
        writer,
        indexed: indexed.clone(),
    };
    (indexed, feed)
}

impl Feed {
    /// Applies a watch event to the index and the store, together.
    pub fn apply(&mut self, event: &Event<DynamicObject>) {
        let mut state = self.indexed.lock();
        match event {
            Event::Apply(object) => {
                // The store's version is the one filed: unfile it.
                if let Some(held) = self.indexed.held(object) {
                    state.live.remove(&held);
                }
                state.live.insert(object);
            }
            Event::Delete(object) => {
                if let Some(held) = self.indexed.held(object) {
                    state.live.remove(&held);
                }
            }
            Event::Init => state.relisting = Some(Buckets::default()),
            Event::InitApply(object) => state
                .relisting
                .get_or_insert_with(Buckets::default)
                .insert(object),
            Event::InitDone => state.live = state.relisting.take().unwrap_or_default(),
        }
        self.writer.apply_watcher_event(event);
    }
}

impl Indexed {
    pub fn store(&self) -> &Store<DynamicObject> {
        &self.store
    }

    /// The kind the store holds.
    pub fn resource(&self) -> &ApiResource {
        &self.resource
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store's version of `object`.
    fn held(&self, object: &DynamicObject) -> Option<Arc<DynamicObject>> {
        self.get(object.metadata.namespace.as_deref(), &object.name_any())
    }

    /// The store's object `name` in `namespace`.
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<DynamicObject>> {
        let mut key = StoreRef::new_with(name, self.resource.clone());
        if let Some(namespace) = namespace {
            key = key.within(namespace);
        }
        self.store.get(&key)
    }

    /// The store's objects that may be in `namespace` (all when `None`) and
    /// match `selector`: those of the smallest bucket an equality in the
    /// selector (or the namespace) names, or every object when neither
    /// names one. The caller checks each against the selector.
    pub fn candidates(
        &self,
        namespace: Option<&str>,
        selector: &[Expression],
    ) -> Vec<Arc<DynamicObject>> {
        let state = self.lock();
        let smallest = selector
            .iter()
            .filter_map(|expression| match expression {
                Expression::Equal(key, value) => Some(label_hash(key, value)),
                _ => None,
            })
            .chain(namespace.map(|namespace| namespace_hash(Some(namespace))))
            .min_by_key(|hash| state.live.by_hash.get(hash).map_or(0, HashSet::len));
        match smallest {
            Some(hash) => state
                .live
                .by_hash
                .get(&hash)
                .into_iter()
                .flatten()
                .filter_map(|key| self.get(key.0.as_deref(), &key.1))
                .collect(),
            None => self.store.state(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn config_maps() -> ApiResource {
        ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&())
    }

    fn object(namespace: &str, name: &str, app: &str) -> DynamicObject {
        let mut object = DynamicObject::new(name, &config_maps()).within(namespace);
        object.metadata.labels = Some(BTreeMap::from([("app".to_owned(), app.to_owned())]));
        object
    }

    fn listed(objects: Vec<DynamicObject>) -> (Indexed, Feed) {
        let (indexed, mut feed) = indexed(config_maps(), Writer::new(config_maps()));
        feed.apply(&Event::Init);
        for object in objects {
            feed.apply(&Event::InitApply(object));
        }
        feed.apply(&Event::InitDone);
        (indexed, feed)
    }

    fn app(value: &str) -> Vec<Expression> {
        vec![Expression::Equal("app".into(), value.into())]
    }

    fn names(indexed: &Indexed, namespace: Option<&str>, selector: &[Expression]) -> Vec<String> {
        let mut names: Vec<String> = indexed
            .candidates(namespace, selector)
            .iter()
            .map(|object| object.name_any())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_list_finds_its_objects_by_label_or_namespace_through_every_change() {
        let (indexed, mut feed) = listed(vec![
            object("one", "a", "web"),
            object("one", "b", "db"),
            object("two", "c", "web"),
        ]);
        assert_eq!(names(&indexed, None, &app("web")), ["a", "c"]);
        assert_eq!(names(&indexed, Some("one"), &[]), ["a", "b"]);
        // Relabelled: filed under its new label only.
        feed.apply(&Event::Apply(object("one", "b", "web")));
        assert_eq!(names(&indexed, None, &app("web")), ["a", "b", "c"]);
        assert!(names(&indexed, None, &app("db")).is_empty());
        feed.apply(&Event::Delete(object("one", "a", "web")));
        assert_eq!(names(&indexed, None, &app("web")), ["b", "c"]);
        // A selector without an equality walks the store.
        let exists = [Expression::Exists("app".into())];
        assert_eq!(names(&indexed, None, &exists), ["b", "c"]);
    }

    #[test]
    fn a_relist_replaces_the_index_when_the_store_swaps_in_its_state() {
        let (indexed, mut feed) = listed(vec![object("one", "a", "web")]);
        feed.apply(&Event::Init);
        feed.apply(&Event::InitApply(object("one", "d", "web")));
        assert_eq!(
            names(&indexed, None, &app("web")),
            ["a"],
            "still the old state"
        );
        feed.apply(&Event::InitDone);
        assert_eq!(names(&indexed, None, &app("web")), ["d"]);
    }

    #[test]
    fn an_object_gone_leaves_nothing_behind_in_the_index() {
        let (indexed, mut feed) = listed(vec![object("one", "a", "web")]);
        feed.apply(&Event::Apply(object("one", "a", "db")));
        feed.apply(&Event::Delete(object("one", "a", "db")));
        assert!(indexed.lock().live.by_hash.is_empty());
    }
}
