//! Vectorizable elementwise kernels for the CPU inference paths.
//!
//! The standard library's `f32::exp` is a libm call that the compiler cannot
//! vectorize, and float reductions are not vectorized without reassociation. These
//! kernels use a branch-free polynomial `exp` and explicit lane accumulators, and
//! are compiled twice: for the baseline target and with AVX-512 enabled, chosen at
//! run time.

/// Lanes of the explicit reduction accumulators (one AVX-512 register of f32).
const LANES: usize = 16;

/// `exp(x)` for `x ≤ 88.7`, within 2 ulp of `f32::exp` over the range the softmax
/// uses; inputs below −87.3 give `exp(−87.3) ≈ 1.2e−38` instead of a subnormal.
#[inline(always)]
fn exp_poly(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split into a high part exact in f32 and the remainder (Cody–Waite).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer without a call.
    const ROUND: f32 = 12_582_912.0;

    let x = x.clamp(-87.3, 88.7);
    let k = (x * LOG2E + ROUND) - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;

    // Minimax polynomial for exp(r) on [−ln2/2, ln2/2] (Cephes `expf` coefficients).
    let p = 1.987_569_2e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5.000_000_1e-1;
    let e_r = p * r * r + r + 1.0;

    let scale = f32::from_bits(((k as i32 + 127) << 23) as u32);
    e_r * scale
}

#[inline(always)]
fn softmax_row_generic(row: &mut [f32], bias: &[f32]) {
    let n = row.len();
    let body = n / LANES * LANES;

    let mut max = [f32::NEG_INFINITY; LANES];
    for (chunk, b) in row[..body].chunks_exact_mut(LANES).zip(bias[..body].chunks_exact(LANES)) {
        for l in 0..LANES {
            chunk[l] += b[l];
            max[l] = if chunk[l] > max[l] { chunk[l] } else { max[l] };
        }
    }
    let mut m = max.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for (v, b) in row[body..].iter_mut().zip(&bias[body..]) {
        *v += b;
        m = m.max(*v);
    }

    let mut sum = [0f32; LANES];
    for chunk in row[..body].chunks_exact_mut(LANES) {
        for l in 0..LANES {
            chunk[l] = exp_poly(chunk[l] - m);
            sum[l] += chunk[l];
        }
    }
    let mut total: f32 = sum.iter().sum();
    for v in row[body..].iter_mut() {
        *v = exp_poly(*v - m);
        total += *v;
    }

    let inv = 1.0 / total;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_row_avx512(row: &mut [f32], bias: &[f32]) {
    softmax_row_generic(row, bias)
}

/// Replaces `row` with `softmax(row + bias)`; `bias` has the length of `row`.
pub(crate) fn softmax_row(row: &mut [f32], bias: &[f32]) {
    debug_assert_eq!(row.len(), bias.len());
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F, checked just above.
        return unsafe { softmax_row_avx512(row, bias) };
    }
    softmax_row_generic(row, bias)
}

/// `erfc(|z|)` by the Chebyshev fit of Numerical Recipes (`erfcc`, fractional error
/// below 1.2e−7 everywhere), written without branches so it vectorizes.
#[inline(always)]
fn erfc_abs(z: f32) -> f32 {
    let a = z.abs();
    let t = 1.0 / (1.0 + 0.5 * a);
    let p = 0.170_872_77;
    let p = p * t - 0.822_152_23;
    let p = p * t + 1.488_515_87;
    let p = p * t - 1.135_203_98;
    let p = p * t + 0.278_868_07;
    let p = p * t - 0.186_288_06;
    let p = p * t + 0.096_784_18;
    let p = p * t + 0.374_091_96;
    let p = p * t + 1.000_023_68;
    let p = p * t - 1.265_512_23;
    t * exp_poly(-a * a + p)
}

/// Exact (erf) GELU, `0.5·x·(1 + erf(x/√2))`, written with `c = erfc(|x|/√2)`:
/// `x − 0.5·x·c` for `x ≥ 0` and `0.5·x·c` for `x < 0`, which keeps the small
/// negative tail accurate instead of cancelling two numbers close to 1.
#[inline(always)]
fn gelu_erf_one(x: f32) -> f32 {
    let half_tail = 0.5 * x * erfc_abs(x * std::f32::consts::FRAC_1_SQRT_2);
    if x >= 0.0 {
        x - half_tail
    } else {
        half_tail
    }
}

#[inline(always)]
fn gelu_erf_generic(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v = gelu_erf_one(*v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_erf_avx512(values: &mut [f32]) {
    gelu_erf_generic(values)
}

/// Applies the exact GELU to every value in place.
pub(crate) fn gelu_erf_inplace(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F, checked just above.
        return unsafe { gelu_erf_avx512(values) };
    }
    gelu_erf_generic(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_poly_matches_std_exp() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let rel = (exp_poly(x) - x.exp()).abs() / x.exp();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 3e-7, "max relative error {worst}");
    }

    #[test]
    fn gelu_matches_erf_definition() {
        // Reference: 0.5·x·(1 + erf(x/√2)) with candle's f64 erf.
        let mut x = -12.0f64;
        while x < 12.0 {
            let mut v = [x as f32];
            gelu_erf_inplace(&mut v);
            let want = 0.5 * x * (1.0 + candle_core::cpu::erf::erf_f64(x / std::f64::consts::SQRT_2));
            let tolerance = 4e-6 * want.abs() + 1e-9;
            assert!((v[0] as f64 - want).abs() <= tolerance, "gelu({x}) = {} vs {want}", v[0]);
            x += 0.0173;
        }
    }

    #[test]
    fn softmax_row_matches_reference() {
        for n in [1usize, 15, 16, 17, 343] {
            let row: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.7).collect();
            let bias: Vec<f32> = (0..n).map(|i| if i % 5 == 0 { -100.0 } else { (i % 3) as f32 * 0.1 }).collect();
            let mut got = row.clone();
            softmax_row(&mut got, &bias);

            let shifted: Vec<f64> = row.iter().zip(&bias).map(|(a, b)| (*a + *b) as f64).collect();
            let max = shifted.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = shifted.iter().map(|v| (v - max).exp()).sum();
            for (g, s) in got.iter().zip(&shifted) {
                let want = (s - max).exp() / sum;
                assert!((*g as f64 - want).abs() < 1e-6, "n={n}: {g} vs {want}");
            }
        }
    }
}
