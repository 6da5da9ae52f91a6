//! Branch-free `exp` and `ln` for the hot loops of resampling and of SMC's
//! masked distributions: written so that loops over them vectorise (no
//! libm call, no branch), in f64 for log weights and in f32 for float32
//! log-probs. One home, so both users share one tested implementation.

/// Below this, `exp_nonpos` returns 0. `e^-708` is just above the smallest
/// normal double; flushing subnormal weights to zero keeps the bit tricks in
/// [`exp_nonpos`] simple, keeps slow subnormal arithmetic out of the loops,
/// and changes nothing measurable: such a particle is `e^708` times less
/// likely than the best one.
pub(crate) const EXP_CUTOFF: f64 = -708.0;

/// `1.5 * 2^52`: adding it to a double of magnitude below `2^51` rounds it
/// to an integer that then sits in the low mantissa bits.
pub(crate) const SHIFT: f64 = 6_755_399_441_055_744.0;

/// `exp(x)` for `x <= 0` (including `-inf`), branch-free so that loops over
/// it vectorise. Relative error below ~6e-16 (3 ulp) on `[-708, 0]`; exactly 0 below
/// `EXP_CUTOFF`, exactly 1 at 0.
///
/// Cody-Waite reduction `x = k ln2 + r`, `|r| <= ln2 / 2`, then the
/// degree-12 Taylor polynomial of `e^r` (truncation error
/// `< 0.3466^13 / 13! ~ 1.7e-16`) evaluated by Estrin's scheme rather than
/// Horner's: Horner is a chain of 24 dependent operations, and at that
/// latency even a vectorised loop stalls. Then scaling by `2^k`, built
/// directly in the exponent bits. `k` comes from the `SHIFT` trick, so no
/// float-to-int conversion is needed (SSE2/AVX2 have no packed one for 64-bit
/// integers).
#[inline(always)]
pub fn exp_nonpos(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    // ln 2 split so that k * LN2_HI is exact for |k| < 2^11.
    const LN2_HI: f64 = 0.693_147_180_369_123_8; // 0x3fe62e42fee00000
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    let in_range = x >= EXP_CUTOFF;
    let xc = if in_range { x } else { EXP_CUTOFF };
    let t = xc.mul_add(LOG2E, SHIFT);
    let kf = t - SHIFT;
    let r = (-kf).mul_add(LN2_LO, (-kf).mul_add(LN2_HI, xc));
    // Estrin on 1/j!, j = 0..12.
    let r2 = r * r;
    let r4 = r2 * r2;
    let r8 = r4 * r4;
    let p01 = r + 1.0;
    let p23 = r.mul_add(1.0 / 6.0, 0.5);
    let p45 = r.mul_add(1.0 / 120.0, 1.0 / 24.0);
    let p67 = r.mul_add(1.0 / 5_040.0, 1.0 / 720.0);
    let p89 = r.mul_add(1.0 / 362_880.0, 1.0 / 40_320.0);
    let p1011 = r.mul_add(1.0 / 39_916_800.0, 1.0 / 3_628_800.0);
    let p12 = 1.0 / 479_001_600.0;
    let q0 = r2.mul_add(p23, p01);
    let q1 = r2.mul_add(p67, p45);
    let q2 = r2.mul_add(p1011, p89);
    let s0 = r4.mul_add(q1, q0);
    let s1 = r4.mul_add(p12, q2);
    let p = r8.mul_add(s1, s0);
    // k = t.bits - SHIFT.bits (k in [-1022, 0] here); biased exponent k + 1023.
    let k_bits = t.to_bits().wrapping_sub(SHIFT.to_bits());
    let scale = f64::from_bits(k_bits.wrapping_add(1023) << 52);
    let y = p * scale;
    if in_range {
        y
    } else {
        0.0
    }
}

/// `-ln(y)` for `y` in `(0, 1]` (normal), branch-free so that loops over it
/// vectorise; relative error a few ulp. Used to turn uniforms into
/// exponentials (`-ln(1 - u)`).
///
/// `y = 2^e m` with `m` in `[sqrt(1/2), sqrt(2))`, then
/// `ln m = 2 atanh(s)`, `s = (m - 1) / (m + 1)`, `|s| <= 0.1716`, as an odd
/// series in `s` up to `s^21` (next term `< 0.1716^22 * 2 / 23 < 1.3e-18`).
#[inline(always)]
pub(crate) fn neg_ln_unit(y: f64) -> f64 {
    const LN2_HI: f64 = 0.693_147_180_369_123_8; // 0x3fe62e42fee00000
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const MANT: u64 = (1 << 52) - 1;
    let bits = y.to_bits();
    let m1 = f64::from_bits((bits & MANT) | (1023 << 52)); // [1, 2)
    let big = m1 > std::f64::consts::SQRT_2;
    let m = if big { m1 * 0.5 } else { m1 };
    // Unbiased exponent (+1 if halved), as a double via the SHIFT trick.
    let e_bits = (bits >> 52).wrapping_sub(1023).wrapping_add(big as u64);
    let e = f64::from_bits(SHIFT.to_bits().wrapping_add(e_bits)) - SHIFT;
    let s = (m - 1.0) / (m + 1.0);
    let z = s * s;
    let z2 = z * z;
    let z4 = z2 * z2;
    let z8 = z4 * z4;
    // sum_{j=0..10} z^j / (2j + 1), by Estrin.
    let a01 = z.mul_add(1.0 / 3.0, 1.0);
    let a23 = z.mul_add(1.0 / 7.0, 1.0 / 5.0);
    let a45 = z.mul_add(1.0 / 11.0, 1.0 / 9.0);
    let a67 = z.mul_add(1.0 / 15.0, 1.0 / 13.0);
    let a89 = z.mul_add(1.0 / 19.0, 1.0 / 17.0);
    let a10 = 1.0 / 21.0;
    let b0 = z2.mul_add(a23, a01);
    let b1 = z2.mul_add(a67, a45);
    let b2 = z2.mul_add(a10, a89);
    let series = z8.mul_add(b2, z4.mul_add(b1, b0));
    let ln_m = (2.0 * s) * series;
    -e.mul_add(LN2_LO, e.mul_add(LN2_HI, ln_m))
}

/// Below this, [`exp_nonpos_f32`] returns 0: `e^-87` is just above the
/// smallest normal f32.
const EXP_CUTOFF_F32: f32 = -87.0;

/// `exp(x)` in f32 for `x <= 0` (including `-inf`), branch-free so that
/// loops over it vectorise; relative error below ~2e-7. The f32 twin of
/// [`exp_nonpos`]: `x = k ln2 + r`, `|r| <= ln2 / 2`, the degree-7 Taylor
/// polynomial of `e^r` (truncation `< 0.347^8 / 8! ~ 5e-9`) by Estrin's
/// scheme, `2^k` built in the exponent bits, `k` from the `1.5 * 2^23`
/// shift trick.
#[inline(always)]
pub fn exp_nonpos_f32(x: f32) -> f32 {
    const SHIFT32: f32 = 12_582_912.0; // 1.5 * 2^23
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75; // 0x3f317200: k * LN2_HI exact for |k| < 2^8
    const LN2_LO: f32 = 1.428_606_8e-6;
    let in_range = x >= EXP_CUTOFF_F32;
    let xc = if in_range { x } else { EXP_CUTOFF_F32 };
    let t = xc.mul_add(LOG2E, SHIFT32);
    let kf = t - SHIFT32;
    let r = (-kf).mul_add(LN2_LO, (-kf).mul_add(LN2_HI, xc));
    let r2 = r * r;
    let r4 = r2 * r2;
    let p01 = r + 1.0;
    let p23 = r.mul_add(1.0 / 6.0, 0.5);
    let p45 = r.mul_add(1.0 / 120.0, 1.0 / 24.0);
    let p67 = r.mul_add(1.0 / 5040.0, 1.0 / 720.0);
    let q0 = r2.mul_add(p23, p01);
    let q1 = r2.mul_add(p67, p45);
    let p = r4.mul_add(q1, q0);
    // k = t.bits - SHIFT32.bits, in [-126, 0] here; biased exponent k + 127.
    let k_bits = t.to_bits().wrapping_sub(SHIFT32.to_bits());
    let scale = f32::from_bits(k_bits.wrapping_add(127) << 23);
    let y = p * scale;
    if in_range {
        y
    } else {
        0.0
    }
}
