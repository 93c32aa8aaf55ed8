//! Tests of the preprocessing library: reorientation, resampling, intensity
//! normalization, crop/pad and the PRISM pipeline.
//!
//! Expected values come from analytic cases (linear functions of world
//! coordinates, integer index formulas), from nibabel's header and statistics of
//! the real scans, and from MONAI 1.4.0 outputs stored in `tests/data/monai`
//! (made by `make_monai_reference.py` there). Tests on real scans look for a
//! `shared/data` folder beside the repository or one of its parent folders and are
//! skipped with a note when it is absent.

use std::path::{Path, PathBuf};

use candle_core::Device;
use ndarray::Array3;
use prism::preprocess::{
    clip_percentiles, crop_foreground, pad_to_multiple, resample_to_grid, resample_to_spacing,
    to_ras, volume_to_tensor, zscore_nonzero, Interp, Normalize, PreprocessOptions,
};
use prism::{Affine, Volume};

// ---------------------------------------------------------------------------
// Helpers

/// Reads a gzipped little-endian NIfTI-1 file (uint8, int16 or float32 voxels),
/// taking the affine from the sform rows; every file these tests read has
/// sform_code > 0. Voxels start at `vox_offset`, after any header extensions.
fn read_nifti(path: &Path) -> Volume {
    use ndarray::ShapeBuilder;
    use std::io::Read;

    let file = std::fs::File::open(path).expect("NIfTI file opens");
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .expect("gzip stream decodes");
    let i16_at = |o: usize| i16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let f32_at =
        |o: usize| f32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    assert_eq!(
        i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        348,
        "not little-endian NIfTI-1"
    );

    let dim: Vec<usize> = (0..4).map(|d| i16_at(40 + 2 * d) as usize).collect();
    assert_eq!(dim[0], 3, "{} is not 3-D", path.display());
    let shape = [dim[1], dim[2], dim[3]];
    assert!(i16_at(254) > 0, "{} has no sform", path.display());
    let mut affine = Affine::identity();
    for r in 0..3 {
        for c in 0..4 {
            affine.0[r][c] = f32_at(280 + 16 * r + 4 * c) as f64;
        }
    }

    let n = shape.iter().product::<usize>();
    let raw = &bytes[f32_at(108) as usize..];
    let mut values: Vec<f32> = match i16_at(70) {
        2 => raw[..n].iter().map(|v| *v as f32).collect(),
        4 => raw
            .chunks_exact(2)
            .take(n)
            .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32)
            .collect(),
        16 => raw
            .chunks_exact(4)
            .take(n)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        other => panic!("datatype {other} is not handled by this test reader"),
    };
    let (slope, intercept) = (f32_at(112), f32_at(116));
    if slope.is_finite() && slope != 0.0 {
        values.iter_mut().for_each(|v| *v = *v * slope + intercept);
    }

    // NIfTI stores i fastest (Fortran order).
    let data = Array3::from_shape_vec(shape.f(), values).expect("voxel count matches dim");
    Volume::new(data, affine)
}

/// Path of a file under a `shared/data` folder next to the repository or one of
/// its parent folders, or `None` (with a note) when there is none.
fn shared_data(relative: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for folder in root.ancestors().skip(1) {
        let candidate = folder.join("shared/data").join(relative);
        if candidate.exists() {
            return Some(candidate);
        }
    }
    eprintln!(
        "note: skipped, {relative} not found under a shared/data folder beside the repository"
    );
    None
}

/// nibabel's record of one shared file (shape, affine, statistics, samples).
fn nibabel_record(relative: &str) -> Option<serde_json::Value> {
    let path = shared_data("reference/nibabel.json")?;
    let text = std::fs::read_to_string(path).expect("nibabel.json reads");
    let all: serde_json::Value = serde_json::from_str(&text).expect("nibabel.json parses");
    Some(all["files"][relative].clone())
}

fn monai_reference(file: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/monai")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("MONAI reference reads");
    serde_json::from_str(&text).expect("MONAI reference parses")
}

fn read_f32_file(file: &str, shape: [usize; 3]) -> Array3<f32> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/monai")
        .join(file);
    let bytes = std::fs::read(path).expect("reference array reads");
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Array3::from_shape_vec(shape, values).expect("reference array has the stated shape")
}

fn json_affine(value: &serde_json::Value) -> Affine {
    let mut affine = Affine::identity();
    for r in 0..4 {
        for c in 0..4 {
            affine.0[r][c] = value[r][c].as_f64().expect("affine entry is a number");
        }
    }
    affine
}

fn json_index(value: &serde_json::Value) -> [usize; 3] {
    [0, 1, 2].map(|d| value[d].as_u64().expect("index is an integer") as usize)
}

fn affine(linear: [[f64; 3]; 3], translation: [f64; 3]) -> Affine {
    let mut a = Affine::identity();
    for r in 0..3 {
        a.0[r][..3].copy_from_slice(&linear[r]);
        a.0[r][3] = translation[r];
    }
    a
}

/// Rotation about z by `z_degrees`, then about x by `x_degrees`, then per-axis
/// spacing: an oblique voxel grid.
fn oblique(z_degrees: f64, x_degrees: f64, spacing: [f64; 3], translation: [f64; 3]) -> Affine {
    let (sz, cz) = z_degrees.to_radians().sin_cos();
    let (sx, cx) = x_degrees.to_radians().sin_cos();
    let rz = [[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]];
    let rx = [[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]];
    let mut linear = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            let rotation: f64 = (0..3).map(|m| rz[r][m] * rx[m][c]).sum();
            linear[r][c] = rotation * spacing[c];
        }
    }
    affine(linear, translation)
}

/// Distinct values per voxel, so any misplaced voxel shows.
fn ramp(shape: [usize; 3]) -> Array3<f32> {
    Array3::from_shape_fn(shape, |(i, j, k)| (i * 10_000 + j * 100 + k) as f32)
}

fn index_f64(index: (usize, usize, usize)) -> [f64; 3] {
    [index.0 as f64, index.1 as f64, index.2 as f64]
}

/// Asserts that every voxel of `output` contains the `input` value at the same world
/// point, and that this point is an input voxel centre.
fn assert_same_world_values(input: &Volume, output: &Volume) {
    let to_input = input.affine.inverse().unwrap().compose(&output.affine);
    for (o, value) in output.data.indexed_iter() {
        let p = to_input.apply(index_f64(o));
        let rounded = p.map(f64::round);
        for d in 0..3 {
            assert!(
                (p[d] - rounded[d]).abs() < 1e-9,
                "voxel {o:?} maps between input voxels: {p:?}"
            );
        }
        let source = rounded.map(|x| x as usize);
        assert_eq!(
            *value, input.data[source],
            "voxel {o:?} does not hold input voxel {source:?}"
        );
    }
}

/// `f = a·x + b·y + c·z + d` at a world point.
fn linear_field(world: [f64; 3]) -> f64 {
    0.5 * world[0] - 0.3 * world[1] + 0.2 * world[2] + 4.0
}

fn linear_field_volume(shape: [usize; 3], affine: Affine) -> Volume {
    let data = Array3::from_shape_fn(shape, |o| linear_field(affine.apply(index_f64(o))) as f32);
    Volume::new(data, affine)
}

/// Largest error of the resampled linear field over output voxels whose sample
/// position lies inside the input's voxel-centre box, and how many there were.
fn linear_field_error(input: &Volume, output: &Volume) -> (f64, usize) {
    let to_input = input.affine.inverse().unwrap().compose(&output.affine);
    let shape = input.shape();
    let mut worst: f64 = 0.0;
    let mut count = 0;
    for (o, value) in output.data.indexed_iter() {
        let p = to_input.apply(index_f64(o));
        let interior = (0..3).all(|d| p[d] >= -1e-9 && p[d] <= shape[d] as f64 - 1.0 + 1e-9);
        if interior {
            let expected = linear_field(output.affine.apply(index_f64(o)));
            worst = worst.max((*value as f64 - expected).abs());
            count += 1;
        }
    }
    (worst, count)
}

fn nonzero_mean_std(values: impl Iterator<Item = f32>) -> (usize, f64, f64) {
    let nonzero: Vec<f64> = values.filter(|v| *v != 0.0).map(|v| v as f64).collect();
    let n = nonzero.len() as f64;
    let mean = nonzero.iter().sum::<f64>() / n;
    let variance = nonzero.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (nonzero.len(), mean, variance.sqrt())
}

// ---------------------------------------------------------------------------
// Reorientation

fn reorientation_cases() -> Vec<(&'static str, Affine)> {
    vec![
        (
            "RAS",
            affine(
                [[1.0, 0.0, 0.0], [0.0, 1.5, 0.0], [0.0, 0.0, 2.0]],
                [-10.0, 5.0, 3.0],
            ),
        ),
        (
            "LAS",
            affine(
                [[-1.5, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]],
                [90.0, -126.0, -72.0],
            ),
        ),
        (
            "LPS",
            affine(
                [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.2]],
                [20.0, 30.0, -40.0],
            ),
        ),
        (
            "AIL",
            affine(
                [[0.0, 0.0, -1.1], [0.9, 0.0, 0.0], [0.0, -1.05, 0.0]],
                [10.0, -20.0, 30.0],
            ),
        ),
        ("oblique", {
            let mut a = oblique(20.0, -12.0, [0.9, 1.1, 1.7], [-5.0, 7.0, 3.0]);
            // Flip the first axis as well, so the oblique case also exercises a flip.
            for r in 0..3 {
                a.0[r][0] = -a.0[r][0];
            }
            a
        }),
    ]
}

#[test]
fn to_ras_gives_ras_axcodes() {
    for (name, affine) in reorientation_cases() {
        let volume = Volume::new(ramp([5, 6, 7]), affine);
        let (ras, _) = to_ras(&volume);
        assert_eq!(ras.affine.axcodes(), "RAS", "case {name}");
    }
}

#[test]
fn to_ras_keeps_world_positions() {
    for (_, affine) in reorientation_cases() {
        let volume = Volume::new(ramp([5, 6, 7]), affine);
        let (ras, _) = to_ras(&volume);
        assert_same_world_values(&volume, &ras);
    }
}

#[test]
fn to_ras_keeps_obliquity_in_affine() {
    let (_, affine) = reorientation_cases().pop().unwrap();
    let volume = Volume::new(ramp([5, 6, 7]), affine);
    let (ras, reorientation) = to_ras(&volume);
    let input = affine.linear();
    let output = ras.affine.linear();
    let axes = reorientation.source_axis.iter().zip(&reorientation.flipped);
    for (d, (&source, &flipped)) in axes.enumerate() {
        let sign = if flipped { -1.0 } else { 1.0 };
        for (r, (output_row, input_row)) in output.iter().zip(&input).enumerate() {
            assert_eq!(
                output_row[d],
                sign * input_row[source],
                "column {d}, row {r}"
            );
        }
    }
}

#[test]
fn reorientation_undo_restores_data_and_affine() {
    for (name, affine) in reorientation_cases() {
        let volume = Volume::new(ramp([5, 6, 7]), affine);
        let (ras, reorientation) = to_ras(&volume);
        let restored = reorientation.undo(&ras).unwrap();
        assert_eq!(restored.data, volume.data, "case {name}");
        assert_eq!(restored.affine, volume.affine, "case {name}");
    }
}

#[test]
fn reorientation_undo_array_restores_labels() {
    let (_, affine) = reorientation_cases()[3];
    let labels = Array3::from_shape_fn([5, 6, 7], |(i, j, k)| (i + 2 * j + 3 * k) as i32);
    let volume = Volume::new(labels.mapv(|v| v as f32), affine);
    let (_, reorientation) = to_ras(&volume);
    let moved = reorientation.apply_array(&labels);
    assert_eq!(reorientation.undo_array(&moved).unwrap(), labels);
}

#[test]
fn reorientation_undo_rejects_wrong_shape() {
    let (_, affine) = reorientation_cases()[3];
    let volume = Volume::new(ramp([5, 6, 7]), affine);
    let (_, reorientation) = to_ras(&volume);
    assert!(reorientation.undo_array(&ramp([5, 6, 7])).is_err());
}

#[test]
fn to_ras_real_las_atlas() {
    let relative = "labels/harvardoxford_cort_maxprob_1mm.nii.gz";
    let (Some(path), Some(record)) = (shared_data(relative), nibabel_record(relative)) else {
        return;
    };
    let volume = read_nifti(&path);
    assert_eq!(
        volume.affine.max_abs_diff(&json_affine(&record["affine"])),
        0.0
    );
    assert_eq!(volume.affine.axcodes(), record["axcodes"].as_str().unwrap());

    let (ras, reorientation) = to_ras(&volume);
    assert_eq!(ras.affine.axcodes(), "RAS");

    // nibabel's sampled voxels: same value at the same world point on the RAS grid.
    let to_ras_index = ras.affine.inverse().unwrap();
    for sample in record["samples"].as_array().unwrap() {
        let index = json_index(&sample["index"]);
        let world = volume.affine.apply(index.map(|v| v as f64));
        let o = to_ras_index.apply(world).map(|v| v.round() as usize);
        assert_eq!(
            ras.affine.apply(o.map(|v| v as f64)),
            world,
            "sample {index:?}"
        );
        assert_eq!(
            ras.data[o] as f64,
            sample["value"].as_f64().unwrap(),
            "sample {index:?}"
        );
    }

    let restored = reorientation.undo(&ras).unwrap();
    assert!(restored.data == volume.data);
}

// ---------------------------------------------------------------------------
// Resampling

#[test]
fn resample_linear_field_anisotropic() {
    let affine = affine(
        [[-0.8, 0.0, 0.0], [0.0, 1.3, 0.0], [0.0, 0.0, 2.1]],
        [30.0, -40.0, 12.0],
    );
    let volume = linear_field_volume([12, 10, 9], affine);
    let out = resample_to_spacing(&volume, [1.0, 1.0, 1.0], Interp::Linear).unwrap();
    assert_eq!(out.spacing(), [1.0, 1.0, 1.0]);
    let (error, count) = linear_field_error(&volume, &out);
    assert!(count > out.data.len() / 2, "only {count} interior voxels");
    assert!(error < 1e-4, "max error {error}");
}

#[test]
fn resample_linear_field_oblique() {
    let affine = oblique(20.0, -12.0, [0.9, 1.1, 1.7], [-5.0, 7.0, 3.0]);
    let volume = linear_field_volume([12, 11, 9], affine);
    let out = resample_to_spacing(&volume, [1.2, 0.8, 1.0], Interp::Linear).unwrap();
    let (error, count) = linear_field_error(&volume, &out);
    assert!(count > out.data.len() / 2, "only {count} interior voxels");
    assert!(error < 1e-4, "max error {error}");
}

#[test]
fn resample_to_grid_linear_field_rotated_target() {
    let source_affine = oblique(20.0, -12.0, [0.9, 1.1, 1.7], [-5.0, 7.0, 3.0]);
    let volume = linear_field_volume([14, 13, 10], source_affine);
    // A rotated grid centred on the source volume's centre.
    let mut target = oblique(-35.0, 25.0, [0.7, 0.9, 1.3], [0.0, 0.0, 0.0]);
    let source_centre = source_affine.apply([6.5, 6.0, 4.5]);
    let target_centre = target.apply([5.5, 5.5, 5.5]);
    for r in 0..3 {
        target.0[r][3] = source_centre[r] - target_centre[r];
    }
    let out = resample_to_grid(&volume, &target, [12, 12, 12], Interp::Linear, 0.0).unwrap();
    assert_eq!(out.affine, target);
    let (error, count) = linear_field_error(&volume, &out);
    assert!(count > 100, "only {count} interior voxels");
    assert!(error < 1e-4, "max error {error}");
}

#[test]
fn resample_to_grid_same_grid_is_exact() {
    let affine = oblique(20.0, -12.0, [0.9, 1.1, 1.7], [-5.0, 7.0, 3.0]);
    let volume = Volume::new(ramp([6, 5, 4]), affine);
    let linear = resample_to_grid(&volume, &affine, [6, 5, 4], Interp::Linear, 0.0).unwrap();
    assert_eq!(linear.data, volume.data);
    let nearest = resample_to_grid(&volume, &affine, [6, 5, 4], Interp::Nearest, 0.0).unwrap();
    assert_eq!(nearest.data, volume.data);
}

#[test]
fn resample_to_grid_outside_takes_fill() {
    let volume = Volume::new(ramp([6, 5, 4]), Affine::from_spacing([1.0, 1.0, 1.0]));
    let mut far = Affine::identity();
    far.0[0][3] = 100.0;
    for interp in [Interp::Linear, Interp::Nearest] {
        let out = resample_to_grid(&volume, &far, [3, 3, 3], interp, -7.0).unwrap();
        assert!(out.data.iter().all(|v| *v == -7.0), "{interp:?}");
    }
}

/// Labels in blocks of 3×3×3 voxels, so every label covers some output voxel.
fn block_labels(shape: [usize; 3]) -> Array3<f32> {
    const LABELS: [f32; 4] = [0.0, 3.0, 7.0, 12.0];
    Array3::from_shape_fn(shape, |(i, j, k)| LABELS[(i / 3 + j / 3 + k / 3) % 4])
}

#[test]
fn resample_nearest_keeps_label_set() {
    let affine = oblique(20.0, -12.0, [1.0, 1.2, 1.5], [-5.0, 7.0, 3.0]);
    let volume = Volume::new(block_labels([12, 11, 9]), affine);
    let out = resample_to_spacing(&volume, [0.7, 0.7, 0.7], Interp::Nearest).unwrap();
    let mut labels: Vec<f32> = out.data.iter().copied().collect();
    labels.sort_by(f32::total_cmp);
    labels.dedup();
    assert_eq!(labels, vec![0.0, 3.0, 7.0, 12.0]);
}

#[test]
fn resample_nearest_places_single_voxel_label() {
    let affine = oblique(20.0, -12.0, [1.0, 1.2, 1.5], [-5.0, 7.0, 3.0]);
    let mut data = Array3::zeros([9, 10, 8]);
    let label_voxel = [4usize, 5, 3];
    data[label_voxel] = 5.0;
    let volume = Volume::new(data, affine);
    let out = resample_to_spacing(&volume, [0.5, 0.5, 0.5], Interp::Nearest).unwrap();

    // Every output voxel labelled 5 has its centre inside the input voxel's box.
    let to_input = affine.inverse().unwrap().compose(&out.affine);
    let mut labelled = 0;
    for (o, value) in out.data.indexed_iter() {
        if *value == 5.0 {
            labelled += 1;
            let p = to_input.apply(index_f64(o));
            for d in 0..3 {
                assert!(
                    (p[d] - label_voxel[d] as f64).abs() <= 0.5 + 1e-9,
                    "voxel {o:?} at {p:?}"
                );
            }
        }
    }
    assert!(labelled > 0);

    // The output voxel nearest the labelled voxel's centre carries the label.
    let world = affine.apply(label_voxel.map(|v| v as f64));
    let nearest = out
        .affine
        .inverse()
        .unwrap()
        .apply(world)
        .map(|v| v.round() as usize);
    assert_eq!(out.data[nearest], 5.0);
}

#[test]
fn resample_to_spacing_rejects_nonpositive_spacing() {
    let volume = Volume::new(ramp([4, 4, 4]), Affine::identity());
    assert!(resample_to_spacing(&volume, [1.0, -1.0, 1.0], Interp::Linear).is_err());
}

fn spacing_case_input(shape: [usize; 3], mode: &str) -> Array3<f32> {
    // The same integer formulas as make_monai_reference.py.
    Array3::from_shape_fn(shape, |(i, j, k)| match mode {
        "bilinear" => ((i * 7919 + j * 104729 + k * 1299709) % 1000) as f64 as f32 / 10.0,
        _ => ((i * 3 + j * 5 + k * 7) % 5) as f32,
    })
}

#[test]
fn resample_to_spacing_matches_monai() {
    let cases = monai_reference("spacing.json");
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let shape = json_index(&case["shape"]);
        let affine = json_affine(&case["affine"]);
        let spacing = [0, 1, 2].map(|d| case["spacing"][d].as_f64().unwrap());

        for output in case["outputs"].as_array().unwrap() {
            let mode = output["mode"].as_str().unwrap();
            let interp = if mode == "nearest" {
                Interp::Nearest
            } else {
                Interp::Linear
            };
            let volume = Volume::new(spacing_case_input(shape, mode), affine);
            let out = resample_to_spacing(&volume, spacing, interp).unwrap();

            let expected_shape = json_index(&output["shape"]);
            assert_eq!(out.shape(), expected_shape, "{name} {mode}");
            let affine_error = out.affine.max_abs_diff(&json_affine(&output["affine"]));
            assert!(
                affine_error < 1e-9,
                "{name} {mode}: affine differs by {affine_error}"
            );

            let expected = read_f32_file(output["file"].as_str().unwrap(), expected_shape);
            let worst = out
                .data
                .iter()
                .zip(expected.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst < 1e-4,
                "{name} {mode}: values differ by up to {worst}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Intensity

#[test]
fn zscore_nonzero_gives_unit_stats() {
    let data = Array3::from_shape_fn([10, 9, 8], |(i, j, k)| {
        if (i + j + k) % 4 == 0 {
            0.0
        } else {
            (i * 13 + j * 7 + k * 3) as f32 * 0.5 + 10.0
        }
    });
    let zeros: Vec<bool> = data.iter().map(|v| *v == 0.0).collect();
    let (count, mean, std) = nonzero_mean_std(data.iter().copied());
    let mut volume = Volume::new(data, Affine::identity());

    let stats = zscore_nonzero(&mut volume);
    assert_eq!(stats.count, count);
    assert!((stats.mean - mean).abs() < 1e-9);
    assert!((stats.std - std).abs() < 1e-9);

    // Statistics over the input's non-zero voxels: a voxel equal to the mean
    // becomes 0 and must still count.
    let foreground = volume
        .data
        .iter()
        .zip(&zeros)
        .filter(|(_, zero)| !**zero)
        .map(|(v, _)| *v as f64);
    let values: Vec<f64> = foreground.collect();
    let new_mean = values.iter().sum::<f64>() / values.len() as f64;
    let new_std =
        (values.iter().map(|v| (v - new_mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt();
    assert!(new_mean.abs() < 1e-6, "mean {new_mean}");
    assert!((new_std - 1.0).abs() < 1e-6, "std {new_std}");
    for (v, zero) in volume.data.iter().zip(&zeros) {
        if *zero {
            assert_eq!(*v, 0.0);
        }
    }
}

#[test]
fn zscore_nonzero_constant_foreground_maps_to_zero() {
    let mut data = Array3::zeros([4, 4, 4]);
    data.slice_mut(ndarray::s![1..3, 1..3, 1..3]).fill(5.0);
    let mut volume = Volume::new(data, Affine::identity());
    let stats = zscore_nonzero(&mut volume);
    assert_eq!(stats.count, 8);
    assert_eq!(stats.std, 0.0);
    assert!(volume.data.iter().all(|v| *v == 0.0));
}

#[test]
fn zscore_nonzero_all_zero_is_noop() {
    let mut volume = Volume::new(Array3::zeros([3, 3, 3]), Affine::identity());
    let stats = zscore_nonzero(&mut volume);
    assert!(stats.is_empty());
    assert!(volume.data.iter().all(|v| *v == 0.0));
}

#[test]
fn zscore_nonzero_real_scan_matches_nibabel_stats() {
    let relative = "anat/colin27_t1.nii.gz";
    let (Some(path), Some(record)) = (shared_data(relative), nibabel_record(relative)) else {
        return;
    };
    let mut volume = read_nifti(&path);
    let stats = zscore_nonzero(&mut volume);

    // Zero voxels add nothing to the sums, so nibabel's whole-volume sums are the
    // non-zero sums.
    let reference = &record["scaled_data_stats"];
    let n = reference["n_nonzero"].as_u64().unwrap() as usize;
    let sum = reference["sum"].as_f64().unwrap();
    let sum_of_squares = reference["sum_of_squares"].as_f64().unwrap();
    let mean = sum / n as f64;
    let std = (sum_of_squares / n as f64 - mean * mean).sqrt();
    assert_eq!(stats.count, n);
    assert!(
        (stats.mean - mean).abs() < 1e-9 * mean,
        "mean {} vs {mean}",
        stats.mean
    );
    assert!(
        (stats.std - std).abs() < 1e-9 * std,
        "std {} vs {std}",
        stats.std
    );

    // Colin27's voxels are integers and its non-zero mean is not, so no voxel
    // becomes 0 and the output's non-zero voxels are the input's.
    let (count, new_mean, new_std) = nonzero_mean_std(volume.data.iter().copied());
    assert_eq!(count, n);
    assert!(new_mean.abs() < 1e-5, "mean {new_mean}");
    assert!((new_std - 1.0).abs() < 1e-5, "std {new_std}");
}

/// Non-zero values 3 1 4 1 5 9 2 6 5, sorted 1 1 2 3 4 5 5 6 9 (n = 9). numpy's
/// linear percentile sits at position 8·q/100: q = 10 → 0.8 → 1; q = 25 → 2 → 2;
/// q = 90 → 7.2 → 6 + 0.2·3 = 6.6; q = 99 → 7.92 → 6 + 0.92·3 = 8.76
/// (`np.percentile` gives the same).
fn percentile_example() -> Volume {
    let values = vec![0.0, 0.0, 3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 0.0, 5.0];
    Volume::new(
        Array3::from_shape_vec([2, 3, 2], values).unwrap(),
        Affine::identity(),
    )
}

#[test]
fn percentile_matches_numpy() {
    let cases = [
        (0.0, 1.0),
        (10.0, 1.0),
        (25.0, 2.0),
        (50.0, 4.0),
        (90.0, 6.6),
        (99.0, 8.76),
        (100.0, 9.0),
    ];
    for (q, expected) in cases {
        let mut values = vec![3.0f32, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0];
        let value = prism::preprocess::intensity::percentile(&mut values, q).unwrap();
        assert!(
            (value - expected).abs() < 1e-9,
            "q {q}: {value} vs {expected}"
        );
    }
}

#[test]
fn clip_percentiles_clips_nonzero_only() {
    let mut volume = percentile_example();
    let range = clip_percentiles(&mut volume, 10.0, 90.0).unwrap();
    assert_eq!(range.count, 9);
    assert_eq!(range.lo, 1.0);
    assert!((range.hi - 6.6).abs() < 1e-6);

    let clipped: Vec<f32> = volume.data.iter().copied().collect();
    let expected = [
        0.0, 0.0, 3.0, 1.0, 4.0, 1.0, 5.0, range.hi, 2.0, 6.0, 0.0, 5.0,
    ];
    assert_eq!(clipped, expected);
}

#[test]
fn clip_percentiles_rejects_reversed_range() {
    let mut volume = percentile_example();
    assert!(clip_percentiles(&mut volume, 90.0, 10.0).is_err());
}

// ---------------------------------------------------------------------------
// Crop and pad

fn blob_volume() -> Volume {
    let mut data = Array3::zeros([12, 11, 10]);
    data.slice_mut(ndarray::s![3..6, 2..8, 4..5]).fill(2.0);
    data[[5, 7, 4]] = 9.0;
    Volume::new(
        data,
        oblique(20.0, -12.0, [0.9, 1.1, 1.7], [-5.0, 7.0, 3.0]),
    )
}

#[test]
fn crop_foreground_box_and_margin() {
    let volume = blob_volume();
    let (cropped, crop) = crop_foreground(&volume, 0.0, 1);
    assert_eq!(crop.offset, [2, 1, 3]);
    assert_eq!(cropped.shape(), [5, 8, 3]);
    assert_same_world_values(&volume, &cropped);
}

#[test]
fn crop_foreground_translation_moves_by_offset() {
    let volume = blob_volume();
    let (cropped, crop) = crop_foreground(&volume, 0.0, 1);
    let linear = volume.affine.linear();
    let t = volume.affine.translation();
    for r in 0..3 {
        let expected = t[r]
            + (0..3)
                .map(|c| linear[r][c] * crop.offset[c] as f64)
                .sum::<f64>();
        assert!((cropped.affine.translation()[r] - expected).abs() < 1e-12);
    }
    assert_eq!(cropped.affine.linear(), linear);
}

#[test]
fn crop_foreground_undo_restores_volume() {
    let volume = blob_volume();
    let (cropped, crop) = crop_foreground(&volume, 0.0, 0);
    let restored = crop.undo(&cropped, 0.0).unwrap();
    assert_eq!(restored.data, volume.data);
    assert_eq!(restored.affine, volume.affine);
}

#[test]
fn crop_foreground_empty_keeps_volume() {
    let volume = Volume::new(Array3::zeros([4, 5, 6]), Affine::identity());
    let (cropped, crop) = crop_foreground(&volume, 0.0, 2);
    assert!(crop.is_identity());
    assert_eq!(cropped.shape(), [4, 5, 6]);
}

#[test]
fn pad_to_multiple_symmetric_and_undo() {
    let volume = Volume::new(
        ramp([30, 33, 64]),
        oblique(10.0, 5.0, [1.0, 1.0, 1.0], [1.0, 2.0, 3.0]),
    );
    let (padded, pad) = pad_to_multiple(&volume, 32).unwrap();
    assert_eq!(padded.shape(), [32, 64, 64]);
    assert_eq!(pad.offset, [-1, -15, 0]);
    assert_eq!(padded.data[[0, 20, 5]], 0.0);
    assert_eq!(padded.data[[31, 20, 5]], 0.0);
    assert_eq!(padded.data[[1, 15, 0]], volume.data[[0, 0, 0]]);

    let world = volume.affine.apply([-1.0, -15.0, 0.0]);
    assert_eq!(padded.affine.translation(), world);

    let restored = pad.undo_array(&padded.data, -1.0).unwrap();
    assert_eq!(restored, volume.data);
}

#[test]
fn crop_then_pad_undo_round_trip() {
    let volume = blob_volume();
    let (cropped, crop) = crop_foreground(&volume, 0.0, 1);
    let (padded, pad) = pad_to_multiple(&cropped, 4).unwrap();
    let both = crop.then(&pad).unwrap();
    assert_eq!(both.offset, [1, 1, 3]);

    // Each output voxel is input voxel o + offset at the same world point, or padding.
    let shape = volume.shape();
    for (o, value) in padded.data.indexed_iter() {
        let p = [o.0, o.1, o.2].map(|v| v as i64);
        let source: [i64; 3] = [0, 1, 2].map(|d| p[d] + both.offset[d]);
        let inside = (0..3).all(|d| source[d] >= 0 && source[d] < shape[d] as i64);
        if !inside {
            assert_eq!(*value, 0.0, "padding voxel {o:?}");
            continue;
        }
        let source_f64 = source.map(|v| v as f64);
        let world_out = padded.affine.apply(index_f64(o));
        let world_in = volume.affine.apply(source_f64);
        for d in 0..3 {
            assert!(
                (world_out[d] - world_in[d]).abs() < 1e-9,
                "voxel {o:?} moved"
            );
        }
        assert_eq!(
            *value,
            volume.data[source.map(|v| v as usize)],
            "voxel {o:?}"
        );
    }

    assert_eq!(both.undo_array(&padded.data, 0.0).unwrap(), volume.data);
}

#[test]
fn pad_to_multiple_rejects_zero() {
    let volume = Volume::new(ramp([3, 3, 3]), Affine::identity());
    assert!(pad_to_multiple(&volume, 0).is_err());
}

// ---------------------------------------------------------------------------
// Pipeline

#[test]
fn pipeline_none_keeps_voxels() {
    let volume = blob_volume();
    let (out, applied) = PreprocessOptions::none().apply(volume.clone()).unwrap();
    assert_eq!(out.data, volume.data);
    assert_eq!(out.affine, volume.affine);
    assert!(applied.reorientation.is_none());
    assert!(applied.resampling.is_none());
    assert!(applied.crop_pad.is_identity());
}

/// Builds a 2 mm LAS volume with a foreground blob. Resampling to 1 mm puts every input
/// voxel centre on an output voxel centre, so mapping back is exact.
fn las_two_mm_volume() -> Volume {
    let mut data = Array3::zeros([14, 12, 10]);
    for ((i, j, k), value) in data.indexed_iter_mut() {
        if (3..11).contains(&i) && (2..9).contains(&j) && (2..8).contains(&k) {
            *value = (1 + i + 2 * j + 3 * k) as f32;
        }
    }
    Volume::new(
        data,
        affine(
            [[-2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]],
            [40.0, -30.0, -20.0],
        ),
    )
}

#[test]
fn pipeline_default_output_grid() {
    let (out, applied) = PreprocessOptions::prism_default()
        .apply(las_two_mm_volume())
        .unwrap();
    assert_eq!(out.affine.axcodes(), "RAS");
    assert_eq!(out.spacing(), [1.0, 1.0, 1.0]);
    assert!(
        out.shape().iter().all(|n| n % 32 == 0),
        "shape {:?}",
        out.shape()
    );
    assert!(applied.resampling.is_some());
    assert!(!applied.foreground_is_empty());
}

#[test]
fn pipeline_maps_back_to_input_grid() {
    let input = las_two_mm_volume();
    let options = PreprocessOptions {
        normalize: Normalize::None,
        ..PreprocessOptions::prism_default()
    };
    let (out, applied) = options.apply(input.clone()).unwrap();

    let back = applied
        .to_input_grid(&out.data, Interp::Linear, 0.0)
        .unwrap();
    assert_eq!(back.affine, input.affine);
    let worst = back
        .data
        .iter()
        .zip(input.data.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "values differ by up to {worst}");

    let labels = out.data.mapv(|v| if v > 0.0 { 1.0 } else { 0.0 });
    let back_labels = applied.to_input_grid_labels(&labels).unwrap();
    assert_eq!(
        back_labels.data,
        input.data.mapv(|v| if v > 0.0 { 1.0 } else { 0.0 })
    );
}

#[test]
fn pipeline_rejects_zero_pad_multiple() {
    let options = PreprocessOptions {
        pad_multiple: 0,
        ..PreprocessOptions::prism_default()
    };
    assert!(options.apply(blob_volume()).is_err());
}

#[test]
fn pipeline_default_real_scan() {
    let Some(path) = shared_data("anat/colin27_t1.nii.gz") else {
        return;
    };
    let input = read_nifti(&path);
    let (out, applied) = PreprocessOptions::prism_default()
        .apply(input.clone())
        .unwrap();

    assert_eq!(out.affine.axcodes(), "RAS");
    assert_eq!(out.spacing(), [1.0, 1.0, 1.0]);
    assert!(
        out.shape().iter().all(|n| n % 32 == 0),
        "shape {:?}",
        out.shape()
    );

    let (_, mean, std) = nonzero_mean_std(out.data.iter().copied());
    assert!(mean.abs() < 1e-5, "mean {mean}");
    assert!((std - 1.0).abs() < 1e-5, "std {std}");

    // Colin27 is already 1 mm RAS+, so only crop and padding change the grid and
    // the non-zero mask maps back exactly.
    let mask = out.data.mapv(|v| if v != 0.0 { 1.0 } else { 0.0 });
    let back = applied.to_input_grid_labels(&mask).unwrap();
    assert_eq!(back.affine, input.affine);
    assert!(back.data == input.data.mapv(|v| if v != 0.0 { 1.0 } else { 0.0 }));

    let tensor = volume_to_tensor(&out, &Device::Cpu).unwrap();
    let [ni, nj, nk] = out.shape();
    assert_eq!(tensor.dims(), &[1, 1, ni, nj, nk]);
}

fn assert_samples_match(volume: &Volume, samples: &serde_json::Value, tolerance: f64, what: &str) {
    for sample in samples.as_array().unwrap() {
        let index = json_index(&sample["index"]);
        let expected = sample["value"].as_f64().unwrap();
        let value = volume.data[index] as f64;
        assert!(
            (value - expected).abs() <= tolerance,
            "{what} at {index:?}: {value} vs {expected}"
        );
    }
}

#[test]
fn pipeline_default_matches_monai_colin27() {
    let relative = "anat/colin27_t1.nii.gz";
    let Some(path) = shared_data(relative) else {
        return;
    };
    let reference = &monai_reference("pipeline.json")[relative];
    let (out, _) = PreprocessOptions::prism_default()
        .apply(read_nifti(&path))
        .unwrap();

    let final_reference = &reference["final"];
    assert_eq!(out.shape(), json_index(&final_reference["shape"]));
    assert!(
        out.affine
            .max_abs_diff(&json_affine(&final_reference["affine"]))
            < 1e-9
    );
    assert_samples_match(&out, &final_reference["samples"], 1e-4, "final");
}

#[test]
fn pipeline_default_matches_monai_grid_las_anisotropic() {
    let relative = "lesion/brain1_image.nii.gz";
    let Some(path) = shared_data(relative) else {
        return;
    };
    let reference = &monai_reference("pipeline.json")[relative];
    let input = read_nifti(&path);

    // The resampled values agree to float32 precision (values up to about 3000).
    let (ras, _) = to_ras(&input);
    let spaced = resample_to_spacing(&ras, [1.0; 3], Interp::Linear).unwrap();
    let spacing_reference = &reference["spacing"];
    assert_eq!(spaced.shape(), json_index(&spacing_reference["shape"]));
    assert!(
        spaced
            .affine
            .max_abs_diff(&json_affine(&spacing_reference["affine"]))
            < 1e-9
    );
    assert_samples_match(&spaced, &spacing_reference["samples"], 1e-3, "resampled");

    // Only the final grid is compared: MONAI's float64 grid arithmetic leaves values
    // near 1e-13 in background voxels whose exact interpolated value is 0, and its
    // non-zero z-score counts them as foreground, which shifts every z-score.
    let (out, applied) = PreprocessOptions::prism_default()
        .apply(input.clone())
        .unwrap();
    let final_reference = &reference["final"];
    assert_eq!(out.shape(), json_index(&final_reference["shape"]));
    assert!(
        out.affine
            .max_abs_diff(&json_affine(&final_reference["affine"]))
            < 1e-9
    );

    let back = applied
        .to_input_grid_labels(&out.data.mapv(|v| (v != 0.0) as u8 as f32))
        .unwrap();
    assert_eq!(back.shape(), input.shape());
    assert_eq!(back.affine, input.affine);
}
