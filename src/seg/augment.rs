//! Random training patches and their assembly into candle batches.
//!
//! A patch is drawn in two steps. [`plan_patch`] makes every random choice with the
//! caller's RNG: where the patch lies (on a random foreground voxel for a fraction of
//! patches), an optional rotation and scaling, flips per axis, and an intensity scale
//! and shift per channel. [`extract_patch`] then builds the patch without randomness,
//! so the plans of a batch can be drawn in order from one RNG and extracted in parallel.
//!
//! Patch voxel `q` samples case voxel `start + pivot + M · (q − pivot)`, where `M` is
//! the rotation and scaling in voxel units (identity when none was drawn). Only the
//! patch's voxels are interpolated (images trilinear, labels nearest neighbour, zero
//! outside the case), so the cost does not grow with the case's size. Flips follow the
//! spatial sampling and the intensity jitter comes last.
//!
//! Batch layout: images `[B, C, i, j, k]` f32 and labels `[B, i, j, k]` u32 class
//! indices, with i, j, k the RAS+ voxel axes of the case (the crate's tensor
//! convention, see [`crate::preprocess`]).

use candle_core::{Device, Tensor};
use ndarray::{Array3, Array4, Axis};
use rand::Rng;
use rayon::prelude::*;

use super::dataset::Case;
use crate::error::{Error, Result};
use crate::geometry::Affine;
use crate::preprocess::{resample_to_grid, CropPad, Interp};
use crate::volume::Volume;

/// Settings of the random patch sampling.
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentOptions {
    /// Patch shape in voxels `[i, j, k]`.
    pub patch_size: [usize; 3],
    /// Probability that a patch is centred on a voxel of a random foreground class present
    /// in the case. The default 1/3 is nnU-Net's foreground oversampling fraction.
    pub foreground_fraction: f64,
    /// Probability of mirroring the patch, drawn for each axis separately.
    pub flip_probability: f64,
    /// Each channel is multiplied by a factor drawn from `[1 − s, 1 + s]`.
    pub intensity_scale: f64,
    /// Each channel is shifted by an offset drawn from `[−s, s]`, in units of the
    /// z-scored intensity.
    pub intensity_shift: f64,
    /// Probability of rotating and scaling a patch.
    pub affine_probability: f64,
    /// Largest rotation about each world axis, in degrees (drawn from `[−r, r]`).
    pub max_rotation_degrees: f64,
    /// Range of the isotropic scale factor; a factor above 1 samples a larger region, so
    /// structures appear smaller.
    pub scale_range: [f64; 2],
}

impl AugmentOptions {
    /// Default augmentation for `patch_size`: forced foreground 1/3, flips 0.5 per axis,
    /// intensity scale and shift ±0.1, rotation up to ±15° and scaling 0.9–1.1 on one
    /// patch in five.
    pub fn new(patch_size: [usize; 3]) -> Self {
        AugmentOptions {
            patch_size,
            foreground_fraction: 1.0 / 3.0,
            flip_probability: 0.5,
            intensity_scale: 0.1,
            intensity_shift: 0.1,
            affine_probability: 0.2,
            max_rotation_degrees: 15.0,
            scale_range: [0.9, 1.1],
        }
    }

    /// Random crops only, with the default foreground fraction and no other augmentation
    /// (for validation patches or debugging).
    pub fn crop_only(patch_size: [usize; 3]) -> Self {
        AugmentOptions {
            flip_probability: 0.0,
            intensity_scale: 0.0,
            intensity_shift: 0.0,
            affine_probability: 0.0,
            ..AugmentOptions::new(patch_size)
        }
    }

    /// Fails on an empty patch, a probability outside `[0, 1]`, a negative jitter or
    /// rotation, or a scale range that is not positive and ordered.
    pub fn validate(&self) -> Result<()> {
        if self.patch_size.contains(&0) {
            return Err(Error::invalid(format!(
                "patch size {:?} is invalid; give three positive sizes",
                self.patch_size
            )));
        }
        let probabilities = [
            ("foreground fraction", self.foreground_fraction),
            ("flip probability", self.flip_probability),
            ("affine probability", self.affine_probability),
        ];
        for (name, p) in probabilities {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::invalid(format!(
                    "{name} {p} is invalid; give a value in [0, 1]"
                )));
            }
        }
        let magnitudes = [
            ("intensity scale", self.intensity_scale),
            ("intensity shift", self.intensity_shift),
            ("maximum rotation", self.max_rotation_degrees),
        ];
        for (name, value) in magnitudes {
            if !(value.is_finite() && value >= 0.0) {
                return Err(Error::invalid(format!(
                    "{name} {value} is invalid; give a finite value >= 0"
                )));
            }
        }
        let [low, high] = self.scale_range;
        if !(low > 0.0 && low <= high && high.is_finite()) {
            return Err(Error::invalid(format!(
                "scale range {low}..{high} is invalid; give 0 < low <= high"
            )));
        }
        Ok(())
    }
}

/// The random choices for one patch (see the module documentation for the mapping).
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPlan {
    pub size: [usize; 3],
    /// Case voxel that patch voxel 0 samples when there is no rotation; negative or past
    /// the case where the patch is padded.
    pub start: [i64; 3],
    /// Patch position (voxel units) that the rotation and scaling keep fixed: the forced
    /// foreground voxel, or the patch centre.
    pub pivot: [f64; 3],
    /// Rotation and scaling in voxel units, patch offset to case offset; `None` for a
    /// plain crop.
    pub matrix: Option<[[f64; 3]; 3]>,
    /// Mirror the patch along axis i, j, k.
    pub flips: [bool; 3],
    /// Per channel: `(scale, shift)`, applied as `value · scale + shift`.
    pub intensity: Vec<(f32, f32)>,
}

/// One training patch: `image[[c, i, j, k]]` and `label[[i, j, k]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    pub image: Array4<f32>,
    pub label: Array3<u32>,
}

/// A training batch: images `[B, C, i, j, k]` f32 and labels `[B, i, j, k]` u32.
#[derive(Debug, Clone)]
pub struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
}

/// Draws the random choices for one patch of `case`.
///
/// With `force_foreground`, the patch contains a voxel of a foreground class drawn
/// uniformly from the classes present, at a voxel drawn uniformly from that class,
/// even after rotation (it is the pivot). A case without foreground falls back to a
/// random position.
pub fn plan_patch(
    case: &Case,
    options: &AugmentOptions,
    force_foreground: bool,
    rng: &mut impl Rng,
) -> Result<PatchPlan> {
    options.validate()?;
    let size = options.patch_size;
    let shape = case.shape();

    let (start, pivot) = match force_foreground
        .then(|| foreground_voxel(case, rng))
        .flatten()
    {
        Some(voxel) => {
            let start = [0, 1, 2].map(|d| start_around(voxel[d], shape[d], size[d]));
            let pivot = [0, 1, 2].map(|d| (voxel[d] as i64 - start[d]) as f64);
            (start, pivot)
        }
        None => {
            let start = [0, 1, 2].map(|d| random_start(shape[d], size[d], rng));
            let pivot = size.map(|n| (n as f64 - 1.0) / 2.0);
            (start, pivot)
        }
    };

    let matrix = (options.affine_probability > 0.0 && rng.random_bool(options.affine_probability))
        .then(|| random_matrix(options, case.affine().spacing(), rng));
    let flips = [0, 1, 2]
        .map(|_| options.flip_probability > 0.0 && rng.random_bool(options.flip_probability));
    let intensity = (0..case.channels.len())
        .map(|_| {
            let scale = 1.0 + symmetric(options.intensity_scale, rng);
            let shift = symmetric(options.intensity_shift, rng);
            (scale as f32, shift as f32)
        })
        .collect();

    Ok(PatchPlan {
        size,
        start,
        pivot,
        matrix,
        flips,
        intensity,
    })
}

/// Draws a value uniformly from `[−magnitude, magnitude]`. A zero magnitude returns 0
/// without drawing, so disabled augmentations leave the RNG stream unchanged.
fn symmetric(magnitude: f64, rng: &mut impl Rng) -> f64 {
    if magnitude > 0.0 {
        rng.random_range(-magnitude..=magnitude)
    } else {
        0.0
    }
}

/// Picks a voxel `[i, j, k]` of a random present foreground class, or `None` without foreground.
fn foreground_voxel(case: &Case, rng: &mut impl Rng) -> Option<[usize; 3]> {
    let classes = case.present_classes();
    if classes.is_empty() {
        return None;
    }
    let class = classes[rng.random_range(0..classes.len())];
    let voxels = case.class_voxels(class);
    let flat = voxels[rng.random_range(0..voxels.len())] as usize;
    let [_, nj, nk] = case.shape();
    Some([flat / (nj * nk), (flat / nk) % nj, flat % nk])
}

/// Computes the start of a patch of `size` around `voxel` on an axis of `n` voxels. The
/// patch is centred on the voxel and moved inside the case, which keeps the voxel inside.
/// On an axis shorter than the patch it is centred on the case instead (padding).
fn start_around(voxel: usize, n: usize, size: usize) -> i64 {
    if n >= size {
        (voxel as i64 - size as i64 / 2).clamp(0, (n - size) as i64)
    } else {
        padded_start(n, size)
    }
}

/// Draws the start of a patch uniformly among the positions inside an axis of `n` voxels,
/// or centred with padding when the axis is shorter than the patch.
fn random_start(n: usize, size: usize, rng: &mut impl Rng) -> i64 {
    if n >= size {
        rng.random_range(0..=(n - size)) as i64
    } else {
        padded_start(n, size)
    }
}

/// Puts `floor((size − n) / 2)` padding voxels before the case.
fn padded_start(n: usize, size: usize) -> i64 {
    -(((size - n) / 2) as i64)
}

/// Draws a rotation about each world axis and an isotropic scale, as a voxel-unit matrix.
fn random_matrix(options: &AugmentOptions, spacing: [f64; 3], rng: &mut impl Rng) -> [[f64; 3]; 3] {
    let angles = [0, 1, 2].map(|_| symmetric(options.max_rotation_degrees, rng));
    let [low, high] = options.scale_range;
    let scale = if high > low {
        rng.random_range(low..=high)
    } else {
        low
    };
    spatial_matrix(angles, scale, spacing)
}

/// Builds the voxel-unit matrix `S⁻¹ · s · Rz · Ry · Rx · S` for rotations (degrees)
/// about the x, y, z world axes, isotropic scale `s` and voxel spacing `S` (mm), so the
/// rotation is rigid in millimetres also on anisotropic grids.
///
/// NOTE: the voxel axes are taken as the world axes, which holds up to the residual
/// obliquity of a grid reoriented to RAS+.
pub fn spatial_matrix(angles_degrees: [f64; 3], scale: f64, spacing: [f64; 3]) -> [[f64; 3]; 3] {
    let [x, y, z] = angles_degrees.map(f64::to_radians);
    let rx = [
        [1.0, 0.0, 0.0],
        [0.0, x.cos(), -x.sin()],
        [0.0, x.sin(), x.cos()],
    ];
    let ry = [
        [y.cos(), 0.0, y.sin()],
        [0.0, 1.0, 0.0],
        [-y.sin(), 0.0, y.cos()],
    ];
    let rz = [
        [z.cos(), -z.sin(), 0.0],
        [z.sin(), z.cos(), 0.0],
        [0.0, 0.0, 1.0],
    ];
    let rotation = multiply(&rz, &multiply(&ry, &rx));

    let mut out = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            out[r][c] = rotation[r][c] * scale * spacing[c] / spacing[r];
        }
    }
    out
}

fn multiply(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut out = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            out[r][c] = (0..3).map(|m| a[r][m] * b[m][c]).sum();
        }
    }
    out
}

/// Builds the patch that `plan` describes. Fails when the plan's channel count differs
/// from the case's.
pub fn extract_patch(case: &Case, plan: &PatchPlan) -> Result<Patch> {
    if plan.intensity.len() != case.channels.len() {
        return Err(Error::invalid(format!(
            "patch plan has {} channels, case {} has {}",
            plan.intensity.len(),
            case.id,
            case.channels.len()
        )));
    }

    let mut image = Array4::zeros([
        case.channels.len(),
        plan.size[0],
        plan.size[1],
        plan.size[2],
    ]);
    for (c, channel) in case.channels.iter().enumerate() {
        let sampled = sample_grid(channel, plan, Interp::Linear)?;
        let (scale, shift) = plan.intensity[c];
        let flipped = flip_axes(&sampled, plan.flips);
        image
            .index_axis_mut(Axis(0), c)
            .zip_mut_with(&flipped, |out, v| *out = v * scale + shift);
    }

    let label = sample_grid(&case.label, plan, Interp::Nearest)?;
    // Labels were checked to be integers in 0..n_classes, and padding adds only 0.
    let label = flip_axes(&label, plan.flips).mapv(|v| v as u32);
    Ok(Patch { image, label })
}

/// Samples `volume` on the patch grid: a copy with zero padding for a plain crop, else
/// interpolation with zeros outside the volume.
fn sample_grid(volume: &Volume, plan: &PatchPlan, interp: Interp) -> Result<Array3<f32>> {
    match plan.matrix {
        None => {
            let window = CropPad {
                original_shape: volume.shape(),
                original_affine: volume.affine,
                offset: plan.start,
                shape: plan.size,
            };
            window.apply_array(&volume.data, 0.0)
        }
        Some(matrix) => {
            let patch_to_world = volume.affine.compose(&patch_to_case(plan, &matrix));
            Ok(resample_to_grid(volume, &patch_to_world, plan.size, interp, 0.0)?.data)
        }
    }
}

/// Maps a patch index to a case index: `start + pivot + M · (q − pivot)`.
fn patch_to_case(plan: &PatchPlan, matrix: &[[f64; 3]; 3]) -> Affine {
    let mut affine = Affine::identity();
    for (r, row) in matrix.iter().enumerate() {
        let rotated_pivot: f64 = (0..3).map(|c| row[c] * plan.pivot[c]).sum();
        affine.0[r][..3].copy_from_slice(row);
        affine.0[r][3] = plan.start[r] as f64 + plan.pivot[r] - rotated_pivot;
    }
    affine
}

/// Mirrors an array along the axes marked `true`; applying it twice returns the input.
pub fn flip_axes<T: Clone>(array: &Array3<T>, axes: [bool; 3]) -> Array3<T> {
    let mut view = array.view();
    for (d, flip) in axes.iter().enumerate() {
        if *flip {
            view.invert_axis(Axis(d));
        }
    }
    view.as_standard_layout().into_owned()
}

/// Draws and builds one patch.
pub fn sample_patch(
    case: &Case,
    options: &AugmentOptions,
    force_foreground: bool,
    rng: &mut impl Rng,
) -> Result<Patch> {
    let plan = plan_patch(case, options, force_foreground, rng)?;
    extract_patch(case, &plan)
}

/// Draws a batch of `batch_size` patches from cases picked uniformly at random.
///
/// Each patch is forced onto foreground with probability `options.foreground_fraction`.
/// Plans are drawn in order from `rng` and extracted in parallel, so the batch depends
/// only on the RNG state. Fails on an empty case list, cases with different channel
/// counts, or invalid options.
pub fn sample_batch(
    cases: &[Case],
    batch_size: usize,
    options: &AugmentOptions,
    rng: &mut impl Rng,
    device: &Device,
) -> Result<Batch> {
    options.validate()?;
    if cases.is_empty() || batch_size == 0 {
        return Err(Error::invalid(format!(
            "cannot sample a batch of {batch_size} patches from {} cases; give at least one of each",
            cases.len()
        )));
    }

    let mut plans = Vec::with_capacity(batch_size);
    for _ in 0..batch_size {
        let case = &cases[rng.random_range(0..cases.len())];
        let force = rng.random_bool(options.foreground_fraction);
        plans.push((case, plan_patch(case, options, force, rng)?));
    }

    let patches = plans
        .par_iter()
        .map(|(case, plan)| extract_patch(case, plan))
        .collect::<Result<Vec<_>>>()?;
    patches_to_batch(&patches, device)
}

/// Stacks patches of one shape and channel count into a [`Batch`] on `device`.
pub fn patches_to_batch(patches: &[Patch], device: &Device) -> Result<Batch> {
    let Some(first) = patches.first() else {
        return Err(Error::invalid("cannot build a batch from no patches"));
    };
    let image_shape = first.image.shape().to_vec();
    if let Some(other) = patches
        .iter()
        .find(|p| p.image.shape() != image_shape.as_slice())
    {
        return Err(Error::invalid(format!(
            "patches differ in shape: {:?} and {:?}",
            image_shape,
            other.image.shape()
        )));
    }
    if let Some(other) = patches
        .iter()
        .find(|p| p.label.shape() != &image_shape[1..])
    {
        return Err(Error::invalid(format!(
            "patch label shape {:?} is not the image's spatial shape {:?}",
            other.label.shape(),
            &image_shape[1..]
        )));
    }

    let mut images = Vec::with_capacity(patches.len() * first.image.len());
    let mut labels = Vec::with_capacity(patches.len() * first.label.len());
    for patch in patches {
        images.extend(patch.image.iter().copied());
        labels.extend(patch.label.iter().copied());
    }

    let [c, i, j, k] = [
        image_shape[0],
        image_shape[1],
        image_shape[2],
        image_shape[3],
    ];
    let b = patches.len();
    Ok(Batch {
        images: Tensor::from_vec(images, (b, c, i, j, k), device)?,
        labels: Tensor::from_vec(labels, (b, i, j, k), device)?,
    })
}
