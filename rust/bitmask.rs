//! Token bitmask layout shared by every constraint: one bit per token id,
//! packed little-endian into 32-bit words (bit `t % 32` of word `t / 32`),
//! the layout `torch`/numpy int32 rows use on the Python side.

/// Number of 32-bit words a mask over `vocab_size` tokens needs.
#[inline]
pub fn words_for(vocab_size: usize) -> usize {
    vocab_size.div_ceil(32)
}

#[inline]
pub fn set_bit(mask: &mut [u32], t: u32) {
    mask[(t >> 5) as usize] |= 1u32 << (t & 31);
}

#[inline]
pub fn get_bit(mask: &[u32], t: u32) -> bool {
    mask[(t >> 5) as usize] & (1u32 << (t & 31)) != 0
}

/// Token ids whose bit is set, in increasing order.
pub fn ones(mask: &[u32]) -> Vec<u32> {
    ones_upto(mask, usize::MAX).unwrap_or_default()
}

/// Words per block in the scans below: a block of zero words (most of a
/// sparse mask) costs one vectorised OR.
const BLOCK: usize = 16;

/// The indices of `mask`'s set bits, in increasing order, if there are
/// at most `limit` of them.
///
/// Blocks of zero words cost one vectorised OR each, and only the
/// non-zero words of the others are visited (a sparse mask's non-zero
/// blocks hold one or two each). From the first block with more than a
/// few non-zero words on, bits are counted before they are listed, so a
/// dense mask gives up without listing a thousand ids.
fn ones_upto(mask: &[u32], limit: usize) -> Option<Vec<u32>> {
    // Arrays of `BLOCK` words, so the OR of each is unrolled and vectorised
    // (plain loops: an iterator chain over them lost that).
    let (whole, rest) = mask.as_chunks::<BLOCK>();
    let mut out = Vec::with_capacity(64);
    for (b, block) in whole.iter().enumerate() {
        if all_zero(block) {
            continue;
        }
        let words = nonzero_words(block);
        if words.count_ones() > 4 {
            return counted_ones_from(mask, b, out, limit);
        }
        push_words(block, words, b * BLOCK, &mut out);
        if out.len() > limit {
            return None;
        }
    }
    push_block(rest, whole.len() * BLOCK, &mut out);
    (out.len() <= limit).then_some(out)
}

/// [`ones_upto`] from block `from` on, with `out` holding the bits before
/// it: counted first, listed if there are few enough.
fn counted_ones_from(mask: &[u32], from: usize, mut out: Vec<u32>, limit: usize) -> Option<Vec<u32>> {
    let (whole, rest) = mask.as_chunks::<BLOCK>();
    let mut n = out.len() + count_block(rest);
    for block in &whole[from..] {
        if !all_zero(block) {
            n += count_block(block);
            if n > limit {
                return None;
            }
        }
    }
    if n > limit {
        return None;
    }
    out.reserve_exact(n - out.len());
    for (b, block) in whole.iter().enumerate().skip(from) {
        if !all_zero(block) {
            push_block(block, b * BLOCK, &mut out);
        }
    }
    push_block(rest, whole.len() * BLOCK, &mut out);
    Some(out)
}

/// Whether every word of `block` is zero: one OR over an array, unrolled
/// and vectorised.
#[inline]
fn all_zero(block: &[u32; BLOCK]) -> bool {
    block.iter().fold(0, |a, &w| a | w) == 0
}

/// Which words of `block` (at most 32) are non-zero, as bits.
#[inline]
fn nonzero_words(block: &[u32]) -> u32 {
    debug_assert!(block.len() <= 32);
    block.iter().enumerate().fold(0u32, |a, (i, &w)| a | u32::from(w != 0) << i)
}

/// Set bits in `block` (at most 32 words), counted over its non-zero
/// words only: the x86-64 baseline the wheel is built for has no
/// population count instruction, and its replacement costs a dozen
/// instructions a word.
#[inline]
fn count_block(block: &[u32]) -> usize {
    let mut words = nonzero_words(block);
    let mut n = 0;
    while words != 0 {
        n += block[words.trailing_zeros() as usize].count_ones() as usize;
        words &= words - 1;
    }
    n
}

/// Appends the indices of the set bits of `block` (at most 32 words),
/// whose first word is word `first` of its mask, visiting only its
/// non-zero words (a sparse mask's non-zero blocks hold one or two each).
#[inline]
fn push_block(block: &[u32], first: usize, out: &mut Vec<u32>) {
    push_words(block, nonzero_words(block), first, out);
}

/// [`push_block`] with its non-zero words known (`words`, as
/// [`nonzero_words`] gives them).
#[inline]
fn push_words(block: &[u32], mut words: u32, first: usize, out: &mut Vec<u32>) {
    while words != 0 {
        let i = words.trailing_zeros() as usize;
        words &= words - 1;
        let base = ((first + i) as u32) << 5;
        let mut x = block[i];
        while x != 0 {
            out.push(base + x.trailing_zeros());
            x &= x - 1;
        }
    }
}

/// A mask kept in a cache: the ids of its set bits where few are set (the
/// rest of an object key, an enum value, a number's digits: dozens to a
/// few hundred tokens), else its words.
///
/// Why: a cache entry is written once, when the mask is first met, and a
/// dense copy costs a page-aligned 16 KB (Llama 3's 128,256 tokens) of
/// fresh memory. Its page faults were half the cost of such a mask: a key
/// literal's next token took 80-150 us, 40 us without the copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredMask {
    Dense(Box<[u32]>),
    /// Set bits in increasing order, and the mask's length in words.
    Sparse(Box<[u32]>, usize),
}

/// A mask is kept sparse when its ids take at most this fraction of its
/// words' bytes.
const SPARSE_FRACTION: usize = 4;

impl StoredMask {
    pub fn new(mask: &[u32]) -> StoredMask {
        // Passes over every word, one at a time, took 3 us on a Llama 3
        // mask of a few dozen tokens, twice in a small first-visit mask
        // (a quarter of chess.gbnf's); [`ones_upto`] takes a third of that.
        match ones_upto(mask, mask.len() / SPARSE_FRACTION) {
            Some(ids) => StoredMask::Sparse(ids.into_boxed_slice(), mask.len()),
            None => StoredMask::Dense(mask.into()),
        }
    }

    /// Overwrite `out` (as long as the stored mask) with this mask.
    pub fn write_to(&self, out: &mut [u32]) {
        match self {
            StoredMask::Dense(words) => out.copy_from_slice(words),
            StoredMask::Sparse(ids, len) => {
                assert_eq!(out.len(), *len, "mask length");
                out.fill(0);
                for &t in ids.iter() {
                    set_bit(out, t);
                }
            }
        }
    }

    /// Set in `out` the bits of this mask that are clear in `except`.
    pub fn or_into_except(&self, out: &mut [u32], except: &[u32]) {
        match self {
            StoredMask::Dense(words) => {
                for ((o, &w), &x) in out.iter_mut().zip(words.iter()).zip(except) {
                    *o |= w & !x;
                }
            }
            StoredMask::Sparse(ids, _) => {
                for &t in ids.iter() {
                    if !get_bit(except, t) {
                        set_bit(out, t);
                    }
                }
            }
        }
    }

    /// The set token ids, where the mask is kept as a list of them.
    pub fn sparse_ids(&self) -> Option<&[u32]> {
        match self {
            StoredMask::Dense(_) => None,
            StoredMask::Sparse(ids, _) => Some(ids),
        }
    }

    /// Token ids whose bit is set, in increasing order.
    pub fn ones(&self) -> Vec<u32> {
        match self {
            StoredMask::Dense(words) => ones(words),
            StoredMask::Sparse(ids, _) => ids.to_vec(),
        }
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            StoredMask::Dense(words) => words.len() * 4,
            StoredMask::Sparse(ids, _) => ids.len() * 4,
        }
    }
}

/// Set `row[t]` to `neg_inf` for every `t` whose bit is clear; columns past
/// the mask's coverage are masked too. Generic over the element so float32
/// rows and 16-bit rows (fp16/bf16 bit patterns) share one loop; words that
/// are all ones, the common case deep inside permissive states, cost one
/// comparison.
pub fn apply_mask<T: Copy>(row: &mut [T], mask: &[u32], neg_inf: T) {
    let covered = row.len().min(mask.len() * 32);
    let (head, tail) = row.split_at_mut(covered);
    for (w, chunk) in head.chunks_mut(32).enumerate() {
        let bits = mask[w];
        if bits == u32::MAX {
            continue;
        }
        if bits == 0 {
            chunk.fill(neg_inf);
            continue;
        }
        for (i, x) in chunk.iter_mut().enumerate() {
            // Branch-free select: mixed words are unpredictable.
            *x = if bits >> i & 1 == 0 { neg_inf } else { *x };
        }
    }
    tail.fill(neg_inf);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored mask adds to the output what it holds that the exception
    /// does not, sparse or dense.
    #[test]
    fn or_into_except_sets_what_the_exception_does_not_hold() {
        let except = {
            let mut m = vec![0u32; 64];
            for t in [5u32, 700, 701] {
                set_bit(&mut m, t);
            }
            m
        };
        // Sparse (few bits) and dense (most bits) stored masks alike.
        for bits in [vec![3u32, 5, 700, 2047], (0..2048).filter(|t| t % 3 != 0).collect::<Vec<u32>>()] {
            let mut mask = vec![0u32; 64];
            for &t in &bits {
                set_bit(&mut mask, t);
            }
            let mut out = vec![0u32; 64];
            set_bit(&mut out, 1);
            StoredMask::new(&mask).or_into_except(&mut out, &except);
            let mut want: Vec<u32> = std::iter::once(1)
                .chain(bits.iter().copied().filter(|t| ![5, 700, 701].contains(t)))
                .collect();
            want.sort();
            want.dedup();
            assert_eq!(ones(&out), want);
        }
    }

    /// A stored mask writes back the mask it was made from, sparse or
    /// dense, over whatever the output held.
    #[test]
    fn stored_masks_round_trip() {
        for bits in [vec![], vec![0u32, 5, 63], (0..40).collect::<Vec<u32>>(), (0..64).step_by(3).collect()] {
            let mut mask = vec![0u32; 2];
            for &t in &bits {
                set_bit(&mut mask, t);
            }
            let stored = StoredMask::new(&mask);
            assert_eq!(matches!(stored, StoredMask::Sparse(..)), bits.is_empty(), "{bits:?}");
            let mut out = vec![u32::MAX; 2];
            stored.write_to(&mut out);
            assert_eq!(out, mask);
            assert_eq!(stored.ones(), bits);
        }
        let mut wide = vec![0u32; 64];
        for t in [3u32, 700, 2047] {
            set_bit(&mut wide, t);
        }
        let stored = StoredMask::new(&wide);
        assert!(matches!(stored, StoredMask::Sparse(..)));
        assert_eq!(stored.bytes(), 12);
        let mut out = vec![7u32; 64];
        stored.write_to(&mut out);
        assert_eq!(out, wide);
    }

    /// Sparse exactly up to a quarter of the words' bits, whatever the
    /// length (blocks of 16 words and the remainder after them), with the
    /// set bits spread over the whole mask and in its last words.
    #[test]
    fn stored_masks_switch_to_dense_past_the_limit() {
        for words in [1usize, 15, 16, 37, 4008] {
            let limit = words / SPARSE_FRACTION;
            for n in [limit.saturating_sub(1), limit, limit + 1] {
                let nbits = (words * 32) as u32;
                // `n` distinct bits: a stride coprime to the length, ending
                // in the last word.
                let mut bits: Vec<u32> = (0..n as u32).map(|k| nbits - 1 - (k * 97) % nbits).collect();
                bits.sort_unstable();
                bits.dedup();
                assert_eq!(bits.len(), n);
                let mut mask = vec![0u32; words];
                for &t in &bits {
                    set_bit(&mut mask, t);
                }
                let stored = StoredMask::new(&mask);
                assert_eq!(matches!(stored, StoredMask::Dense(..)), n > limit, "{words} words, {n} bits");
                assert_eq!(stored.ones(), bits);
                let mut out = vec![u32::MAX; words];
                stored.write_to(&mut out);
                assert_eq!(out, mask);
            }
        }
    }

    /// Masks of every shape the listing takes a different way through:
    /// blocks with one or two non-zero words (listed as met), a block of
    /// many (counted first), each before or after the other, the limit
    /// passed in either, and a remainder after the last whole block. The
    /// stored mask is sparse exactly up to the limit and lists every bit.
    #[test]
    fn stored_masks_list_every_shape_exactly() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for words in [16usize, 40, 100, 4008] {
            for _ in 0..300 {
                let mut mask = vec![0u32; words];
                // A few scattered bits, then maybe a dense run of words.
                for _ in 0..next() % 40 {
                    let t = (next() % (words as u64 * 32)) as u32;
                    set_bit(&mut mask, t);
                }
                if next() % 2 == 0 {
                    let from = (next() % words as u64) as usize;
                    for w in &mut mask[from..(from + 1 + (next() % 24) as usize).min(words)] {
                        *w |= next() as u32;
                    }
                }
                let want: Vec<u32> = (0..words as u32 * 32).filter(|&t| get_bit(&mask, t)).collect();
                let stored = StoredMask::new(&mask);
                assert_eq!(
                    matches!(stored, StoredMask::Dense(..)),
                    want.len() > words / SPARSE_FRACTION,
                    "{words} words"
                );
                assert_eq!(stored.ones(), want);
                assert_eq!(ones(&mask), want);
            }
        }
    }

    #[test]
    fn apply_masks_clear_bits_and_overhang() {
        let mut row = vec![1.0f32; 70];
        let mut mask = vec![0u32; 2];
        set_bit(&mut mask, 3);
        set_bit(&mut mask, 33);
        mask[0] |= 1 << 31;
        apply_mask(&mut row, &mask, f32::NEG_INFINITY);
        let kept: Vec<usize> = (0..70).filter(|&i| row[i] == 1.0).collect();
        assert_eq!(kept, vec![3, 31, 33]);
        let mut all = vec![0u16; 10];
        apply_mask(&mut all, &[u32::MAX], 0xFC00);
        assert!(all.iter().all(|&x| x == 0));
    }
}
