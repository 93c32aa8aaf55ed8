//! Resampling a volume onto another voxel grid.
//!
//! [`resample_to_grid`] is the general operation: every output voxel centre is
//! mapped through the output affine to world coordinates and through the inverse
//! input affine to a (fractional) input index, where the input is interpolated.
//! [`resample_to_spacing`] builds the output grid the way MONAI 1.4.0's
//! `Spacing(pixdim, diagonal=False, scale_extent=False)` does and samples it with
//! MONAI's default `padding_mode="border"`, so its output matches what PRISM's MONAI
//! pipelines feed the network.
//!
//! Interpolation follows `torch.nn.functional.grid_sample` with voxel centres at
//! integer indices: trilinear weights per axis, and nearest neighbour rounding half
//! to even (`nearbyint`). Arithmetic is in f64; values are stored as f32.
//!
//! NOTE: two known differences from MONAI 1.4.0 remain. A nearest-neighbour sample
//! exactly halfway between two voxel centres (as in 2 mm → 1 mm) rounds half to even
//! here, while MONAI's choice depends on rounding in its normalized grid coordinates
//! and varies along the axis. Where the exact trilinear value is 0 this returns 0,
//! while MONAI can leave residues near 1e-13 that a non-zero mask then counts.

use ndarray::Array3;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::geometry::Affine;
use crate::volume::Volume;

/// Interpolation between voxel centres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interp {
    /// Trilinear, for intensity images.
    Linear,
    /// Nearest neighbour, for label maps (keeps the label set).
    Nearest,
}

/// Value source for samples that need input voxels outside the array.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outside {
    /// Missing neighbours count as this value (grid_sample's `zeros` for 0).
    Fill(f32),
    /// The sample position is clamped to the array (grid_sample's `border`).
    Border,
}

/// Absolute tolerance (MONAI 1.4.0's `AFFINE_TOL`) within which MONAI treats two
/// affines as equal and skips resampling when the shape is also unchanged.
const MONAI_AFFINE_TOL: f64 = 1e-3;

/// numpy's `allclose(a, b, atol=MONAI_AFFINE_TOL)` with its default `rtol = 1e-5`.
fn monai_allclose(a: &Affine, b: &Affine) -> bool {
    (0..4).all(|r| {
        (0..4).all(|c| (a.0[r][c] - b.0[r][c]).abs() <= MONAI_AFFINE_TOL + 1e-5 * b.0[r][c].abs())
    })
}

/// Resamples `volume` onto the grid `target_affine` / `target_shape`.
///
/// Output voxels whose sample position lies outside the input take `fill`. With
/// [`Interp::Linear`], a position less than one voxel outside blends the edge voxels
/// with `fill`, as grid_sample's zero padding does for `fill = 0`. Fails when either
/// affine is singular.
pub fn resample_to_grid(
    volume: &Volume,
    target_affine: &Affine,
    target_shape: [usize; 3],
    interp: Interp,
    fill: f32,
) -> Result<Volume> {
    let data = resample_data(
        volume,
        target_affine,
        target_shape,
        interp,
        Outside::Fill(fill),
    )?;
    Ok(Volume::new(data, *target_affine))
}

/// Resamples `volume` onto the grid `target_affine` / `target_shape`, clamping sample
/// positions to the input array (grid_sample's `border` padding), so output voxels
/// outside the input take the nearest edge value. Fails when either affine is singular.
pub fn resample_to_grid_border(
    volume: &Volume,
    target_affine: &Affine,
    target_shape: [usize; 3],
    interp: Interp,
) -> Result<Volume> {
    let data = resample_data(volume, target_affine, target_shape, interp, Outside::Border)?;
    Ok(Volume::new(data, *target_affine))
}

/// Resamples `volume` to voxels of `spacing` mm along its own (orthogonalised) axes,
/// as MONAI 1.4.0's `Spacing(pixdim=spacing)` with its defaults does.
///
/// Grid convention (MONAI's `zoom_affine(diagonal=False)` and `compute_shape_offset`
/// with `scale_extent=False`):
/// - the output linear part is `R · diag(spacing)`, where `R` is the rotation (or
///   rotation with reflection) of the input's linear part `R · U` with `U` upper
///   triangular, so axis directions and flips are kept and any shear is dropped;
/// - the output shape spans the input's voxel-centre corners: along each axis of an
///   affine without shear it is `round((n - 1) · old / new + 1)`, rounding half to
///   even;
/// - voxel 0's centre stays on the input's voxel 0 centre. Only when a shear makes
///   another input corner the lowest one are the grids aligned by centre instead.
///
/// Samples past the last input voxel centre (up to half an output voxel, from the
/// rounding) take the nearest edge value (MONAI's default `padding_mode="border"`).
/// As in MONAI, the input is returned unchanged, affine included, when the shape
/// is unchanged and either the target affine is within 1e-3 of the input affine or
/// the voxel map is within 1e-3 of the identity (numpy `allclose`, `rtol` 1e-5).
pub fn resample_to_spacing(volume: &Volume, spacing: [f64; 3], interp: Interp) -> Result<Volume> {
    let (target_affine, target_shape) = spacing_grid(&volume.affine, volume.shape(), spacing)?;
    let voxels = target_shape.iter().map(|&n| n as u64).product::<u64>();
    if voxels > crate::io::MAX_VOXELS {
        return Err(Error::invalid(format!(
            "resampling to {spacing:?} mm gives {}x{}x{} voxels, above the limit of {} voxels; \
             choose a larger spacing",
            target_shape[0],
            target_shape[1],
            target_shape[2],
            crate::io::MAX_VOXELS
        )));
    }

    let to_input = volume.affine.inverse()?.compose(&target_affine);
    let unchanged = monai_allclose(&volume.affine, &target_affine)
        || monai_allclose(&to_input, &Affine::identity());
    if target_shape == volume.shape() && unchanged {
        return Ok(volume.clone());
    }

    let data = resample_data(
        volume,
        &target_affine,
        target_shape,
        interp,
        Outside::Border,
    )?;
    Ok(Volume::new(data, target_affine))
}

/// Computes the output grid of [`resample_to_spacing`]: affine and shape. Fails on a
/// non-positive or non-finite spacing, an empty shape or a singular affine.
pub fn spacing_grid(
    affine: &Affine,
    shape: [usize; 3],
    spacing: [f64; 3],
) -> Result<(Affine, [usize; 3])> {
    if shape.contains(&0) {
        return Err(Error::invalid(format!(
            "cannot resample an empty volume of shape {shape:?}"
        )));
    }
    if spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(Error::invalid(format!(
            "target spacing {spacing:?} mm is invalid; give three positive voxel sizes"
        )));
    }
    affine.inverse()?;

    let rotation = rotation_part(&affine.linear())?;
    let mut target = Affine::identity();
    for (target_row, rotation_row) in target.0.iter_mut().zip(&rotation) {
        for c in 0..3 {
            target_row[c] = rotation_row[c] * spacing[c];
        }
    }

    let (target_shape, origin) = shape_and_origin(affine, &target, shape)?;
    for (r, value) in origin.iter().enumerate() {
        target.0[r][3] = *value;
    }
    Ok((target, target_shape))
}

/// Computes the orthogonal factor `Q` of `linear = Q · U` (U upper triangular with a
/// positive diagonal) as MONAI does, taking `U` as the Cholesky factor of `linearᵀ·linear`.
fn rotation_part(linear: &[[f64; 3]; 3]) -> Result<[[f64; 3]; 3]> {
    let mut gram = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            gram[r][c] = (0..3).map(|m| linear[m][r] * linear[m][c]).sum();
        }
    }

    // Cholesky gram = Uᵀ·U, row by row of U.
    let mut upper = [[0.0; 3]; 3];
    for r in 0..3 {
        let diagonal = gram[r][r] - (0..r).map(|m| upper[m][r] * upper[m][r]).sum::<f64>();
        if diagonal.is_nan() || diagonal <= 0.0 {
            return Err(Error::invalid(
                "affine's linear part is singular; cannot resample",
            ));
        }
        upper[r][r] = diagonal.sqrt();
        for c in r + 1..3 {
            let dot: f64 = (0..r).map(|m| upper[m][r] * upper[m][c]).sum();
            upper[r][c] = (gram[r][c] - dot) / upper[r][r];
        }
    }

    // Q = linear · U⁻¹, by back substitution along each row of linear.
    let mut rotation = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            let partial: f64 = (0..c).map(|m| rotation[r][m] * upper[m][c]).sum();
            rotation[r][c] = (linear[r][c] - partial) / upper[c][c];
        }
    }
    Ok(rotation)
}

/// Computes MONAI's `compute_shape_offset(scale_extent=False)`: the output shape that
/// spans the input's voxel-centre corners, and the world position of output voxel 0.
fn shape_and_origin(
    input: &Affine,
    target: &Affine,
    shape: [usize; 3],
) -> Result<([usize; 3], [f64; 3])> {
    let to_target = target.inverse()?.compose(input);

    // The eight corner voxel centres, in meshgrid "ij" order (k varies fastest).
    let mut corners = Vec::with_capacity(8);
    for a in 0..2 {
        for b in 0..2 {
            for c in 0..2 {
                let pick = |bit: usize, n: usize| if bit == 1 { n as f64 - 1.0 } else { 0.0 };
                corners.push([pick(a, shape[0]), pick(b, shape[1]), pick(c, shape[2])]);
            }
        }
    }
    let in_target: Vec<[f64; 3]> = corners.iter().map(|p| to_target.apply(*p)).collect();

    let mut target_shape = [0usize; 3];
    for d in 0..3 {
        let lo = in_target.iter().map(|p| p[d]).fold(f64::INFINITY, f64::min);
        let hi = in_target
            .iter()
            .map(|p| p[d])
            .fold(f64::NEG_INFINITY, f64::max);
        target_shape[d] = (hi - lo + 1.0).round_ties_even().max(0.0) as usize;
    }

    // The first corner that is lowest along every output axis becomes voxel 0; the
    // 1e-8 tolerance is numpy's default `atol` in MONAI's `np.allclose` check.
    let lowest = in_target.iter().position(|candidate| {
        in_target
            .iter()
            .all(|p| (0..3).all(|d| p[d] - candidate[d] >= -1e-8))
    });
    let origin = match lowest {
        Some(index) => input.apply(corners[index]),
        None => centre_aligned_origin(input, target, shape, target_shape),
    };
    Ok((target_shape, origin))
}

/// Computes MONAI's fallback origin `A_in · shape/2 − L_out · out_shape/2` (half
/// shapes, not half spans, as MONAI 1.4.0 writes it).
fn centre_aligned_origin(
    input: &Affine,
    target: &Affine,
    shape: [usize; 3],
    target_shape: [usize; 3],
) -> [f64; 3] {
    let half_in = shape.map(|n| n as f64 / 2.0);
    let half_out = target_shape.map(|n| n as f64 / 2.0);
    let centre = input.apply(half_in);
    let linear = target.linear();
    let mut origin = [0.0; 3];
    for r in 0..3 {
        origin[r] = centre[r] - (0..3).map(|c| linear[r][c] * half_out[c]).sum::<f64>();
    }
    origin
}

/// Samples `volume` at every voxel centre of the target grid.
fn resample_data(
    volume: &Volume,
    target_affine: &Affine,
    target_shape: [usize; 3],
    interp: Interp,
    outside: Outside,
) -> Result<Array3<f32>> {
    let to_input = volume.affine.inverse()?.compose(target_affine);
    // A singular target affine describes no usable grid.
    target_affine.inverse()?;

    let input = volume.data.as_standard_layout();
    let values = input
        .as_slice()
        .ok_or_else(|| Error::invalid("resampling needs a contiguous input array"))?;
    let sampler = Sampler {
        values,
        shape: volume.shape(),
        outside,
    };

    let [ni, nj, nk] = target_shape;
    let mut out = vec![0f32; ni * nj * nk];
    let slab = nj * nk;
    if slab > 0 {
        let m = to_input.0;
        out.par_chunks_mut(slab)
            .enumerate()
            .for_each(|(i, slab_values)| {
                for j in 0..nj {
                    let start = to_input.apply([i as f64, j as f64, 0.0]);
                    let row = &mut slab_values[j * nk..(j + 1) * nk];
                    for (k, value) in row.iter_mut().enumerate() {
                        let kf = k as f64;
                        let p = [
                            start[0] + m[0][2] * kf,
                            start[1] + m[1][2] * kf,
                            start[2] + m[2][2] * kf,
                        ];
                        *value = match interp {
                            Interp::Linear => sampler.linear(p),
                            Interp::Nearest => sampler.nearest(p),
                        };
                    }
                }
            });
    }

    Array3::from_shape_vec(target_shape, out)
        .map_err(|e| Error::invalid(format!("resampled array has an inconsistent shape: {e}")))
}

/// Reads interpolated values from a C-order array.
struct Sampler<'a> {
    values: &'a [f32],
    shape: [usize; 3],
    outside: Outside,
}

impl Sampler<'_> {
    fn fill(&self) -> f32 {
        match self.outside {
            Outside::Fill(value) => value,
            Outside::Border => 0.0,
        }
    }

    /// Clamps a position into the array under border padding. Returns `None` for an
    /// empty array, where every sample takes the fill value.
    fn clamp(&self, p: [f64; 3]) -> Option<[f64; 3]> {
        if self.shape.contains(&0) {
            return None;
        }
        Some(match self.outside {
            Outside::Border => [0, 1, 2].map(|d| p[d].clamp(0.0, self.shape[d] as f64 - 1.0)),
            Outside::Fill(_) => p,
        })
    }

    fn at(&self, i: usize, j: usize, k: usize) -> f32 {
        self.values[(i * self.shape[1] + j) * self.shape[2] + k]
    }

    fn nearest(&self, p: [f64; 3]) -> f32 {
        let Some(p) = self.clamp(p) else {
            return self.fill();
        };
        let mut index = [0usize; 3];
        for d in 0..3 {
            let rounded = p[d].round_ties_even();
            if !(rounded >= 0.0 && rounded <= self.shape[d] as f64 - 1.0) {
                return self.fill();
            }
            index[d] = rounded as usize;
        }
        self.at(index[0], index[1], index[2])
    }

    fn linear(&self, p: [f64; 3]) -> f32 {
        let Some(p) = self.clamp(p) else {
            return self.fill();
        };

        // Per axis: the two neighbour indices (None when outside) and their weights.
        let mut taps = [[(None, 0.0f64); 2]; 3];
        for d in 0..3 {
            let n = self.shape[d] as f64;
            if !(p[d] > -1.0 && p[d] < n) {
                return self.fill();
            }
            let lower = p[d].floor();
            let t = p[d] - lower;
            let inside = |x: f64| (x >= 0.0 && x < n).then_some(x as usize);
            taps[d] = [(inside(lower), 1.0 - t), (inside(lower + 1.0), t)];
        }

        let fill = self.fill() as f64;
        let mut sum = 0.0f64;
        for (i, wi) in taps[0] {
            for (j, wj) in taps[1] {
                for (k, wk) in taps[2] {
                    let value = match (i, j, k) {
                        (Some(i), Some(j), Some(k)) => self.at(i, j, k) as f64,
                        _ => fill,
                    };
                    sum += wi * wj * wk * value;
                }
            }
        }
        sum as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacing_grid_keeps_voxel_zero_centre() {
        let affine = Affine([
            [-2.0, 0.0, 0.0, 50.0],
            [0.0, 3.0, 0.0, -20.0],
            [0.0, 0.0, 1.5, 7.0],
            [0.0, 0.0, 0.0, 1.0],
        ]);
        let (target, shape) = spacing_grid(&affine, [10, 11, 12], [1.0, 1.0, 1.0]).unwrap();
        // (n - 1) · old / new + 1: 9·2+1, 10·3+1, 11·1.5+1 = 17.5 → 18 (half to even).
        assert_eq!(shape, [19, 31, 18]);
        assert_eq!(target.translation(), [50.0, -20.0, 7.0]);
        assert_eq!(target.0[0][0], -1.0);
        assert_eq!(target.0[1][1], 1.0);
    }

    #[test]
    fn spacing_grid_rejects_zero_spacing() {
        let result = spacing_grid(&Affine::identity(), [4, 4, 4], [1.0, 0.0, 1.0]);
        assert!(result.is_err());
    }

    #[test]
    fn nearest_rounds_half_to_even() {
        let values: Vec<f32> = (0..4).map(|v| v as f32).collect();
        let sampler = Sampler {
            values: &values,
            shape: [4, 1, 1],
            outside: Outside::Fill(-1.0),
        };
        assert_eq!(sampler.nearest([1.5, 0.0, 0.0]), 2.0);
        assert_eq!(sampler.nearest([2.5, 0.0, 0.0]), 2.0);
        assert_eq!(sampler.nearest([3.6, 0.0, 0.0]), -1.0);
    }

    #[test]
    fn linear_blends_fill_past_edge() {
        let values = vec![4.0f32; 2];
        let sampler = Sampler {
            values: &values,
            shape: [2, 1, 1],
            outside: Outside::Fill(0.0),
        };
        assert_eq!(sampler.linear([1.25, 0.0, 0.0]), 3.0);
        assert_eq!(sampler.linear([-1.0, 0.0, 0.0]), 0.0);
        let border = Sampler {
            values: &values,
            shape: [2, 1, 1],
            outside: Outside::Border,
        };
        assert_eq!(border.linear([1.75, 0.0, 0.0]), 4.0);
    }
}
