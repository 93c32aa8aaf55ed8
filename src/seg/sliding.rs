//! Sliding-window inference for dense (per-voxel) networks, as MONAI 1.4.0's
//! `sliding_window_inference(mode="gaussian", sigma_scale=0.125, padding_mode="constant")`.
//!
//! Window placement follows MONAI: along each axis the step is `int(roi · (1 − overlap))` (at
//! least 1; a whole axis when the window spans it), and the last window is moved back to end at
//! the volume's edge. An axis shorter than the window is zero-padded, `⌊diff/2⌋` before and the
//! rest after, and the padding is cut from the result. Overlapping outputs are blended with a
//! Gaussian weight per window (σ = roi/8 per axis, peak 1, clamped below at 1e-3), summed, and
//! divided by the summed weights. When a single window covers the whole input the weight is 1,
//! so the result is exactly the network's output on that input.
//!
//! Memory: windows are run in order of their start along the first axis, and output slices are
//! handed to the caller as soon as no later window can touch them. The accumulator therefore
//! contains `classes × roi[0] × H × W` floats (plus one weight per voxel of that slab), not one
//! float per class for every voxel of the volume.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Gaussian σ as a fraction of the window size, MONAI's default `sigma_scale`.
pub const SIGMA_SCALE: f64 = 0.125;

/// Smallest blending weight; MONAI clamps the Gaussian here so edge voxels still count.
const MIN_WEIGHT: f32 = 1e-3;

/// Window size, overlap and test-time mirroring.
#[derive(Debug, Clone, PartialEq)]
pub struct SlidingWindow {
    /// Window size in voxels along the three spatial axes of the network input.
    pub roi: [usize; 3],
    /// Fraction of a window shared with its neighbour, in [0, 1).
    pub overlap: f64,
    /// Average the network's outputs over all 8 combinations of flips of the three axes.
    pub mirror: bool,
}

/// Window start positions along one axis of `size` voxels (`size >= roi`).
pub fn window_starts(size: usize, roi: usize, overlap: f64) -> Vec<usize> {
    let step = if roi == size { roi } else { ((roi as f64 * (1.0 - overlap)) as usize).max(1) };
    let count = (0..size.div_ceil(step)).find(|d| d * step + roi >= size).map_or(1, |d| d + 1);
    (0..count).map(|i| (i * step).min(size - roi)).collect()
}

/// MONAI's Gaussian importance map for a window, flattened in C order.
pub fn gaussian_weights(roi: [usize; 3]) -> Vec<f32> {
    let axis = |n: usize| -> Vec<f32> {
        let sigma = n as f64 * SIGMA_SCALE;
        let centre = (n as f64 - 1.0) / 2.0;
        (0..n).map(|i| (-(i as f64 - centre).powi(2) / (2.0 * sigma * sigma)).exp() as f32).collect()
    };
    let (a, b, c) = (axis(roi[0]), axis(roi[1]), axis(roi[2]));
    let mut w = Vec::with_capacity(roi.iter().product());
    for &x in &a {
        for &y in &b {
            for &z in &c {
                w.push(x * y * z);
            }
        }
    }
    let floor = w.iter().copied().fold(f32::INFINITY, f32::min).max(MIN_WEIGHT);
    w.iter_mut().for_each(|v| *v = v.max(floor));
    w
}

/// Blended output slices `[start, start + n)` of the first axis, `[classes, n, H, W]` in C order,
/// on the input's own grid (padding already removed).
pub struct Slab<'a> {
    pub start: usize,
    pub depth: usize,
    pub values: &'a [f32],
}

impl Slab<'_> {
    /// Writes the class with the largest output of each voxel to `out` (one entry per voxel of
    /// the slab, C order); ties go to the lower class.
    pub fn argmax_into<T>(&self, classes: usize, out: &mut [T], label: impl Fn(usize) -> T) {
        let n = out.len();
        for (v, dst) in out.iter_mut().enumerate() {
            let mut best = 0;
            for k in 1..classes {
                if self.values[k * n + v] > self.values[best * n + v] {
                    best = k;
                }
            }
            *dst = label(best);
        }
    }
}

/// Runs `net` over windows of `input` `[1, C, D, H, W]` and passes the blended output, slab by
/// slab in increasing order along the first axis, to `emit`. `net` maps a window
/// `[1, C, r0, r1, r2]` to `[1, classes, r0, r1, r2]`.
pub fn run<N, E>(input: &Tensor, classes: usize, window: &SlidingWindow, mut net: N, mut emit: E) -> Result<()>
where
    N: FnMut(&Tensor) -> Result<Tensor>,
    E: FnMut(Slab<'_>) -> Result<()>,
{
    let (_, _, d, h, w) = input.dims5().map_err(tensor_error)?;
    let roi = window.roi;
    let (padded, before) = pad_to_window(input, [d, h, w], roi)?;
    let size = [d.max(roi[0]), h.max(roi[1]), w.max(roi[2])];
    let starts: Vec<Vec<usize>> = (0..3).map(|a| window_starts(size[a], roi[a], window.overlap)).collect();

    let single = starts.iter().all(|s| s.len() == 1);
    let weights = if single { vec![1.0; roi.iter().product()] } else { gaussian_weights(roi) };
    let mut acc = Accumulator::new(classes, roi, size);

    for (g, &z0) in starts[0].iter().enumerate() {
        for &y0 in &starts[1] {
            for &x0 in &starts[2] {
                let patch = crop_window(&padded, [z0, y0, x0], roi)?;
                let out = predict_window(&mut net, &patch, window.mirror)?;
                acc.add(&out, [y0, x0], &weights)?;
            }
        }
        let next = starts[0].get(g + 1).copied().unwrap_or(size[0]);
        acc.finish_until(next, z0, |start, depth, values| {
            emit_unpadded(start, depth, values, classes, size, [d, h, w], before, &mut emit)
        })?;
    }
    Ok(())
}

fn tensor_error(e: candle_core::Error) -> Error {
    Error::invalid(format!("sliding-window inference: {e}"))
}

/// Zero-pads axes shorter than the window, `⌊diff/2⌋` before; returns the offsets before.
fn pad_to_window(input: &Tensor, dims: [usize; 3], roi: [usize; 3]) -> Result<(Tensor, [usize; 3])> {
    let mut x = input.clone();
    let mut before = [0; 3];
    for a in 0..3 {
        let diff = roi[a].saturating_sub(dims[a]);
        before[a] = diff / 2;
        if diff > 0 {
            x = x.pad_with_zeros(a + 2, diff / 2, diff - diff / 2).map_err(tensor_error)?;
        }
    }
    Ok((x, before))
}

fn crop_window(x: &Tensor, at: [usize; 3], roi: [usize; 3]) -> Result<Tensor> {
    let mut t = x.clone();
    for a in 0..3 {
        t = t.narrow(a + 2, at[a], roi[a]).map_err(tensor_error)?;
    }
    t.contiguous().map_err(tensor_error)
}

/// Runs the network on one window and returns its output as `[classes · r0 · r1 · r2]`,
/// averaged over the 8 flip combinations when `mirror` is set.
fn predict_window<N>(net: &mut N, patch: &Tensor, mirror: bool) -> Result<Vec<f32>>
where
    N: FnMut(&Tensor) -> Result<Tensor>,
{
    let flips: Vec<Vec<usize>> = if mirror {
        (0..8usize).map(|m| (0..3).filter(|a| m >> a & 1 == 1).map(|a| a + 2).collect()).collect()
    } else {
        vec![Vec::new()]
    };
    let mut sum: Option<Tensor> = None;
    for axes in &flips {
        let flipped = patch.flip(axes).map_err(tensor_error)?;
        let out = net(&flipped)?.flip(axes).map_err(tensor_error)?;
        sum = Some(match sum {
            Some(s) => (s + out).map_err(tensor_error)?,
            None => out,
        });
    }
    let Some(sum) = sum else { return Ok(Vec::new()) };
    let mean = if flips.len() > 1 { (sum / flips.len() as f64).map_err(tensor_error)? } else { sum };
    mean.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).map_err(tensor_error)
}

/// Crops the padding from a finished slab of the padded grid and hands it on.
#[allow(clippy::too_many_arguments)]
fn emit_unpadded<E>(
    start: usize,
    depth: usize,
    values: &[f32],
    classes: usize,
    size: [usize; 3],
    dims: [usize; 3],
    before: [usize; 3],
    emit: &mut E,
) -> Result<()>
where
    E: FnMut(Slab<'_>) -> Result<()>,
{
    let lo = start.max(before[0]);
    let hi = (start + depth).min(before[0] + dims[0]);
    if lo >= hi {
        return Ok(());
    }
    let plane = size[1] * size[2];
    if before == [0; 3] && size == dims {
        let cropped: Vec<f32> = (0..classes)
            .flat_map(|k| &values[(k * depth + lo - start) * plane..(k * depth + hi - start) * plane])
            .copied()
            .collect();
        return emit(Slab { start: lo - before[0], depth: hi - lo, values: &cropped });
    }
    let mut cropped = Vec::with_capacity(classes * (hi - lo) * dims[1] * dims[2]);
    for k in 0..classes {
        for z in lo..hi {
            for y in before[1]..before[1] + dims[1] {
                let row = ((k * depth + z - start) * size[1] + y) * size[2] + before[2];
                cropped.extend_from_slice(&values[row..row + dims[2]]);
            }
        }
    }
    emit(Slab { start: lo - before[0], depth: hi - lo, values: &cropped })
}

/// Weighted sums over a slab of `roi[0]` slices starting at `base`.
struct Accumulator {
    classes: usize,
    roi: [usize; 3],
    size: [usize; 3],
    base: usize,
    sums: Vec<f32>,
    weights: Vec<f32>,
}

impl Accumulator {
    fn new(classes: usize, roi: [usize; 3], size: [usize; 3]) -> Self {
        let slab = roi[0] * size[1] * size[2];
        Accumulator { classes, roi, size, base: 0, sums: vec![0.0; classes * slab], weights: vec![0.0; slab] }
    }

    fn plane(&self) -> usize {
        self.size[1] * self.size[2]
    }

    /// Adds one window's output (its first-axis start is `base`) at in-plane offset `at`.
    fn add(&mut self, out: &[f32], at: [usize; 2], w: &[f32]) -> Result<()> {
        let [r0, r1, r2] = self.roi;
        let voxels = r0 * r1 * r2;
        if out.len() != self.classes * voxels {
            return Err(Error::invalid(format!(
                "the network gave {} values for a {r0}x{r1}x{r2} window, expected {} classes",
                out.len(),
                self.classes
            )));
        }
        let (plane, width) = (self.plane(), self.size[2]);
        let target = |z: usize, y: usize| z * plane + (at[0] + y) * width + at[1];
        self.sums.par_chunks_mut(r0 * plane).zip(out.par_chunks(voxels)).for_each(|(sum, out)| {
            for z in 0..r0 {
                for y in 0..r1 {
                    let src = (z * r1 + y) * r2;
                    let dst = target(z, y);
                    for x in 0..r2 {
                        sum[dst + x] += w[src + x] * out[src + x];
                    }
                }
            }
        });
        for z in 0..r0 {
            for y in 0..r1 {
                let (src, dst) = ((z * r1 + y) * r2, target(z, y));
                for x in 0..r2 {
                    self.weights[dst + x] += w[src + x];
                }
            }
        }
        Ok(())
    }

    /// Normalizes slices `[base, next)`, which no later window reaches, hands them to `emit` as
    /// `(start, depth, [classes, depth, H, W])`, and moves the slab to start at `next`.
    fn finish_until<E>(&mut self, next: usize, current: usize, mut emit: E) -> Result<()>
    where
        E: FnMut(usize, usize, &[f32]) -> Result<()>,
    {
        debug_assert_eq!(self.base, current);
        let depth = next - self.base;
        let plane = self.plane();
        let slab = self.roi[0] * plane;
        let done = depth * plane;
        let mut values = Vec::with_capacity(self.classes * done);
        for k in 0..self.classes {
            let sums = &self.sums[k * slab..k * slab + done];
            values.extend(sums.iter().zip(&self.weights[..done]).map(|(s, w)| s / w));
        }
        emit(self.base, depth, &values)?;

        for k in 0..self.classes {
            let part = &mut self.sums[k * slab..(k + 1) * slab];
            part.copy_within(done.min(slab).., 0);
            part[slab.saturating_sub(done)..].fill(0.0);
        }
        self.weights.copy_within(done.min(slab).., 0);
        self.weights[slab.saturating_sub(done)..].fill(0.0);
        self.base = next;
        Ok(())
    }
}
