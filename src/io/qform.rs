//! The NIfTI-1 qform: a rotation stored as a quaternion, voxel sizes, a handedness
//! flag (qfac) and an offset. Decoding and encoding follow nibabel 5.4
//! (`Nifti1Header.get_qform` and `set_qform`), so both tools agree on the matrix.

use crate::error::{Error, Result};
use crate::geometry::Affine;

/// The qform fields of a NIfTI-1 header.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QformParams {
    /// Quaternion components b, c, d; a is implied as `sqrt(1 - b² - c² - d²)`.
    pub quatern_bcd: [f64; 3],
    /// World position of voxel (0, 0, 0) in mm (`qoffset_x/y/z`).
    pub qoffset: [f64; 3],
    /// Voxel sizes `pixdim[1..4]` in mm.
    pub zooms: [f64; 3],
    /// `pixdim[0]`: -1 flips the third voxel axis (a left-handed voxel grid).
    pub qfac: f64,
}

/// Single-precision epsilon times 3: nibabel's threshold below which the implied
/// quaternion component `a² = 1 - b² - c² - d²` counts as zero (the values are
/// stored as float32).
const A_SQUARED_THRESHOLD: f64 = 3.0 * f32::EPSILON as f64;

/// Builds the voxel-to-world matrix of a qform.
///
/// `zooms` and `qfac` must already be sanitized (positive, ±1). When
/// `b² + c² + d²` exceeds 1 by more than float32 rounding, nibabel raises an error;
/// this function instead normalizes (b, c, d) and takes a = 0, as the NIfTI
/// reference library `nifti1_io.c` does.
pub fn qform_to_affine(q: &QformParams) -> Affine {
    let [mut b, mut c, mut d] = q.quatern_bcd;
    let a_squared = 1.0 - (b * b + c * c + d * d);
    let a = if a_squared.abs() < A_SQUARED_THRESHOLD {
        0.0
    } else if a_squared < 0.0 {
        let norm = (b * b + c * c + d * d).sqrt();
        b /= norm;
        c /= norm;
        d /= norm;
        0.0
    } else {
        a_squared.sqrt()
    };

    let rotation = quaternion_to_matrix([a, b, c, d]);
    let scale = [q.zooms[0], q.zooms[1], q.zooms[2] * q.qfac];
    let mut out = Affine::identity();
    for (r, row) in rotation.iter().enumerate() {
        for (col, value) in row.iter().enumerate() {
            out.0[r][col] = value * scale[col];
        }
        out.0[r][3] = q.qoffset[r];
    }
    out
}

/// Rotation matrix of the quaternion `[w, x, y, z]` (nibabel's `quat2mat`; a
/// non-unit quaternion is normalized, a zero one gives the identity).
fn quaternion_to_matrix(q: [f64; 4]) -> [[f64; 3]; 3] {
    let [w, x, y, z] = q;
    let norm_squared = w * w + x * x + y * y + z * z;
    if norm_squared < f64::EPSILON {
        return [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    }
    let s = 2.0 / norm_squared;
    let (xs, ys, zs) = (x * s, y * s, z * s);
    let (wx, wy, wz) = (w * xs, w * ys, w * zs);
    let (xx, xy, xz) = (x * xs, x * ys, x * zs);
    let (yy, yz, zz) = (y * ys, y * zs, z * zs);
    [
        [1.0 - (yy + zz), xy - wz, xz + wy],
        [xy + wz, 1.0 - (xx + zz), yz - wx],
        [xz - wy, yz + wx, 1.0 - (xx + yy)],
    ]
}

/// Computes qform fields that reproduce `affine` as closely as a qform can.
///
/// This follows nibabel's `set_qform`. The zooms are the column lengths of the
/// linear part, and qfac is -1 when the voxel grid is left-handed (negative
/// determinant). For a sheared affine the rotation is the nearest orthogonal matrix
/// (the orthogonal factor of the polar decomposition), so only the sform keeps a
/// shear exactly.
pub fn affine_to_qform(affine: &Affine) -> Result<QformParams> {
    let linear = affine.linear();
    let zooms = affine.spacing();
    if zooms.iter().any(|z| !z.is_finite() || *z == 0.0) || !linear_is_finite(&linear) {
        return Err(Error::invalid(format!(
            "affine {:?} is degenerate (a zero or non-finite column); it cannot be stored as a qform",
            affine.0
        )));
    }

    let mut rotation = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            rotation[r][c] = linear[r][c] / zooms[c];
        }
    }
    let qfac = if determinant(&rotation) > 0.0 {
        1.0
    } else {
        -1.0
    };
    if qfac < 0.0 {
        for row in rotation.iter_mut() {
            row[2] = -row[2];
        }
    }

    let rotation = nearest_rotation(&rotation).ok_or_else(|| {
        Error::invalid(format!(
            "affine {:?} is singular; it cannot be stored as a qform",
            affine.0
        ))
    })?;
    let [_, b, c, d] = matrix_to_quaternion(&rotation);
    Ok(QformParams {
        quatern_bcd: [b, c, d],
        qoffset: affine.translation(),
        zooms,
        qfac,
    })
}

fn linear_is_finite(m: &[[f64; 3]; 3]) -> bool {
    m.iter().flatten().all(|v| v.is_finite())
}

fn determinant(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// Inverse transpose `M⁻ᵀ`, or `None` for a singular matrix.
fn inverse_transpose(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let det = determinant(m);
    if det.abs() < 1e-12 || !det.is_finite() {
        return None;
    }
    // The cofactor matrix divided by the determinant is exactly M⁻ᵀ.
    let mut out = [[0.0; 3]; 3];
    for (r, row) in out.iter_mut().enumerate() {
        for (c, cell) in row.iter_mut().enumerate() {
            let (r0, r1) = ((r + 1) % 3, (r + 2) % 3);
            let (c0, c1) = ((c + 1) % 3, (c + 2) % 3);
            *cell = (m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0]) / det;
        }
    }
    Some(out)
}

/// Orthogonal factor of the polar decomposition of `m` (the closest orthogonal
/// matrix in the Frobenius norm, which nibabel computes as `U·Vᵀ` from an SVD).
///
/// Uses Newton's iteration `X ← (X + X⁻ᵀ) / 2`, which converges quadratically to
/// the same matrix for any non-singular `m`, and keeps the sign of the determinant.
fn nearest_rotation(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let mut x = *m;
    for _ in 0..100 {
        let inv_t = inverse_transpose(&x)?;
        let mut change: f64 = 0.0;
        for r in 0..3 {
            for c in 0..3 {
                let next = 0.5 * (x[r][c] + inv_t[r][c]);
                change = change.max((next - x[r][c]).abs());
                x[r][c] = next;
            }
        }
        if change < 1e-15 {
            break;
        }
    }
    Some(x)
}

/// Unit quaternion `[w, x, y, z]` with `w >= 0` of a rotation matrix
/// (Shepperd's method: divide by the largest of the four candidate terms).
fn matrix_to_quaternion(m: &[[f64; 3]; 3]) -> [f64; 4] {
    let trace = m[0][0] + m[1][1] + m[2][2];
    let q = if trace > 0.0 {
        let s = 2.0 * (trace + 1.0).sqrt();
        [
            0.25 * s,
            (m[2][1] - m[1][2]) / s,
            (m[0][2] - m[2][0]) / s,
            (m[1][0] - m[0][1]) / s,
        ]
    } else if m[0][0] > m[1][1] && m[0][0] > m[2][2] {
        let s = 2.0 * (1.0 + m[0][0] - m[1][1] - m[2][2]).sqrt();
        [
            (m[2][1] - m[1][2]) / s,
            0.25 * s,
            (m[0][1] + m[1][0]) / s,
            (m[0][2] + m[2][0]) / s,
        ]
    } else if m[1][1] > m[2][2] {
        let s = 2.0 * (1.0 + m[1][1] - m[0][0] - m[2][2]).sqrt();
        [
            (m[0][2] - m[2][0]) / s,
            (m[0][1] + m[1][0]) / s,
            0.25 * s,
            (m[1][2] + m[2][1]) / s,
        ]
    } else {
        let s = 2.0 * (1.0 + m[2][2] - m[0][0] - m[1][1]).sqrt();
        [
            (m[1][0] - m[0][1]) / s,
            (m[0][2] + m[2][0]) / s,
            (m[1][2] + m[2][1]) / s,
            0.25 * s,
        ]
    };
    // q and -q are the same rotation; the header stores only b, c, d and implies a >= 0.
    if q[0] < 0.0 {
        [-q[0], -q[1], -q[2], -q[3]]
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation_about_axis(axis: [f64; 3], angle: f64) -> [[f64; 3]; 3] {
        let n = (axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2]).sqrt();
        let [x, y, z] = [axis[0] / n, axis[1] / n, axis[2] / n];
        let (s, c) = angle.sin_cos();
        let t = 1.0 - c;
        [
            [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
            [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
            [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
        ]
    }

    fn affine_from(linear: [[f64; 3]; 3], offset: [f64; 3]) -> Affine {
        let mut a = Affine::identity();
        for r in 0..3 {
            a.0[r][..3].copy_from_slice(&linear[r]);
            a.0[r][3] = offset[r];
        }
        a
    }

    #[test]
    fn qform_round_trip_of_oblique_left_handed_affine() {
        let rot = rotation_about_axis([0.3, -0.5, 0.8], 0.7);
        let zooms = [-0.9, 1.1, 2.5]; // a negative first column makes the grid left-handed
        let mut linear = [[0.0; 3]; 3];
        for r in 0..3 {
            for c in 0..3 {
                linear[r][c] = rot[r][c] * zooms[c];
            }
        }
        let affine = affine_from(linear, [90.0, -126.0, -72.0]);

        let q = affine_to_qform(&affine).unwrap();
        assert_eq!(q.qfac, -1.0);
        let back = qform_to_affine(&q);
        assert!(
            back.max_abs_diff(&affine) < 1e-12,
            "{:?} vs {:?}",
            back,
            affine
        );
    }

    #[test]
    fn qform_round_trip_of_half_turn() {
        // A rotation by pi has w = 0, the case where the implied `a` is at its threshold.
        let rot = rotation_about_axis([0.0, 1.0, 1.0], std::f64::consts::PI);
        let affine = affine_from(rot, [1.0, 2.0, 3.0]);
        let back = qform_to_affine(&affine_to_qform(&affine).unwrap());
        assert!(back.max_abs_diff(&affine) < 1e-12);
    }

    #[test]
    fn sheared_affine_gets_nearest_rotation() {
        let linear = [[1.0, 0.2, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let q = affine_to_qform(&affine_from(linear, [0.0; 3])).unwrap();
        let rot = qform_to_affine(&QformParams {
            zooms: [1.0; 3],
            ..q
        })
        .linear();
        // Orthogonal: RᵀR = I.
        for i in 0..3 {
            for j in 0..3 {
                let dot: f64 = (0..3).map(|k| rot[k][i] * rot[k][j]).sum();
                let expected = if i == j { 1.0 } else { 0.0 };
                assert!((dot - expected).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn degenerate_affine_is_an_error() {
        let linear = [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]];
        assert!(affine_to_qform(&affine_from(linear, [0.0; 3])).is_err());
    }
}
