//! Synthetic MRI contrasts rendered from a label map or from tissue probability maps.
//!
//! [`render`] draws a random "sequence" and renders one anatomy under it, in the spirit of
//! SynthSeg's generator (Billot et al.) but without spatial deformation. The output lies on
//! the input grid voxel for voxel, so two renders of one anatomy form an image pair of the
//! same anatomy under two contrasts. The steps, in order:
//!
//! 1. Intensities. Each class gets a random mean and a within-class standard deviation, and
//!    every voxel draws its value from its class's normal distribution. A class is a label
//!    value of a label map, or one tissue of a set of probability maps, where a voxel's
//!    mean and deviation are the probability-weighted mix of the tissues'.
//! 2. Bias field: a smooth multiplicative field, trilinear between a few control points.
//! 3. Gaussian blur along each voxel axis, with σ in voxels.
//! 4. Thick slices: groups of slices along one axis are replaced by their mean.
//! 5. Rician or Gaussian noise, after scaling the image maximum to 1.
//! 6. Gamma on the image rescaled to a maximum of 1.
//!
//! The output is finite, in [0, 1], and exactly 0 on the background (label 0, or tissue
//! probabilities summing below a threshold) unless the configuration renders the
//! background, so the non-zero z-score of the preprocessing applies unchanged.
//!
//! Randomness: [`plan`] makes every random choice with the caller's RNG (a few numbers per
//! class and step, plus the seeds of two per-voxel streams), and [`render_plan`] applies a
//! plan without further draws. Per-voxel normals come from a ChaCha8 stream per i-plane
//! keyed by (seed, i), so the output is bit-identical for any rayon thread count.

use ndarray::{Array3, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The anatomy to render, on the voxel grid of the output.
#[derive(Debug, Clone, PartialEq)]
pub enum Anatomy {
    /// A label map: 0 is the background, every other value is its own class.
    Labels(Array3<u16>),
    /// One probability map per tissue, values in [0, 1], all of one shape. Values outside
    /// [0, 1] are clamped to it and non-finite values count as 0.
    Tissue(Vec<Array3<f32>>),
}

impl Anatomy {
    /// Grid shape `[ni, nj, nk]`; `[0, 0, 0]` for an empty tissue list.
    pub fn shape(&self) -> [usize; 3] {
        let dims = match self {
            Anatomy::Labels(labels) => labels.dim(),
            Anatomy::Tissue(maps) => maps.first().map_or((0, 0, 0), |map| map.dim()),
        };
        [dims.0, dims.1, dims.2]
    }

    /// Number of classes including the background: the largest label plus one, or the
    /// number of tissues plus one.
    pub fn class_count(&self) -> usize {
        match self {
            Anatomy::Labels(labels) => labels.iter().copied().max().map_or(1, |max| max as usize + 1),
            Anatomy::Tissue(maps) => maps.len() + 1,
        }
    }

    /// Fails on an empty tissue list or tissue maps of different shapes.
    pub fn validate(&self) -> Result<()> {
        let Anatomy::Tissue(maps) = self else {
            return Ok(());
        };
        let Some(first) = maps.first() else {
            return Err(Error::invalid("tissue anatomy has no probability map; give at least one"));
        };
        if let Some(t) = maps.iter().position(|map| map.dim() != first.dim()) {
            return Err(Error::invalid(format!(
                "tissue map {t} has shape {:?} but map 0 has {:?}; resample all maps onto one grid",
                maps[t].shape(),
                first.shape()
            )));
        }
        Ok(())
    }
}

/// Ranges of the random contrast. Each value of a step is drawn uniformly from its range
/// (`[low, high]`, inclusive), and a range with `low == high` fixes the value without a
/// draw. Intensities are in units where the brightest possible class mean is 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthConfig {
    /// Range of each class's mean intensity.
    pub mean_range: [f32; 2],
    /// Range of each class's within-class standard deviation, in intensity units.
    pub std_range: [f32; 2],
    /// Gives the background a random mean and deviation too, and keeps it in the output.
    /// When false, the background is 0 before and after every step.
    pub render_background: bool,
    /// Tissue maps only: voxels whose probabilities sum below this are background.
    pub tissue_threshold: f32,
    /// Range of the standard deviation of the log bias field (natural log). The field's
    /// control points are `exp(N(0, s²))`, so s = 0.3 gives factors of about 0.55 to 1.8
    /// at two standard deviations.
    pub bias_std_range: [f32; 2],
    /// Control points of the bias field per axis (at least 2), spread evenly from the first
    /// to the last voxel. More points make the field vary faster.
    pub bias_control_points: usize,
    /// Range of the Gaussian blur σ in voxels, drawn for each axis separately.
    pub blur_sigma_range: [f32; 2],
    /// Range of the number of slices averaged into one thick slice, along one axis drawn
    /// uniformly; 1 keeps the resolution.
    pub slice_group_range: [usize; 2],
    /// Range of the noise standard deviation, as a fraction of the image maximum.
    pub noise_std_range: [f32; 2],
    /// Probability that the noise is Rician (the magnitude of complex Gaussian noise added
    /// to the image) instead of Gaussian clipped at 0.
    pub rician_probability: f64,
    /// Range of the gamma exponent, drawn log-uniformly so that γ and 1/γ are equally
    /// likely in a range such as [0.5, 2].
    pub gamma_range: [f32; 2],
}

impl Default for SynthConfig {
    /// Means in [0, 1], deviations up to 0.05 and a log bias deviation up to 0.3 on a 4³
    /// control grid. Blur σ up to 1 voxel, thick slices of 1 to 4, noise up to 5 % of the
    /// maximum (Rician half of the time), and gamma in [0.5, 2].
    fn default() -> Self {
        SynthConfig {
            mean_range: [0.0, 1.0],
            std_range: [0.0, 0.05],
            render_background: false,
            tissue_threshold: 0.1,
            bias_std_range: [0.0, 0.3],
            bias_control_points: 4,
            blur_sigma_range: [0.0, 1.0],
            slice_group_range: [1, 4],
            noise_std_range: [0.0, 0.05],
            rician_probability: 0.5,
            gamma_range: [0.5, 2.0],
        }
    }
}

impl SynthConfig {
    /// Builds a configuration without random effects beyond the class means: no within-class
    /// variation, bias, blur, thick slices or noise, and gamma 1. Each voxel of a label map
    /// then has its label's mean, scaled so that the image maximum is 1.
    pub fn means_only() -> Self {
        SynthConfig {
            std_range: [0.0, 0.0],
            bias_std_range: [0.0, 0.0],
            blur_sigma_range: [0.0, 0.0],
            slice_group_range: [1, 1],
            noise_std_range: [0.0, 0.0],
            gamma_range: [1.0, 1.0],
            ..SynthConfig::default()
        }
    }

    /// Fails on a range that is not finite and ordered, a negative mean, deviation, σ or
    /// noise, a probability outside [0, 1], a slice group below 1, fewer than 2 bias
    /// control points or a gamma that is not positive.
    pub fn validate(&self) -> Result<()> {
        let ranges = [
            ("mean range", self.mean_range),
            ("std range", self.std_range),
            ("bias std range", self.bias_std_range),
            ("blur sigma range", self.blur_sigma_range),
            ("noise std range", self.noise_std_range),
        ];
        for (name, [low, high]) in ranges {
            if !(low >= 0.0 && low <= high && high.is_finite()) {
                return Err(Error::invalid(format!(
                    "synth {name} [{low}, {high}] is invalid; give finite 0 <= low <= high"
                )));
            }
        }
        let [low, high] = self.gamma_range;
        if !(low > 0.0 && low <= high && high.is_finite()) {
            return Err(Error::invalid(format!(
                "synth gamma range [{low}, {high}] is invalid; give finite 0 < low <= high"
            )));
        }
        let [low, high] = self.slice_group_range;
        if !(low >= 1 && low <= high) {
            return Err(Error::invalid(format!(
                "synth slice group range [{low}, {high}] is invalid; give 1 <= low <= high"
            )));
        }
        if self.bias_control_points < 2 {
            return Err(Error::invalid(format!(
                "synth bias control points {} is invalid; give at least 2",
                self.bias_control_points
            )));
        }
        if !(self.tissue_threshold >= 0.0 && self.tissue_threshold.is_finite()) {
            return Err(Error::invalid(format!(
                "synth tissue threshold {} is invalid; give a finite value >= 0",
                self.tissue_threshold
            )));
        }
        if !(0.0..=1.0).contains(&self.rician_probability) {
            return Err(Error::invalid(format!(
                "synth Rician probability {} is invalid; give a value in [0, 1]",
                self.rician_probability
            )));
        }
        Ok(())
    }
}

/// Thick-slice acquisition: slices `[g·m, g·m + g)` along `axis` (0, 1, 2 = i, j, k) take
/// their mean, for every `m`; the last group may be shorter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThickSlices {
    pub axis: usize,
    pub group: usize,
}

/// Every random choice of one render (see the module documentation for the steps).
#[derive(Debug, Clone, PartialEq)]
pub struct SynthPlan {
    /// Mean intensity per class. Index 0 is the background, index c ≥ 1 is label value c
    /// or tissue map c − 1.
    pub means: Vec<f32>,
    /// Within-class standard deviation per class, indexed as `means`.
    pub stds: Vec<f32>,
    /// Keeps the background in the output; when false it is 0.
    pub render_background: bool,
    /// Tissue maps: probability sum below which a voxel is background.
    pub tissue_threshold: f32,
    /// Bias factors at the control points (already exponentiated), or `None` for no bias.
    pub bias_control: Option<Array3<f32>>,
    /// Gaussian blur σ along i, j, k in voxels; 0 skips an axis.
    pub blur_sigma: [f32; 3],
    pub thick_slices: Option<ThickSlices>,
    /// Noise standard deviation as a fraction of the image maximum.
    pub noise_std: f32,
    /// Rician noise when true, Gaussian clipped at 0 when false.
    pub rician: bool,
    pub gamma: f32,
    /// Seed of the per-voxel within-class variation.
    pub texture_seed: u64,
    /// Seed of the per-voxel acquisition noise.
    pub noise_seed: u64,
}

/// Renders `anatomy` under a random contrast drawn from `config` with `rng`; see the module
/// documentation for the steps and the output range.
///
/// # Panics
///
/// Panics when `config` or `anatomy` fails its `validate` (tissue maps of different
/// shapes, say). Use [`try_render`] for input that a file controls.
pub fn render(anatomy: &Anatomy, config: &SynthConfig, rng: &mut impl Rng) -> Array3<f32> {
    match try_render(anatomy, config, rng) {
        Ok(image) => image,
        Err(error) => panic!("synthetic render failed: {error}"),
    }
}

/// Renders as [`render`] does, returning an error where [`render`] panics.
pub fn try_render(anatomy: &Anatomy, config: &SynthConfig, rng: &mut impl Rng) -> Result<Array3<f32>> {
    let plan = plan(anatomy, config, rng)?;
    render_plan(anatomy, &plan)
}

/// Draws every random choice of one render of `anatomy`.
pub fn plan(anatomy: &Anatomy, config: &SynthConfig, rng: &mut impl Rng) -> Result<SynthPlan> {
    config.validate()?;
    anatomy.validate()?;

    let classes = anatomy.class_count();
    let mut means = vec![0.0; classes];
    let mut stds = vec![0.0; classes];
    let first_class = if config.render_background { 0 } else { 1 };
    for c in first_class..classes {
        means[c] = draw(config.mean_range, rng);
        stds[c] = draw(config.std_range, rng);
    }

    let bias_std = draw(config.bias_std_range, rng);
    let bias_control = (bias_std > 0.0).then(|| {
        let n = config.bias_control_points;
        Array3::from_shape_simple_fn((n, n, n), || {
            let z: f32 = rng.sample(StandardNormal);
            (bias_std * z).exp()
        })
    });

    let blur_sigma = [0, 1, 2].map(|_| draw(config.blur_sigma_range, rng));

    let [low, high] = config.slice_group_range;
    let group = if high > low { rng.random_range(low..=high) } else { low };
    let thick_slices = (group > 1).then(|| ThickSlices {
        axis: rng.random_range(0..3),
        group,
    });

    let noise_std = draw(config.noise_std_range, rng);
    let rician = noise_std > 0.0 && config.rician_probability > 0.0 && rng.random_bool(config.rician_probability);
    let [low, high] = config.gamma_range;
    let gamma = draw([low.ln(), high.ln()], rng).exp();

    Ok(SynthPlan {
        means,
        stds,
        render_background: config.render_background,
        tissue_threshold: config.tissue_threshold,
        bias_control,
        blur_sigma,
        thick_slices,
        noise_std,
        rician,
        gamma,
        texture_seed: rng.random(),
        noise_seed: rng.random(),
    })
}

/// Draws uniformly from `[low, high]`; a range with `high <= low` returns `low` without
/// drawing, so fixed values leave the RNG stream unchanged.
fn draw(range: [f32; 2], rng: &mut impl Rng) -> f32 {
    let [low, high] = range;
    if high > low {
        rng.random_range(low..=high)
    } else {
        low
    }
}

/// Applies `plan` to `anatomy`, without randomness beyond the plan's seeds. Fails when the
/// plan has fewer classes than the anatomy or its blur, gamma or slice group is invalid.
pub fn render_plan(anatomy: &Anatomy, plan: &SynthPlan) -> Result<Array3<f32>> {
    anatomy.validate()?;
    check_plan(anatomy, plan)?;
    let shape = anatomy.shape();
    if shape.contains(&0) {
        return Ok(Array3::zeros(shape));
    }

    let (mut image, mask) = class_intensities(anatomy, plan);
    if let Some(control) = &plan.bias_control {
        apply_bias(&mut image, shape, control);
    }
    for (axis, &sigma) in plan.blur_sigma.iter().enumerate() {
        if sigma > 0.0 {
            image = blur_axis(&image, shape, axis, &gaussian_kernel(sigma));
        }
    }
    if let Some(thick) = plan.thick_slices {
        average_slice_groups(&mut image, shape, thick);
    }

    scale_to_unit_max(&mut image);
    if plan.noise_std > 0.0 {
        add_noise(&mut image, shape, plan);
    }
    if let Some(mask) = &mask {
        image.par_iter_mut().zip(mask.par_iter()).for_each(|(v, &inside)| {
            if !inside {
                *v = 0.0;
            }
        });
    }
    scale_to_unit_max(&mut image);
    if plan.gamma != 1.0 {
        let gamma = plan.gamma;
        image.par_iter_mut().for_each(|v| *v = v.powf(gamma));
    }

    Array3::from_shape_vec(shape, image)
        .map_err(|error| Error::invalid(format!("synthetic image does not fit its grid: {error}")))
}

fn check_plan(anatomy: &Anatomy, plan: &SynthPlan) -> Result<()> {
    let classes = anatomy.class_count();
    if plan.means.len() < classes || plan.stds.len() < classes {
        return Err(Error::invalid(format!(
            "synth plan has {} means and {} deviations but the anatomy has {classes} classes; draw the plan for this anatomy",
            plan.means.len(),
            plan.stds.len()
        )));
    }
    if !plan.blur_sigma.iter().all(|s| s.is_finite() && *s >= 0.0) {
        return Err(Error::invalid(format!(
            "synth plan blur sigma {:?} is invalid; give finite values >= 0",
            plan.blur_sigma
        )));
    }
    if !(plan.gamma > 0.0 && plan.gamma.is_finite()) {
        return Err(Error::invalid(format!("synth plan gamma {} is invalid; give a finite value > 0", plan.gamma)));
    }
    if let Some(thick) = plan.thick_slices {
        if thick.axis > 2 || thick.group == 0 {
            return Err(Error::invalid(format!(
                "synth plan thick slices {thick:?} are invalid; give axis 0, 1 or 2 and group >= 1"
            )));
        }
    }
    if let Some(control) = &plan.bias_control {
        if control.shape().iter().any(|&n| n < 2) {
            return Err(Error::invalid(format!(
                "synth plan bias field has {:?} control points; give at least 2 per axis",
                control.shape()
            )));
        }
    }
    Ok(())
}

/// Draws every voxel's intensity from its class distribution. Returns the image in
/// standard layout and, unless the background is rendered, the anatomy mask.
fn class_intensities(anatomy: &Anatomy, plan: &SynthPlan) -> (Vec<f32>, Option<Vec<bool>>) {
    let [ni, nj, nk] = anatomy.shape();
    let plane = nj * nk;
    let mut image = vec![0.0f32; ni * plane];
    let mut mask = vec![true; ni * plane];

    image
        .par_chunks_mut(plane)
        .zip(mask.par_chunks_mut(plane))
        .enumerate()
        .for_each(|(i, (values, inside))| {
            let mut rng = plane_rng(plan.texture_seed, i);
            match anatomy {
                Anatomy::Labels(labels) => {
                    label_plane(labels.index_axis(Axis(0), i).iter(), plan, values, inside, &mut rng)
                }
                Anatomy::Tissue(maps) => tissue_plane(maps, i, plan, values, inside, &mut rng),
            }
        });

    let mask = (!plan.render_background).then_some(mask);
    (image, mask)
}

/// Returns the random stream of i-plane `i` under `seed`.
fn plane_rng(seed: u64, i: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(i as u64);
    rng
}

/// Fills one i-plane from a label map.
fn label_plane<'a>(
    labels: impl Iterator<Item = &'a u16>,
    plan: &SynthPlan,
    values: &mut [f32],
    inside: &mut [bool],
    rng: &mut ChaCha8Rng,
) {
    for ((value, is_inside), &label) in values.iter_mut().zip(inside.iter_mut()).zip(labels) {
        let class = label as usize;
        *is_inside = class != 0;
        if class == 0 && !plan.render_background {
            continue;
        }
        *value = sample_class(plan.means[class], plan.stds[class], rng);
    }
}

/// Fills one i-plane from tissue maps: mean and deviation are the probability-weighted
/// mix of the tissues'. Where the probabilities sum above 1 they are divided by the sum,
/// and where they sum below 1 the rest is background (mean 0 unless rendered).
fn tissue_plane(
    maps: &[Array3<f32>],
    i: usize,
    plan: &SynthPlan,
    values: &mut [f32],
    inside: &mut [bool],
    rng: &mut ChaCha8Rng,
) {
    let planes: Vec<_> = maps.iter().map(|map| map.index_axis(Axis(0), i)).collect();
    let mut iters: Vec<_> = planes.iter().map(|p| p.iter()).collect();

    for (value, is_inside) in values.iter_mut().zip(inside.iter_mut()) {
        let (mut total, mut mean, mut std) = (0.0f32, 0.0f32, 0.0f32);
        for (t, it) in iters.iter_mut().enumerate() {
            let p = it.next().copied().unwrap_or(0.0);
            let p = if p.is_finite() { p.clamp(0.0, 1.0) } else { 0.0 };
            total += p;
            mean += p * plan.means[t + 1];
            std += p * plan.stds[t + 1];
        }

        *is_inside = total >= plan.tissue_threshold;
        if !*is_inside && !plan.render_background {
            continue;
        }
        if total > 1.0 {
            mean /= total;
            std /= total;
        } else if plan.render_background {
            mean += (1.0 - total) * plan.means[0];
            std += (1.0 - total) * plan.stds[0];
        }
        *value = sample_class(mean, std, rng);
    }
}

/// Draws a value from N(mean, std²) clipped at 0; a zero deviation draws nothing.
///
/// NOTE: clipping (here and in Gaussian noise) can leave 0 inside the anatomy, which a
/// non-zero z-score then counts as background; dark classes with wide noise do this most.
fn sample_class(mean: f32, std: f32, rng: &mut ChaCha8Rng) -> f32 {
    if std > 0.0 {
        let z: f32 = rng.sample(StandardNormal);
        (mean + std * z).max(0.0)
    } else {
        mean
    }
}

/// Multiplies the image by the trilinear interpolation of the control-point factors.
/// Control point `c` of an axis with `n` voxels sits at voxel `c · (n − 1) / (points − 1)`.
fn apply_bias(image: &mut [f32], shape: [usize; 3], control: &Array3<f32>) {
    let [ni, nj, nk] = shape;
    let points = control.dim();
    let along_i = interpolation_weights(ni, points.0);
    let along_j = interpolation_weights(nj, points.1);
    let along_k = interpolation_weights(nk, points.2);

    image.par_chunks_mut(nj * nk).enumerate().for_each(|(i, values)| {
        let (ci, wi) = along_i[i];
        let slab = (1.0 - wi) * &control.index_axis(Axis(0), ci) + wi * &control.index_axis(Axis(0), ci + 1);
        for (j, row) in values.chunks_mut(nk).enumerate() {
            let (cj, wj) = along_j[j];
            let line: Vec<f32> = (0..points.2)
                .map(|c| (1.0 - wj) * slab[[cj, c]] + wj * slab[[cj + 1, c]])
                .collect();
            for (value, &(ck, wk)) in row.iter_mut().zip(&along_k) {
                *value *= (1.0 - wk) * line[ck] + wk * line[ck + 1];
            }
        }
    });
}

/// For each of `n` voxels, the lower control point and the weight of the upper one.
fn interpolation_weights(n: usize, points: usize) -> Vec<(usize, f32)> {
    let last = points - 1;
    let step = if n > 1 { last as f64 / (n - 1) as f64 } else { 0.0 };
    (0..n)
        .map(|x| {
            let position = x as f64 * step;
            let lower = (position.floor() as usize).min(last - 1);
            (lower, (position - lower as f64) as f32)
        })
        .collect()
}

/// Normalised Gaussian weights at offsets `−r..=r` with r = ⌈3σ⌉.
fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil() as i64;
    let weights: Vec<f32> = (-radius..=radius)
        .map(|t| (-(t * t) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = weights.iter().sum();
    weights.into_iter().map(|w| w / total).collect()
}

/// Convolves the image with `kernel` along one voxel axis, repeating the edge voxels past
/// the grid. Every pass runs over i-planes in parallel.
fn blur_axis(image: &[f32], shape: [usize; 3], axis: usize, kernel: &[f32]) -> Vec<f32> {
    let [ni, nj, nk] = shape;
    let plane = nj * nk;
    let radius = (kernel.len() / 2) as i64;
    let clamp = |x: i64, n: usize| x.clamp(0, n as i64 - 1) as usize;
    let mut out = vec![0.0f32; image.len()];

    out.par_chunks_mut(plane).enumerate().for_each(|(i, dst)| {
        let src_plane = |i: usize| &image[i * plane..(i + 1) * plane];
        match axis {
            0 => {
                for (t, &w) in kernel.iter().enumerate() {
                    let src = src_plane(clamp(i as i64 + t as i64 - radius, ni));
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d += w * s);
                }
            }
            1 => {
                let src = src_plane(i);
                for (j, dst_row) in dst.chunks_mut(nk).enumerate() {
                    for (t, &w) in kernel.iter().enumerate() {
                        let row = clamp(j as i64 + t as i64 - radius, nj);
                        let src_row = &src[row * nk..(row + 1) * nk];
                        dst_row.iter_mut().zip(src_row).for_each(|(d, s)| *d += w * s);
                    }
                }
            }
            _ => {
                let src = src_plane(i);
                let mut padded = vec![0.0f32; nk + 2 * radius as usize];
                for (dst_row, src_row) in dst.chunks_mut(nk).zip(src.chunks(nk)) {
                    for (p, value) in padded.iter_mut().enumerate() {
                        *value = src_row[clamp(p as i64 - radius, nk)];
                    }
                    for (k, d) in dst_row.iter_mut().enumerate() {
                        *d = kernel.iter().zip(&padded[k..]).map(|(w, s)| w * s).sum();
                    }
                }
            }
        }
    });
    out
}

/// Replaces each group of slices along the plan's axis by the group's mean.
fn average_slice_groups(image: &mut [f32], shape: [usize; 3], thick: ThickSlices) {
    // A slice along `axis` is `stride` contiguous values inside each block of
    // `shape[axis] · stride` values, so every block is averaged on its own.
    let stride: usize = shape[thick.axis + 1..].iter().product();
    let block = shape[thick.axis] * stride;

    image.par_chunks_mut(block).for_each(|block| {
        for group in block.chunks_mut(thick.group * stride) {
            let count = (group.len() / stride) as f32;
            let mut mean = vec![0.0f32; stride];
            for slice in group.chunks(stride) {
                mean.iter_mut().zip(slice).for_each(|(m, v)| *m += v);
            }
            mean.iter_mut().for_each(|m| *m /= count);
            for slice in group.chunks_mut(stride) {
                slice.copy_from_slice(&mean);
            }
        }
    });
}

/// Divides the image by its maximum, unless the maximum is 0 (an empty anatomy).
fn scale_to_unit_max(image: &mut [f32]) {
    let max = image.par_iter().copied().reduce(|| 0.0, f32::max);
    if max > 0.0 {
        image.par_iter_mut().for_each(|v| *v /= max);
    }
}

/// Adds the plan's noise: Rician `|x + σ(z₁ + i·z₂)|` or Gaussian `max(x + σz, 0)`.
fn add_noise(image: &mut [f32], shape: [usize; 3], plan: &SynthPlan) {
    let plane = shape[1] * shape[2];
    let sigma = plan.noise_std;

    image.par_chunks_mut(plane).enumerate().for_each(|(i, values)| {
        let mut rng = plane_rng(plan.noise_seed, i);
        for value in values.iter_mut() {
            let real = *value + sigma * rng.sample::<f32, _>(StandardNormal);
            *value = if plan.rician {
                let imaginary = sigma * rng.sample::<f32, _>(StandardNormal);
                // Plain sqrt, because values of a few units need no overflow guard (hypot).
                (real * real + imaginary * imaginary).sqrt()
            } else {
                real.max(0.0)
            };
        }
    });
}
