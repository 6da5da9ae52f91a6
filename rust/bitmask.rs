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
