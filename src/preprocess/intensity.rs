//! Intensity normalization over the non-zero voxels of a volume.
//!
//! Zero voxels are background (skull-stripped or padded) and stay exactly zero, so
//! that the normalized image keeps its mask. Sums are accumulated in f64 in a fixed
//! chunk order, so results do not depend on the number of threads.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::volume::Volume;

/// Smallest standard deviation divided by, so a constant foreground maps to 0
/// instead of dividing by zero.
pub const STD_FLOOR: f64 = 1e-8;

/// Values per parallel task when summing a volume.
const CHUNK: usize = 1 << 16;

/// Statistics of the non-zero voxels that a z-score used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NonZeroStats {
    /// Number of voxels `!= 0`; 0 means the volume was left unchanged.
    pub count: usize,
    /// Mean of the non-zero voxels.
    pub mean: f64,
    /// Population standard deviation (numpy's default `ddof=0`) of the non-zero voxels.
    pub std: f64,
}

impl NonZeroStats {
    /// Returns whether the volume had no non-zero voxel, so normalization did nothing.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Computes count, mean and population standard deviation of the voxels `!= 0`
/// (two passes, as numpy's `x[mask].mean()` and `x[mask].std()`).
pub fn nonzero_stats(values: &[f32]) -> NonZeroStats {
    let partials: Vec<(usize, f64)> = values
        .par_chunks(CHUNK)
        .map(|chunk| {
            let nonzero = chunk.iter().filter(|v| **v != 0.0);
            nonzero.fold((0, 0.0), |(n, s), v| (n + 1, s + *v as f64))
        })
        .collect();
    let (count, sum) = partials
        .iter()
        .fold((0, 0.0), |(n, s), (cn, cs)| (n + cn, s + cs));
    if count == 0 {
        return NonZeroStats {
            count: 0,
            mean: 0.0,
            std: 0.0,
        };
    }
    let mean = sum / count as f64;

    let squares: Vec<f64> = values
        .par_chunks(CHUNK)
        .map(|chunk| {
            let nonzero = chunk.iter().filter(|v| **v != 0.0);
            nonzero.map(|v| (*v as f64 - mean).powi(2)).sum()
        })
        .collect();
    let variance = squares.iter().sum::<f64>() / count as f64;
    NonZeroStats {
        count,
        mean,
        std: variance.sqrt(),
    }
}

/// Z-scores the non-zero voxels in place: `(x − mean) / max(std, 1e-8)` with the
/// mean and population std of the voxels `!= 0`; zero voxels stay 0.
///
/// An all-zero volume is left as it is; the returned count is then 0. Non-finite
/// voxels count as non-zero and make every output NaN, as in numpy.
pub fn zscore_nonzero(volume: &mut Volume) -> NonZeroStats {
    let stats = with_values(volume, nonzero_stats);
    if stats.is_empty() {
        return stats;
    }

    let std = stats.std.max(STD_FLOOR);
    let mean = stats.mean;
    map_in_place(volume, |v| {
        if v != 0.0 {
            ((v as f64 - mean) / std) as f32
        } else {
            0.0
        }
    });
    stats
}

/// The percentile values a clip used, and how many voxels they were taken over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipRange {
    /// Number of non-zero voxels the percentiles were computed over; 0 means the
    /// volume was left unchanged.
    pub count: usize,
    /// Value of the `lo`-th percentile, the new minimum of the non-zero voxels.
    pub lo: f32,
    /// Value of the `hi`-th percentile, the new maximum of the non-zero voxels.
    pub hi: f32,
}

/// Clips the non-zero voxels to their own `lo`-th and `hi`-th percentiles (0–100).
///
/// Percentiles are computed over the voxels `!= 0` only, with numpy's default
/// linear interpolation (`np.percentile(x[x != 0], q)`), and only those voxels are
/// clipped: zero voxels stay 0 so a following [`zscore_nonzero`] uses the same mask.
/// A value clipped to exactly 0 becomes background for that z-score. Fails when the
/// percentiles are outside 0–100 or `lo > hi`.
pub fn clip_percentiles(volume: &mut Volume, lo: f64, hi: f64) -> Result<ClipRange> {
    let valid = |q: f64| (0.0..=100.0).contains(&q);
    if !(valid(lo) && valid(hi) && lo <= hi) {
        return Err(Error::invalid(format!(
            "percentile clip {lo}..{hi} is invalid; give 0 <= lo <= hi <= 100"
        )));
    }

    let mut nonzero: Vec<f32> = with_values(volume, |values| {
        values.iter().copied().filter(|v| *v != 0.0).collect()
    });
    if nonzero.is_empty() {
        return Ok(ClipRange {
            count: 0,
            lo: 0.0,
            hi: 0.0,
        });
    }
    let (Some(lo_value), Some(hi_value)) =
        (percentile(&mut nonzero, lo), percentile(&mut nonzero, hi))
    else {
        return Ok(ClipRange {
            count: 0,
            lo: 0.0,
            hi: 0.0,
        });
    };
    let (lo_value, hi_value) = (lo_value as f32, hi_value as f32);

    map_in_place(volume, |v| {
        if v != 0.0 {
            v.clamp(lo_value, hi_value)
        } else {
            0.0
        }
    });
    Ok(ClipRange {
        count: nonzero.len(),
        lo: lo_value,
        hi: hi_value,
    })
}

/// The `q`-th percentile (0–100) of `values` with numpy's default "linear" method:
/// position `(n − 1) · q / 100` between the sorted values. Reorders `values`, and
/// returns `None` when it is empty.
pub fn percentile(values: &mut [f32], q: f64) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let position = (n - 1) as f64 * q / 100.0;
    let below = (position.floor() as usize).min(n - 1);
    let t = position - below as f64;

    let (_, a, upper) = values.select_nth_unstable_by(below, f32::total_cmp);
    let a = *a as f64;
    let Some(b) = upper.iter().copied().min_by(f32::total_cmp) else {
        return Some(a);
    };
    let b = b as f64;

    // numpy's `_lerp` evaluates from the nearer end, so t = 1 gives exactly b.
    let diff = b - a;
    if t >= 0.5 {
        Some(b - diff * (1.0 - t))
    } else {
        Some(a + diff * t)
    }
}

/// Runs `f` on the voxel values as one slice, copying only a non-contiguous array.
fn with_values<T>(volume: &Volume, f: impl FnOnce(&[f32]) -> T) -> T {
    match volume.data.as_slice_memory_order() {
        Some(values) => f(values),
        None => f(&volume.data.iter().copied().collect::<Vec<f32>>()),
    }
}

/// Applies `f` to every voxel, in parallel when the array is contiguous.
fn map_in_place(volume: &mut Volume, f: impl Fn(f32) -> f32 + Sync) {
    match volume.data.as_slice_memory_order_mut() {
        Some(values) => values.par_iter_mut().for_each(|v| *v = f(*v)),
        None => volume.data.mapv_inplace(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_linearly() {
        // Sorted 1..=5: position (5 − 1) · 0.3 = 1.2 → 2 + 0.2 · (3 − 2) = 2.2.
        let mut values = vec![5.0, 1.0, 4.0, 2.0, 3.0];
        assert!((percentile(&mut values, 30.0).unwrap() - 2.2).abs() < 1e-12);
        assert_eq!(percentile(&mut values, 0.0), Some(1.0));
        assert_eq!(percentile(&mut values, 100.0), Some(5.0));
        assert_eq!(percentile(&mut [], 50.0), None);
    }

    #[test]
    fn nonzero_stats_of_empty_slice() {
        let stats = nonzero_stats(&[0.0, 0.0]);
        assert!(stats.is_empty());
    }
}
