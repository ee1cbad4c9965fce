//! The bounded classification cache: canonical text -> [`Shape`].
//!
//! Sharded (up to 16 mutexes, picked by the key's hash) so that many session tasks can
//! classify at once, each shard bounded and evicting with the CLOCK algorithm (an
//! approximation of LRU that needs no list updates on a hit: a hit only sets a bit).
//! Keys are hashed once with a per-cache random foldhash seed (several times faster than
//! SipHash on statement-sized keys, and still keyed: clients cannot aim at one slot); the
//! shard maps that hash to a slot and the slot keeps the full key, which is compared on
//! every hit, so a hash collision can only cost a miss, never a wrong class. Keys longer than the configured limit are not
//! stored, so memory stays below `capacity * max_key_len` plus overhead. Each entry keeps
//! the generation of the function catalog it was classified with; a lookup under another
//! generation is a miss (and the fresh entry replaces it), so a new catalog needs no sweep.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use foldhash::quality::RandomState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::{CacheStats, Shape};
use crate::lock::Locked;

const MAX_SHARDS: usize = 16;
/// Shards get at least this many entries (small caches use fewer shards).
const MIN_SHARD_CAPACITY: usize = 64;

pub(crate) struct Cache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    max_key_len: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

struct Shard {
    /// key hash -> index in `slots`
    index: HashMap<u64, usize, BuildHasherDefault<IdentityHasher>>,
    slots: Vec<Slot>,
    capacity: usize,
    hand: usize,
}

struct Slot {
    hash: u64,
    key: Box<[u8]>,
    shape: Shape,
    generation: u64,
    referenced: bool,
}

impl Cache {
    /// A cache holding at most `capacity` entries of at most `max_key_len` bytes each.
    /// A capacity of 0 disables caching.
    pub(crate) fn new(capacity: usize, max_key_len: usize) -> Self {
        let mut count = (capacity / MIN_SHARD_CAPACITY).clamp(1, MAX_SHARDS);
        // a power of two, so that shard selection is a mask
        while !count.is_power_of_two() {
            count -= 1;
        }
        let shards = (0..count)
            .map(|i| {
                let share = capacity / count + usize::from(i < capacity % count);
                Mutex::new(Shard {
                    index: HashMap::default(),
                    slots: Vec::new(),
                    capacity: share,
                    hand: 0,
                })
            })
            .collect();
        Cache {
            shards,
            hasher: RandomState::default(),
            max_key_len,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        // bits 32.. pick the shard; the index map uses the low bits and the top seven
        let i = (hash >> 32) as usize & (self.shards.len() - 1);
        &self.shards[i]
    }

    /// Looks `key` up among entries of catalog `generation`, counting a hit or a miss.
    pub(crate) fn get(&self, hash: u64, key: &[u8], generation: u64) -> Option<Shape> {
        let found = {
            let mut shard = self.shard(hash).locked();
            shard.get(hash, key, generation)
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Counts a miss for a statement that was classified without a lookup.
    pub(crate) fn count_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Stores `shape` for `key`, classified with catalog `generation` (unless the key is too
    /// long or the cache is disabled).
    pub(crate) fn insert(&self, hash: u64, key: Vec<u8>, shape: Shape, generation: u64) {
        if key.len() > self.max_key_len {
            return;
        }
        let mut shard = self.shard(hash).locked();
        shard.insert(hash, key.into_boxed_slice(), shape, generation);
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let entries = self.shards.iter().map(|s| s.locked().slots.len()).sum();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries,
        }
    }
}

impl Shard {
    fn get(&mut self, hash: u64, key: &[u8], generation: u64) -> Option<Shape> {
        let &i = self.index.get(&hash)?;
        let slot = self.slots.get_mut(i)?;
        if &*slot.key != key || slot.generation != generation {
            return None;
        }
        slot.referenced = true;
        Some(slot.shape)
    }

    fn insert(&mut self, hash: u64, key: Box<[u8]>, shape: Shape, generation: u64) {
        if self.capacity == 0 {
            return;
        }
        let fresh = Slot {
            hash,
            key,
            shape,
            generation,
            referenced: false,
        };
        // Same hash (the same key, or a collision): replace in place.
        if let Some(&i) = self.index.get(&hash) {
            if let Some(slot) = self.slots.get_mut(i) {
                *slot = fresh;
                return;
            }
        }
        if self.slots.len() < self.capacity {
            self.index.insert(hash, self.slots.len());
            self.slots.push(fresh);
            return;
        }
        // CLOCK: sweep, giving referenced slots a second chance, and take the first cold one.
        // Terminates within two sweeps: the first clears every bit it passes.
        let len = self.slots.len();
        for _ in 0..2 * len {
            let i = self.hand % len;
            self.hand = (i + 1) % len;
            let Some(slot) = self.slots.get_mut(i) else {
                break;
            };
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            self.index.remove(&slot.hash);
            *slot = fresh;
            self.index.insert(hash, i);
            return;
        }
    }
}

/// The keys of the shard index are already SipHash values: pass them through.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Class;

    const READ: Shape = Shape {
        class: Class::Read {
            primary_table: false,
        },
        leaves_state: false,
    };
    const WRITE: Shape = Shape {
        class: Class::Write,
        leaves_state: false,
    };

    fn put(cache: &Cache, key: &str, shape: Shape) {
        cache.insert(
            cache.hash(key.as_bytes()),
            key.as_bytes().to_vec(),
            shape,
            0,
        );
    }

    fn get(cache: &Cache, key: &str) -> Option<Shape> {
        cache.get(cache.hash(key.as_bytes()), key.as_bytes(), 0)
    }

    #[test]
    fn hit_and_miss_counts() {
        let cache = Cache::new(100, 4096);
        assert_eq!(get(&cache, "a"), None);
        put(&cache, "a", WRITE);
        assert_eq!(get(&cache, "a"), Some(WRITE));
        put(&cache, "a", READ);
        assert_eq!(get(&cache, "a"), Some(READ));
        cache.count_miss();
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 2,
                misses: 2,
                entries: 1
            }
        );
    }

    #[test]
    fn bounded_for_every_capacity() {
        for capacity in [1, 2, 3, 63, 64, 65, 100, 1000, 1025] {
            let cache = Cache::new(capacity, 4096);
            for i in 0..capacity * 3 {
                put(&cache, &format!("key {i}"), READ);
                assert!(cache.stats().entries <= capacity);
            }
            assert!(cache.stats().entries <= capacity);
            assert!(cache.stats().entries >= capacity / 2, "{capacity}");
        }
    }

    #[test]
    fn clock_keeps_recently_used_entries() {
        let cache = Cache::new(4, 4096);
        for k in ["a", "b", "c", "d"] {
            put(&cache, k, READ);
        }
        assert_eq!(get(&cache, "a"), Some(READ));
        put(&cache, "e", WRITE);
        assert_eq!(get(&cache, "a"), Some(READ), "a was referenced");
        assert_eq!(get(&cache, "b"), None, "b was the first cold slot");
        assert_eq!(get(&cache, "e"), Some(WRITE));
        assert_eq!(cache.stats().entries, 4);
    }

    #[test]
    fn disabled_and_long_keys() {
        let cache = Cache::new(0, 4096);
        put(&cache, "a", READ);
        assert_eq!(get(&cache, "a"), None);
        assert_eq!(cache.stats().entries, 0);
        let cache = Cache::new(10, 3);
        put(&cache, "abcd", READ);
        assert_eq!(get(&cache, "abcd"), None);
        put(&cache, "abc", READ);
        assert_eq!(get(&cache, "abc"), Some(READ));
    }

    #[test]
    fn collision_never_returns_another_keys_class() {
        let cache = Cache::new(10, 4096);
        // Force two keys onto one hash.
        cache.insert(7, b"one".to_vec(), READ, 0);
        assert_eq!(cache.get(7, b"two", 0), None);
        cache.insert(7, b"two".to_vec(), WRITE, 0);
        assert_eq!(cache.get(7, b"two", 0), Some(WRITE));
        assert_eq!(cache.get(7, b"one", 0), None);
    }

    #[test]
    fn another_generation_is_a_miss_and_is_replaced() {
        let cache = Cache::new(10, 4096);
        let hash = cache.hash(b"a");
        cache.insert(hash, b"a".to_vec(), READ, 1);
        assert_eq!(cache.get(hash, b"a", 1), Some(READ));
        assert_eq!(cache.get(hash, b"a", 2), None);
        cache.insert(hash, b"a".to_vec(), WRITE, 2);
        assert_eq!(cache.get(hash, b"a", 2), Some(WRITE));
        assert_eq!(cache.get(hash, b"a", 1), None);
        assert_eq!(cache.stats().entries, 1);
    }
}
