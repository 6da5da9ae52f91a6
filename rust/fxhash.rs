//! A small multiplicative hasher for maps keyed by a few integers (parser
//! items, trie shapes, walk states). SipHash's DoS resistance buys nothing
//! for keys the engine makes itself, and costs several times more per key
//! on the paths that intern hundreds of thousands of them.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

#[derive(Debug, Clone, Copy, Default)]
pub struct BuildFx;

impl BuildHasher for BuildFx {
    type Hasher = Fx;
    fn build_hasher(&self) -> Fx {
        Fx(0)
    }
}

/// Multiply-rotate hashing of integer words.
#[derive(Debug, Clone, Copy)]
pub struct Fx(u64);

impl Hasher for Fx {
    fn finish(&self) -> u64 {
        // The product's high bits are its best mixed; the table indexes by
        // the low ones.
        self.0.rotate_left(26)
    }
    /// Eight bytes per round: slices of integers (`Vec<u32>` and
    /// `Vec<u64>` keys: allowed-terminal sets, walk signatures) hash
    /// through here as their raw bytes.
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().unwrap()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            // The length keeps "ab" and "ab\0" apart.
            self.write_u64(u64::from_le_bytes(last) ^ (rest.len() as u64) << 59);
        }
    }
    fn write_u8(&mut self, x: u8) {
        self.write_u64(x as u64)
    }
    fn write_u32(&mut self, x: u32) {
        self.write_u64(x as u64)
    }
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64)
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

pub type FxMap<K, V> = HashMap<K, V, BuildFx>;
pub type FxSet<K> = HashSet<K, BuildFx>;

/// Parts of a [`ShardedMap`].
const SHARDS: usize = 64;

/// Which part of a [`ShardedMap`] each of 4,096 slots goes to: part `i`
/// takes the slots `u` with `64 * log2(1 + u / 4096)` in `[i, i + 1)`, so
/// its share of the keys is `2^(i/64)` times the first part's (a factor
/// of two across the parts, evenly in log scale).
static SHARD_OF: [u8; 4096] = {
    let mut t = [0u8; 4096];
    let mut u = 0;
    while u < 4096 {
        // ((4096 + u) / 4096)^64 in 32.32 fixed point, by six squarings
        // (below 2^64 before the last, so no product overflows).
        let mut r: u128 = ((4096 + u) as u128) << 20;
        let mut i = 0;
        while i < 6 {
            r = (r * r) >> 32;
            i += 1;
        }
        t[u] = (127 - r.leading_zeros() - 32) as u8;
        u += 1;
    }
    t
};

/// An [`FxMap`] in [`SHARDS`] parts of unequal shares, for the maps that
/// grow to hundreds of thousands of entries while masks are computed.
///
/// Why: a hash table doubles all at once, and the call that crosses its
/// size pays for a table twice as large: every page of it touched for the
/// first time (2,100 page faults, about 5 ms on a virtual machine, in one
/// mask of the PoC JavaScript sample) and every entry moved. Parts of
/// equal shares would all double within a few percent of the same size;
/// with shares spread over a factor of two, the parts double one at a
/// time, about every percent of growth, each at a 64th of the cost.
#[derive(Debug, Clone)]
pub struct ShardedMap<K, V> {
    shards: Vec<FxMap<K, V>>,
    len: usize,
}

impl<K, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        ShardedMap { shards: Vec::new(), len: 0 }
    }
}

impl<K: std::hash::Hash + Eq, V> ShardedMap<K, V> {
    #[inline]
    fn shard(key: &K) -> usize {
        // Remixed so that the slot depends on every bit of the hash, and
        // taken from the top: the part's own table indexes by the low
        // bits and tags by the top seven of the unmixed hash.
        let h = BuildFx.hash_one(key).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        SHARD_OF[(h >> 52) as usize] as usize
    }

    #[inline]
    pub fn get(&self, key: &K) -> Option<&V> {
        if self.shards.is_empty() {
            return None;
        }
        self.shards[Self::shard(key)].get(key)
    }

    /// The part of `shards` that `key` belongs to, the parts made at the
    /// first insert (a function of the parts alone, so that `len` can be
    /// updated while the part is borrowed).
    #[inline]
    fn part_mut<'a>(shards: &'a mut Vec<FxMap<K, V>>, key: &K) -> &'a mut FxMap<K, V> {
        if shards.is_empty() {
            *shards = (0..SHARDS).map(|_| FxMap::default()).collect();
        }
        &mut shards[Self::shard(key)]
    }

    /// Insert `value` under `key`, returning the value it replaced.
    #[inline]
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let old = Self::part_mut(&mut self.shards, &key).insert(key, value);
        self.len += usize::from(old.is_none());
        old
    }

    /// The value under `key`, inserting `value` first where there is none.
    #[inline]
    pub fn get_or_insert(&mut self, key: K, value: V) -> &mut V {
        match Self::part_mut(&mut self.shards, &key).entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                self.len += 1;
                e.insert(value)
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Remove every entry, keeping the parts' tables (and their pages).
    pub fn clear(&mut self) {
        for s in &mut self.shards {
            s.clear();
        }
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_shares_grow_by_two_across_the_parts() {
        let count = |i: u8| SHARD_OF.iter().filter(|&&s| s == i).count();
        assert_eq!(SHARD_OF[0], 0);
        assert_eq!(SHARD_OF[4095] as usize, SHARDS - 1);
        assert!(SHARD_OF.windows(2).all(|w| w[0] <= w[1]));
        let (first, last) = (count(0), count(SHARDS as u8 - 1));
        assert!((40..=50).contains(&first) && (80..=95).contains(&last), "{first} {last}");
    }

    #[test]
    fn sharded_map_is_a_map() {
        let mut m: ShardedMap<(u32, u32), u64> = ShardedMap::default();
        assert!(m.get(&(1, 2)).is_none() && m.is_empty());
        for i in 0..10_000u32 {
            assert_eq!(*m.get_or_insert((i, i / 7), u64::from(i)), u64::from(i));
        }
        assert_eq!(*m.get_or_insert((5, 0), 99), 5);
        assert_eq!(m.insert((5, 0), 6), Some(5));
        assert_eq!(m.insert((10_000, 0), 1), None);
        assert_eq!(m.len(), 10_001);
        assert_eq!(m.get(&(5, 0)), Some(&6));
        let sizes: Vec<usize> = m.shards.iter().map(|s| s.len()).collect();
        assert!(sizes[SHARDS - 1] > sizes[0] * 3 / 2, "{sizes:?}");
        m.clear();
        assert!(m.is_empty() && m.get(&(5, 0)).is_none());
    }
}
