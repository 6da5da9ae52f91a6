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
    let mut out = Vec::new();
    for (w, &word) in mask.iter().enumerate() {
        let mut x = word;
        while x != 0 {
            let b = x.trailing_zeros();
            out.push((w as u32) * 32 + b);
            x &= x - 1;
        }
    }
    out
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
