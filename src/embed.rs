//! From a preprocessed volume to one embedding vector.
//!
//! Two ways to run the encoder over a scan:
//! - whole volume (the default): one forward pass over the full preprocessed array,
//!   refused above [`EmbedOptions::max_voxels`] so memory stays bounded;
//! - sliding windows (`--roi`): cubes of the given size, placed on a grid whose step is
//!   a multiple of the encoder's down-sampling factor (32), so every window's feature
//!   maps fall exactly on the whole scan's feature grid. Overlapping features are
//!   averaged, then pooled exactly as in the whole-volume case.
//!
//! Pooling: [`Pooling::LastStage`] is the mean over space of the last stage output
//! (768 values for the published model); [`Pooling::MultiScale`] concatenates the
//! spatial means of all five stage outputs (48 + 96 + 192 + 384 + 768 = 1488).

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::model::swin::global_average;
use crate::model::SwinEncoder;

/// Stage outputs that make up the embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    LastStage,
    MultiScale,
}

impl Pooling {
    /// CSV column names of an embedding from `encoder`.
    pub fn column_names(&self, encoder: &SwinEncoder) -> Vec<String> {
        let cfg = encoder.config();
        match self {
            Pooling::LastStage => (0..cfg.num_features()).map(|i| format!("emb_{i}")).collect(),
            Pooling::MultiScale => (0..=cfg.depths.len())
                .flat_map(|s| (0..cfg.stage_channels(s)).map(move |i| format!("s{s}_{i}")))
                .collect(),
        }
    }

    fn stages(&self, encoder: &SwinEncoder) -> Vec<usize> {
        let last = encoder.config().depths.len();
        match self {
            Pooling::LastStage => vec![last],
            Pooling::MultiScale => (0..=last).collect(),
        }
    }
}

/// How to run the encoder over one volume.
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    pub pooling: Pooling,
    /// Sliding-window size in voxels along i, j, k; `None` runs the whole volume.
    pub roi: Option<[usize; 3]>,
    /// Fraction of a window shared with its neighbour, in [0, 1).
    pub overlap: f64,
    /// Largest whole-volume input, in voxels, before the run is refused.
    pub max_voxels: usize,
}

/// Default whole-volume limit: 224³ voxels. The published encoder's peak memory grows
/// about linearly with the input; see docs/BENCHMARKS.md for the measured figure.
pub const DEFAULT_MAX_VOXELS: usize = 224 * 224 * 224;

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions {
            pooling: Pooling::LastStage,
            roi: None,
            overlap: 0.5,
            max_voxels: DEFAULT_MAX_VOXELS,
        }
    }
}

/// Embed a `[1, C, D, H, W]` input. Returns the pooled vector.
pub fn embed_tensor(encoder: &SwinEncoder, x: &Tensor, opts: &EmbedOptions) -> Result<Vec<f32>> {
    let stages = match opts.roi {
        None => {
            let voxels = x.elem_count();
            if voxels > opts.max_voxels {
                let dims = x.dims();
                return Err(Error::invalid(format!(
                    "the preprocessed volume is {}x{}x{} voxels, above the whole-volume limit of {} voxels; \
                     pass --roi 128 to embed it in sliding windows, or raise --max-voxels",
                    dims[2], dims[3], dims[4], opts.max_voxels
                )));
            }
            let all = encoder.forward(x)?;
            opts.pooling.stages(encoder).into_iter().map(|s| all[s].clone()).collect()
        }
        Some(roi) => sliding_window_stages(encoder, x, roi, opts)?,
    };
    pool(&stages)
}

fn pool(stages: &[Tensor]) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for s in stages {
        out.extend(global_average(s)?.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// Returns window start positions along one axis of length `n`. They form a regular
/// grid whose step is `roi·(1 − overlap)` rounded down to a multiple of `align` (at
/// least `align`). The last window starts at `n − roi` rounded down to `align`, which
/// is flush with the end because callers make `n` and `roi` multiples of `align`.
pub fn window_starts(n: usize, roi: usize, overlap: f64, align: usize) -> Vec<usize> {
    if n <= roi {
        return vec![0];
    }
    let step = (((roi as f64) * (1.0 - overlap)) as usize / align * align).max(align);
    let last = (n - roi) / align * align;
    let mut starts: Vec<usize> = (0..=last).step_by(step).collect();
    if *starts.last().unwrap_or(&0) != last {
        starts.push(last);
    }
    starts
}

/// Stage outputs of the whole volume assembled from windows: each window's maps are
/// added into full-size maps and divided by how many windows covered each cell.
fn sliding_window_stages(encoder: &SwinEncoder, x: &Tensor, roi: [usize; 3], opts: &EmbedOptions) -> Result<Vec<Tensor>> {
    let align = encoder.config().downsampling();
    let (_, _, d, h, w) = x.dims5()?;
    let dims = [d, h, w];
    for (a, r) in roi.iter().enumerate() {
        if r % align != 0 {
            return Err(Error::invalid(format!("--roi must be a multiple of {align} voxels on every axis, got {r}")));
        }
        if dims[a] % align != 0 {
            return Err(Error::invalid(format!(
                "sliding windows need the volume padded to a multiple of {align} (axis {a} has {}); keep padding on",
                dims[a]
            )));
        }
    }
    if !(0.0..1.0).contains(&opts.overlap) {
        return Err(Error::invalid(format!("--overlap must be in [0, 1), got {}", opts.overlap)));
    }

    let roi = [roi[0].min(d), roi[1].min(h), roi[2].min(w)];
    let starts: Vec<Vec<usize>> = (0..3).map(|a| window_starts(dims[a], roi[a], opts.overlap, align)).collect();
    let wanted = opts.pooling.stages(encoder);
    let mut sums: Vec<Option<Tensor>> = vec![None; wanted.len()];
    let mut counts: Vec<Option<Tensor>> = vec![None; wanted.len()];

    for &i in &starts[0] {
        for &j in &starts[1] {
            for &k in &starts[2] {
                let window = x.narrow(2, i, roi[0])?.narrow(3, j, roi[1])?.narrow(4, k, roi[2])?;
                let out = encoder.forward(&window.contiguous()?)?;
                for (slot, &s) in wanted.iter().enumerate() {
                    let f = 2usize << s; // stage s is at 1/2^(s+1) resolution
                    accumulate(&mut sums[slot], &mut counts[slot], &out[s], [i / f, j / f, k / f], [d / f, h / f, w / f], x.device())?;
                }
            }
        }
    }

    sums.into_iter()
        .zip(counts)
        .map(|(s, c)| {
            let (s, c) = (s.expect("at least one window"), c.expect("at least one window"));
            Ok(s.broadcast_div(&c)?)
        })
        .collect()
}

/// Add `part` into the full-size map at `offset`, and 1 into the matching counts.
fn accumulate(
    sum: &mut Option<Tensor>,
    count: &mut Option<Tensor>,
    part: &Tensor,
    offset: [usize; 3],
    full: [usize; 3],
    device: &Device,
) -> Result<()> {
    let (_, _, pd, ph, pw) = part.dims5()?;
    let padded = part
        .pad_with_zeros(2, offset[0], full[0] - offset[0] - pd)?
        .pad_with_zeros(3, offset[1], full[1] - offset[1] - ph)?
        .pad_with_zeros(4, offset[2], full[2] - offset[2] - pw)?;
    let ones = Tensor::ones((1, 1, pd, ph, pw), part.dtype(), device)?
        .pad_with_zeros(2, offset[0], full[0] - offset[0] - pd)?
        .pad_with_zeros(3, offset[1], full[1] - offset[1] - ph)?
        .pad_with_zeros(4, offset[2], full[2] - offset[2] - pw)?;
    *sum = Some(match sum.take() {
        Some(s) => (s + padded)?,
        None => padded,
    });
    *count = Some(match count.take() {
        Some(n) => (n + ones)?,
        None => ones,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_starts_cover_axis_on_aligned_grid() {
        assert_eq!(window_starts(96, 128, 0.5, 32), vec![0]);
        assert_eq!(window_starts(256, 128, 0.5, 32), vec![0, 64, 128]);
        assert_eq!(window_starts(224, 128, 0.5, 32), vec![0, 64, 96]);
        assert_eq!(window_starts(224, 128, 0.0, 32), vec![0, 96]);
    }
}
