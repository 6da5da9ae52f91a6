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
