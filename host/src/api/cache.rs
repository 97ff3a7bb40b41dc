//! A small cache whose entries expire, bounded in size: remembering review
//! answers for a few seconds spares the API server one TokenReview and one
//! SubjectAccessReview per request without keeping stale answers for long.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Entries live for `ttl` after insertion; at most `capacity` are kept.
/// Callers pass the time so that tests need no clock.
#[derive(Debug)]
pub(crate) struct TtlCache<K, V> {
    entries: HashMap<K, (Instant, V)>,
    capacity: usize,
    ttl: Duration,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
            ttl,
        }
    }

    /// The value stored under `key`, unless it has expired.
    pub(crate) fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        match self.entries.get(key) {
            Some((inserted, value)) if now.duration_since(*inserted) < self.ttl => {
                Some(value.clone())
            }
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores `value`. When full, expired entries go first, then the oldest.
    pub(crate) fn insert(&mut self, key: K, value: V, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let ttl = self.ttl;
            self.entries
                .retain(|_, (inserted, _)| now.duration_since(*inserted) < ttl);
            if self.entries.len() >= self.capacity {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (inserted, _))| *inserted)
                    .map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    self.entries.remove(&oldest);
                }
            }
        }
        self.entries.insert(key, (now, value));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn an_entry_is_answered_until_it_expires() {
        let start = Instant::now();
        let mut cache = TtlCache::new(4, TTL);
        cache.insert("token", 1, start);
        assert_eq!(cache.get(&"token", start + Duration::from_secs(9)), Some(1));
        assert_eq!(cache.get(&"token", start + TTL), None);
        assert_eq!(cache.len(), 0, "an expired entry is dropped when read");
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let start = Instant::now();
        let mut cache = TtlCache::new(3, TTL);
        for n in 0..100u32 {
            cache.insert(n, n, start + Duration::from_millis(u64::from(n)));
            assert!(cache.len() <= 3);
        }
        // The oldest went first: the newest three remain.
        let now = start + Duration::from_millis(100);
        assert_eq!(cache.get(&99, now), Some(99));
        assert_eq!(cache.get(&97, now), Some(97));
        assert_eq!(cache.get(&96, now), None);
    }

    #[test]
    fn a_full_cache_drops_expired_entries_before_live_ones() {
        let start = Instant::now();
        let mut cache = TtlCache::new(2, TTL);
        cache.insert("old", 0, start);
        cache.insert("live", 1, start + Duration::from_secs(8));
        let later = start + Duration::from_secs(11);
        cache.insert("new", 2, later);
        assert_eq!(cache.get(&"live", later), Some(1));
        assert_eq!(cache.get(&"new", later), Some(2));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn storing_a_key_again_refreshes_it_without_evicting_others() {
        let start = Instant::now();
        let mut cache = TtlCache::new(2, TTL);
        cache.insert("a", 0, start);
        cache.insert("b", 1, start);
        cache.insert("a", 2, start + Duration::from_secs(5));
        assert_eq!(cache.get(&"b", start + Duration::from_secs(5)), Some(1));
        assert_eq!(cache.get(&"a", start + Duration::from_secs(12)), Some(2));
    }
}
