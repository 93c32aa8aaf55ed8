//! Voxel-to-world geometry.
//!
//! Conventions, stated once for the whole crate:
//!
//! - World coordinates are RAS+ millimetres, as in NIfTI and nibabel: +x points to
//!   the subject's Right, +y Anterior, +z Superior. DICOM's LPS+ is converted on read.
//! - Voxel indices `(i, j, k)` are the NIfTI voxel axes in file order, 0-based, and
//!   index the centre of a voxel. An array's first axis is `i`.
//! - An [`Affine`] maps homogeneous voxel indices `(i, j, k, 1)` to world `(x, y, z, 1)`.
//! - Axis codes name, for each voxel axis, the world direction it increases towards
//!   (`"RAS"` means i→Right, j→Anterior, k→Superior), as nibabel's `aff2axcodes`.

use crate::error::{Error, Result};

/// A 4×4 voxel-to-world transform (row-major; the last row is `0 0 0 1`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine(pub [[f64; 4]; 4]);

impl Affine {
    pub fn identity() -> Self {
        let mut m = [[0.0; 4]; 4];
        for (d, row) in m.iter_mut().enumerate() {
            row[d] = 1.0;
        }
        Affine(m)
    }

    /// Diagonal affine with the given voxel spacing in mm and a zero origin.
    pub fn from_spacing(spacing: [f64; 3]) -> Self {
        let mut a = Affine::identity();
        for (d, s) in spacing.iter().enumerate() {
            a.0[d][d] = *s;
        }
        a
    }

    /// Returns the 3×3 linear part (rotation, zoom, shear).
    pub fn linear(&self) -> [[f64; 3]; 3] {
        let m = &self.0;
        [
            [m[0][0], m[0][1], m[0][2]],
            [m[1][0], m[1][1], m[1][2]],
            [m[2][0], m[2][1], m[2][2]],
        ]
    }

    /// World position of the origin voxel `(0, 0, 0)`.
    pub fn translation(&self) -> [f64; 3] {
        [self.0[0][3], self.0[1][3], self.0[2][3]]
    }

    /// Voxel spacing in mm: the length of each column of the linear part.
    pub fn spacing(&self) -> [f64; 3] {
        let l = self.linear();
        let mut s = [0.0; 3];
        for (c, out) in s.iter_mut().enumerate() {
            *out = (l[0][c].powi(2) + l[1][c].powi(2) + l[2][c].powi(2)).sqrt();
        }
        s
    }

    /// Volume of one voxel in mm³: |det| of the linear part (exact for oblique and sheared grids).
    pub fn voxel_volume(&self) -> f64 {
        let l = self.linear();
        let det = l[0][0] * (l[1][1] * l[2][2] - l[1][2] * l[2][1]) - l[0][1] * (l[1][0] * l[2][2] - l[1][2] * l[2][0])
            + l[0][2] * (l[1][0] * l[2][1] - l[1][1] * l[2][0]);
        det.abs()
    }

    /// Matrix product `self · other`.
    pub fn compose(&self, other: &Affine) -> Affine {
        let mut out = [[0.0; 4]; 4];
        for (r, row) in out.iter_mut().enumerate() {
            for (c, cell) in row.iter_mut().enumerate() {
                *cell = (0..4).map(|k| self.0[r][k] * other.0[k][c]).sum();
            }
        }
        Affine(out)
    }

    /// Map a voxel index (possibly fractional) to world coordinates.
    pub fn apply(&self, p: [f64; 3]) -> [f64; 3] {
        let m = &self.0;
        let mut out = [0.0; 3];
        for (r, o) in out.iter_mut().enumerate() {
            *o = m[r][0] * p[0] + m[r][1] * p[1] + m[r][2] * p[2] + m[r][3];
        }
        out
    }

    /// Inverse of an affine transform; fails when the linear part is singular.
    pub fn inverse(&self) -> Result<Affine> {
        let l = self.linear();
        let det = l[0][0] * (l[1][1] * l[2][2] - l[1][2] * l[2][1])
            - l[0][1] * (l[1][0] * l[2][2] - l[1][2] * l[2][0])
            + l[0][2] * (l[1][0] * l[2][1] - l[1][1] * l[2][0]);
        if det.abs() < 1e-12 || !det.is_finite() {
            return Err(Error::invalid(format!(
                "affine is singular (determinant {det:e}); the file's geometry is unusable"
            )));
        }
        let mut inv = [[0.0; 3]; 3];
        for (r, row) in inv.iter_mut().enumerate() {
            for (c, cell) in row.iter_mut().enumerate() {
                // Cofactor of element (c, r), divided by the determinant.
                let (r0, r1) = ((c + 1) % 3, (c + 2) % 3);
                let (c0, c1) = ((r + 1) % 3, (r + 2) % 3);
                *cell = (l[r0][c0] * l[r1][c1] - l[r0][c1] * l[r1][c0]) / det;
            }
        }
        let t = self.translation();
        let mut out = Affine::identity();
        for r in 0..3 {
            for c in 0..3 {
                out.0[r][c] = inv[r][c];
            }
            out.0[r][3] = -(0..3).map(|k| inv[r][k] * t[k]).sum::<f64>();
        }
        Ok(out)
    }

    /// For each voxel axis, the world axis it runs closest to and the sign:
    /// `(world_axis, +1.0 | -1.0)`. Ties and degenerate columns are resolved
    /// greedily by the largest remaining component, as nibabel's `io_orientation`.
    pub fn orientation(&self) -> [(usize, f64); 3] {
        let l = self.linear();
        let mut used = [false; 3];
        let mut out = [(0usize, 1.0f64); 3];
        // Assign axes in order of how clearly each voxel axis points along one world axis.
        let mut order: Vec<usize> = (0..3).collect();
        let dominance = |c: usize| {
            let v: Vec<f64> = (0..3).map(|r| l[r][c].abs()).collect();
            let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt().max(1e-30);
            v.iter().cloned().fold(0.0, f64::max) / n
        };
        order.sort_by(|&a, &b| dominance(b).partial_cmp(&dominance(a)).unwrap_or(std::cmp::Ordering::Equal));
        for c in order {
            let mut best = None;
            for r in 0..3 {
                if used[r] {
                    continue;
                }
                if best.is_none_or(|(_, v): (usize, f64)| l[r][c].abs() > v) {
                    best = Some((r, l[r][c].abs()));
                }
            }
            let (r, _) = best.expect("three world axes for three voxel axes");
            used[r] = true;
            out[c] = (r, if l[r][c] < 0.0 { -1.0 } else { 1.0 });
        }
        out
    }

    /// Axis codes such as `"RAS"` or `"LPI"` (see the module documentation).
    pub fn axcodes(&self) -> String {
        const POS: [char; 3] = ['R', 'A', 'S'];
        const NEG: [char; 3] = ['L', 'P', 'I'];
        self.orientation()
            .iter()
            .map(|&(axis, sign)| if sign > 0.0 { POS[axis] } else { NEG[axis] })
            .collect()
    }

    /// Largest absolute element-wise difference to another affine.
    pub fn max_abs_diff(&self, other: &Affine) -> f64 {
        let mut m: f64 = 0.0;
        for r in 0..4 {
            for c in 0..4 {
                m = m.max((self.0[r][c] - other.0[r][c]).abs());
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_round_trip() {
        let a = Affine([
            [-0.9, 0.1, 0.0, 90.0],
            [0.05, 1.1, 0.2, -126.0],
            [0.0, -0.1, 2.5, -72.0],
            [0.0, 0.0, 0.0, 1.0],
        ]);
        let id = a.compose(&a.inverse().unwrap());
        assert!(id.max_abs_diff(&Affine::identity()) < 1e-12);
    }

    #[test]
    fn axcodes_of_las_and_oblique() {
        let las = Affine([
            [-2.0, 0.0, 0.0, 0.0],
            [0.0, 2.0, 0.0, 0.0],
            [0.0, 0.0, 2.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]);
        assert_eq!(las.axcodes(), "LAS");
        let sagittal = Affine([
            [0.0, 0.0, -1.0, 0.0],
            [1.0, 0.0, 0.0, 0.0],
            [0.0, -1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]);
        assert_eq!(sagittal.axcodes(), "AIL");
    }

    #[test]
    fn singular_affine_is_an_error() {
        let a = Affine([[0.0; 4]; 4]);
        assert!(a.inverse().is_err());
    }
}
