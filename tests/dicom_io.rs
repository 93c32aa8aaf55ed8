//! DICOM input (`prism::io::dicom`): series grouping, slice order, geometry and
//! voxel values against the values the synthetic series were written with and
//! against dcm2niix's conversions, plus the errors for broken inputs.
//!
//! In-repo fixtures: `tests/data/dicom/MR_small*.dcm`, one 64x64 MR image in five
//! encodings (pydicom 3.0.2 test files, MIT) and in JPEG baseline, JPEG lossless
//! and JPEG-LS versions made from it by `make_jpeg.py`, and `siemens_dti_mosaic_0.dcm`, a
//! Siemens DTI b0 mosaic (nibabel 5.4.2 test data, MIT). Series tests read the shared MRI test
//! set (`../shared/data` next to the repository, or `$PRISM_SHARED_DIR/data`) and
//! are skipped with a note when it is absent.
//!
//! Where the toolkit and dcm2niix differ:
//! - dcm2niix flips the row axis (and may reorder axes) before writing, so its
//!   voxel array is a flipped view of ours; the tests compare in world space by
//!   mapping every voxel of ours through both affines into dcm2niix's index space.
//! - dcm2niix stores the affine in float32, so affines agree to about 1e-4 mm.
//! - For an enhanced image without orientation both write the same placeholder
//!   grid (sform and qform codes 0) with a warning.
//! - The Siemens mosaic test file is 256 x 256 pixels, not a whole number of its
//!   7 x 7 tiles of 36 x 36; the toolkit cuts the tiles where dcm2niix does.
//! - dcm2niix writes Manufacturer as a normalized vendor name, the toolkit the DICOM value.

use std::path::{Path, PathBuf};

use prism::io::dicom::{
    load_series, read_sidecar, scan_files, scan_folder, write_sidecar, DicomOptions, DicomSeries,
};
use prism::{Affine, Volume};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dicom").join(name)
}

/// `data/` of the shared MRI test set, if present.
fn shared_data() -> Option<PathBuf> {
    let root = match std::env::var_os("PRISM_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    };
    let data = root.join("data");
    if data.join("reference/dcm2niix.json").is_file() {
        Some(data)
    } else {
        eprintln!("skipped: shared MRI test data not found at {}", data.display());
        None
    }
}

fn dcm2niix_reference(data: &Path) -> Value {
    let text = std::fs::read_to_string(data.join("reference/dcm2niix.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn matrix(value: &Value) -> Affine {
    let mut m = [[0.0; 4]; 4];
    for (r, row) in m.iter_mut().enumerate() {
        for (c, cell) in row.iter_mut().enumerate() {
            *cell = value[r][c].as_f64().unwrap();
        }
    }
    Affine(m)
}

fn only_series(path: &Path) -> DicomSeries {
    let scan = scan_files(&[path.to_path_buf()]);
    assert!(scan.unreadable.is_empty(), "{:?}", scan.unreadable);
    assert_eq!(scan.series.len(), 1, "{}", path.display());
    scan.series.into_iter().next().unwrap()
}

/// Loads a series that must hold exactly one volume.
fn load(series: &DicomSeries) -> (Volume, prism::io::dicom::SeriesInfo) {
    let (mut volumes, info) = load_series(series, &DicomOptions::default()).unwrap();
    assert_eq!(volumes.len(), 1, "{}", series.id);
    (volumes.remove(0), info)
}

/// Maps every voxel of `ours` into `theirs` through the two affines and returns
/// the largest value difference. Panics when the grids do not coincide (the
/// index map is not an integer permutation with flips, within 1e-3 voxels).
fn max_difference_in_world(ours: &Volume, theirs: &Volume) -> f64 {
    let map = theirs.affine.inverse().unwrap().compose(&ours.affine);
    let shape = ours.shape();
    for r in 0..3 {
        for c in 0..4 {
            // A single-slice axis has no spacing to agree on.
            if c < 3 && shape[c] == 1 {
                continue;
            }
            let v = map.0[r][c];
            assert!((v - v.round()).abs() < 1e-3, "index map not integral: {:?}", map.0);
        }
    }

    let mut max = 0.0f64;
    for ((i, j, k), &value) in ours.data.indexed_iter() {
        let p = map.apply([i as f64, j as f64, k as f64]);
        let index = p.map(|x| x.round() as usize);
        let other = theirs.data[[index[0], index[1], index[2]]];
        max = max.max((f64::from(value) - f64::from(other)).abs());
    }
    max
}

// ---------------------------------------------------------------- single images

#[test]
fn single_image_encodings_decode_equal() {
    let reference = load(&only_series(&fixture("MR_small.dcm"))).0;
    for name in [
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
    ] {
        let (volume, _) = load(&only_series(&fixture(name)));
        assert_eq!(volume.shape(), [64, 64, 1], "{name}");
        assert!(volume.affine.max_abs_diff(&reference.affine) < 1e-9, "{name}");
        assert_eq!(volume.data, reference.data, "{name}");
    }
}

/// Asserts that `volume` has the shape and affine of `MR_small.dcm`. The JPEG and
/// JPEG-LS files keep its header because `make_jpeg.py` replaced only their pixel data.
fn assert_geometry_of_mr_small(volume: &Volume, name: &str) {
    let reference = load(&only_series(&fixture("MR_small.dcm"))).0;
    assert_eq!(volume.shape(), reference.shape(), "{name}");
    assert!(volume.affine.max_abs_diff(&reference.affine) < 1e-9, "{name}");
}

#[test]
fn jpeg_lossless_decodes_exactly() {
    let reference = load(&only_series(&fixture("MR_small.dcm"))).0;
    // 1.2.840.10008.1.2.4.70 (predictor 1) and 1.2.840.10008.1.2.4.57 (predictor 6).
    for name in ["MR_small_jpeg_lossless_sv1.dcm", "MR_small_jpeg_lossless_p6.dcm"] {
        let (volume, _) = load(&only_series(&fixture(name)));
        assert_geometry_of_mr_small(&volume, name);
        assert_eq!(volume.data, reference.data, "{name}");
    }
}

#[test]
fn jpeg_baseline_matches_pillow_within_one() {
    let name = "MR_small_jpeg_baseline.dcm";
    let (volume, _) = load(&only_series(&fixture(name)));
    assert_geometry_of_mr_small(&volume, name);

    let text = std::fs::read_to_string(fixture("MR_small_jpeg_baseline.json")).unwrap();
    let expected: Value = serde_json::from_str(&text).unwrap();
    let columns = expected["columns"].as_u64().unwrap() as usize;
    let values = expected["decoded_values"].as_array().unwrap();
    assert_eq!(values.len(), volume.data.len());

    // Lossy JPEG decoders compute the inverse DCT with their own integer
    // approximations, so their outputs may differ by one grey level.
    // jpeg-decoder 0.3.2 differs from Pillow (libjpeg-turbo) on 96 of these 4096
    // pixels, and pylibjpeg-libjpeg on 152 (make_jpeg.py prints the latter).
    let mut max_difference = 0.0f32;
    for (index, value) in values.iter().enumerate() {
        let (row, column) = (index / columns, index % columns);
        let ours = volume.data[[column, row, 0]];
        max_difference = max_difference.max((ours - value.as_f64().unwrap() as f32).abs());
    }
    assert!(max_difference <= 1.0, "largest difference from Pillow: {max_difference}");
}

#[cfg(not(feature = "jpegls"))]
#[test]
fn jpeg_ls_without_feature_names_file_and_fix() {
    let series = only_series(&fixture("MR_small_jpegls.dcm"));
    let message = load_series(&series, &DicomOptions::default()).unwrap_err().to_string();
    assert!(message.contains("MR_small_jpegls.dcm"), "{message}");
    assert!(message.contains("1.2.840.10008.1.2.4.80"), "{message}");
    assert!(message.contains("--features jpegls"), "{message}");
    assert!(message.contains("dcm2niix"), "{message}");
    assert!(!message.contains('\n'), "{message}");
}

#[cfg(feature = "jpegls")]
#[test]
fn jpeg_ls_decodes_exactly() {
    let name = "MR_small_jpegls.dcm";
    let reference = load(&only_series(&fixture("MR_small.dcm"))).0;
    let (volume, _) = load(&only_series(&fixture(name)));
    assert_geometry_of_mr_small(&volume, name);
    assert_eq!(volume.data, reference.data);
}

#[test]
fn single_image_matches_dcm2niix() {
    let Some(data) = shared_data() else { return };
    for name in [
        "MR_small.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
    ] {
        let (ours, _) = load(&only_series(&data.join("dicom/single").join(name)));
        let out = data.join("reference/dcm2niix/dicom/single").join(name).join("1_.nii.gz");
        let (theirs, _) = prism::io::load_volume(&out, None).unwrap();
        assert_eq!(max_difference_in_world(&ours, &theirs), 0.0, "{name}");
    }
}

#[test]
fn single_image_metadata_matches_dcm2niix_sidecar() {
    let Some(data) = shared_data() else { return };
    let (_, info) = load(&only_series(&fixture("MR_small.dcm")));
    let sidecar = data.join("reference/dcm2niix/dicom/single/MR_small.dcm/1_.json");
    let theirs = read_sidecar(&sidecar).unwrap();
    let meta = &info.metadata;
    assert_eq!(meta.repetition_time, theirs.repetition_time);
    assert_eq!(meta.echo_time, theirs.echo_time);
    assert_eq!(meta.flip_angle, theirs.flip_angle);
    // dcm2niix rewrites Manufacturer to a vendor name ("Toshiba"); the toolkit keeps the DICOM value.
    assert_eq!(meta.manufacturer.as_deref(), Some("TOSHIBA_MEC"));
    assert_eq!(meta.manufacturers_model_name, theirs.manufacturers_model_name);
    assert_eq!(meta.scanning_sequence, theirs.scanning_sequence);
    assert_eq!(meta.image_orientation_patient_dicom, theirs.image_orientation_patient_dicom);
    assert_eq!(meta.acquisition_plane.as_deref(), Some("axial"));
}

#[test]
fn sidecar_round_trips_without_patient_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (_, info) = load(&only_series(&fixture("MR_small.dcm")));
    let path = dir.path().join("series.json");
    write_sidecar(&path, &info.metadata).unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("PatientName"), "{text}");
    assert!(!text.contains("PatientID"), "{text}");
    assert!(text.contains("\"RepetitionTime\""), "{text}");
    assert_eq!(read_sidecar(&path).unwrap(), info.metadata);
}

#[test]
fn sidecar_has_patient_fields_on_request() {
    let series = only_series(&fixture("MR_small.dcm"));
    let options = DicomOptions { include_patient: true, ..Default::default() };
    let (_, info) = load_series(&series, &options).unwrap();
    let patient = info.metadata.patient.unwrap();
    assert!(patient.patient_name.is_some());
    assert!(patient.patient_id.is_some());
}

// ---------------------------------------------------------------- synthetic series

/// Loads every series of `folder` and checks it against `truth_series`: shape,
/// affine, the sampled voxels and the sum and non-zero count of all voxels.
fn check_synthetic_folder(folder: &str) {
    let Some(data) = shared_data() else { return };
    let reference = dcm2niix_reference(&data);
    let truths = reference["inputs"][folder]["truth_series"].as_array().unwrap();
    let scan = scan_folder(&data.join(folder)).unwrap();
    assert!(scan.unreadable.is_empty(), "{:?}", scan.unreadable);
    assert_eq!(scan.series.len(), truths.len(), "{folder}");

    for truth in truths {
        let uid = truth["series_instance_uid"].as_str().unwrap();
        let series = scan.series.iter().find(|s| s.series_uid == uid).unwrap();
        let (volume, info) = load(series);
        let shape: Vec<usize> = truth["shape_ijk"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(volume.shape().to_vec(), shape, "{uid}");
        let affine_error = volume.affine.max_abs_diff(&matrix(&truth["affine_ras"]));
        assert!(affine_error < 1e-3, "{uid}: affine differs by {affine_error}");
        assert_eq!(info.file_count, truth["n_files"].as_u64().unwrap() as usize);

        for sample in truth["samples"].as_array().unwrap() {
            let index: Vec<usize> = sample["index"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            let expected = sample["value"].as_f64().unwrap();
            assert_eq!(f64::from(volume.data[[index[0], index[1], index[2]]]), expected, "{uid} at {index:?}");
        }
        let stats = &truth["real_world_stats_present_slices"];
        let sum: f64 = volume.data.iter().map(|&v| f64::from(v)).sum();
        assert_eq!(sum, stats["sum"].as_f64().unwrap(), "{uid}");
        let nonzero = volume.data.iter().filter(|&&v| v != 0.0).count();
        assert_eq!(nonzero as u64, stats["n_nonzero"].as_u64().unwrap(), "{uid}");
    }
}

#[test]
fn axial_series_matches_truth() {
    check_synthetic_folder("dicom/series_axial_t1");
}

#[test]
fn oblique_series_matches_truth() {
    check_synthetic_folder("dicom/series_oblique_t1");
}

#[test]
fn two_series_in_one_folder_match_truth() {
    check_synthetic_folder("dicom/series_two_in_one_dir");
}

#[test]
fn two_series_in_one_folder_get_ids() {
    let Some(data) = shared_data() else { return };
    let scan = scan_folder(&data.join("dicom/series_two_in_one_dir")).unwrap();
    let mut ids: Vec<&str> = scan.series.iter().map(|s| s.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["4_SYNTH_T1_SAG_colin", "5_SYNTH_T1_SAG_mni"]);
}

#[test]
fn synthetic_series_match_dcm2niix() {
    let Some(data) = shared_data() else { return };
    let cases = [
        ("dicom/series_axial_t1", "2_SYNTH_T1_AX_1.2mm"),
        ("dicom/series_oblique_t1", "3_SYNTH_T1_OBL_1.5mm_gap"),
        ("dicom/series_two_in_one_dir", "4_SYNTH_T1_SAG_colin"),
        ("dicom/series_two_in_one_dir", "5_SYNTH_T1_SAG_mni"),
    ];
    for (folder, id) in cases {
        let scan = scan_folder(&data.join(folder)).unwrap();
        let series = scan.series.iter().find(|s| s.id == id).unwrap();
        let (ours, _) = load(series);
        let out = data.join("reference/dcm2niix").join(folder).join(format!("{id}.nii.gz"));
        let (theirs, _) = prism::io::load_volume(&out, None).unwrap();
        assert_eq!(max_difference_in_world(&ours, &theirs), 0.0, "{id}");
    }
}

#[test]
fn series_metadata_names_plane_and_family() {
    let Some(data) = shared_data() else { return };
    let cases = [
        ("dicom/series_axial_t1", "axial"),
        ("dicom/series_oblique_t1", "axial"),
        ("dicom/series_two_in_one_dir", "sagittal"),
    ];
    for (folder, plane) in cases {
        let scan = scan_folder(&data.join(folder)).unwrap();
        let (_, info) = load(&scan.series[0]);
        assert_eq!(info.metadata.acquisition_plane.as_deref(), Some(plane), "{folder}");
        assert_eq!(info.metadata.sequence_family.as_deref(), Some("T1w"), "{folder}");
    }
}

// ---------------------------------------------------------------- missing slices

/// Copies the axial series without the slices at truth positions k = 40 and 41.
fn axial_series_with_gap(data: &Path, dir: &Path) {
    let reference = dcm2niix_reference(data);
    let truth = &reference["inputs"]["dicom/series_axial_t1"]["truth_series"][0];
    for slice in truth["slices"].as_array().unwrap() {
        let k = slice["k"].as_u64().unwrap();
        if k == 40 || k == 41 {
            continue;
        }
        let name = slice["file"].as_str().unwrap();
        std::fs::copy(data.join("dicom/series_axial_t1").join(name), dir.join(name)).unwrap();
    }
}

#[test]
fn missing_slices_name_series_and_gap() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    axial_series_with_gap(&data, dir.path());
    let scan = scan_folder(dir.path()).unwrap();
    let message = load_series(&scan.series[0], &DicomOptions::default()).unwrap_err().to_string();
    assert!(message.contains("series 2_SYNTH_T1_AX_1.2mm"), "{message}");
    assert!(message.contains("missing slices"), "{message}");
    assert!(message.contains("gap of 6.000 mm"), "{message}");
    assert!(message.contains("between slice 39"), "{message}");
}

#[test]
fn missing_slices_resample_when_allowed() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    axial_series_with_gap(&data, dir.path());
    let scan = scan_folder(dir.path()).unwrap();
    let options = DicomOptions { allow_nonuniform: true, ..Default::default() };
    let (volumes, info) = load_series(&scan.series[0], &options).unwrap();
    let volume = &volumes[0];

    let full = scan_folder(&data.join("dicom/series_axial_t1")).unwrap();
    let (complete, _) = load(&full.series[0]);
    assert_eq!(volume.shape(), complete.shape());
    assert!(volume.affine.max_abs_diff(&complete.affine) < 1e-9);
    assert_eq!(info.warnings.len(), 1);
    // Slice 40 lies a third of the way from slice 39 to slice 42.
    let (a, b) = (complete.data[[80, 96, 39]], complete.data[[80, 96, 42]]);
    let expected = a + (b - a) / 3.0;
    assert!((volume.data[[80, 96, 40]] - expected).abs() < 1e-3);
    assert_eq!(volume.data[[80, 96, 43]], complete.data[[80, 96, 43]]);
}

// ---------------------------------------------------------------- special series

/// Asserts that the grids of `ours` and `theirs` place every corner voxel of
/// `ours` at the same world point within `tolerance_mm`.
fn assert_same_grid(ours: &Volume, theirs: &Volume, tolerance_mm: f64) {
    let to_theirs = theirs.affine.inverse().unwrap();
    let [ni, nj, nk] = ours.shape();
    for corner in [[0, 0, 0], [ni - 1, 0, 0], [0, nj - 1, 0], [0, 0, nk - 1], [ni - 1, nj - 1, nk - 1]] {
        let point = ours.affine.apply(corner.map(|c| c as f64));
        let index = to_theirs.apply(point).map(f64::round);
        let other = theirs.affine.apply(index);
        let distance = (0..3).map(|d| (point[d] - other[d]).abs()).fold(0.0, f64::max);
        assert!(distance < tolerance_mm, "corner {corner:?}: {point:?} vs {other:?}");
    }
}

#[test]
fn enhanced_without_orientation_gets_placeholder_grid() {
    let Some(data) = shared_data() else { return };
    let series = only_series(&data.join("dicom/enhanced/emri_small.dcm"));
    assert_eq!(series.image_count(), 10);
    let (volume, info) = load(&series);
    assert!(info.placeholder_geometry);
    assert_eq!(info.warnings.len(), 1);
    assert!(info.warnings[0].contains("ImageOrientationPatient (0020,0037) is missing"), "{:?}", info.warnings);

    // dcm2niix writes the same grid (sform and qform codes 0, voxel sizes 1 x 1 x 1.2 mm)
    // and warns "Unable to determine spatial orientation: 0020,0037 missing".
    let reference = dcm2niix_reference(&data);
    let entry = &reference["inputs"]["dicom/enhanced/emri_small.dcm"];
    let output = &entry["outputs"][1];
    assert_eq!(output["sform_code"], 0);
    assert_eq!(output["qform_code"], 0);
    let affine_error = volume.affine.max_abs_diff(&matrix(&output["affine"]));
    assert!(affine_error < 1e-5, "affine differs by {affine_error}");

    let out = data.join("reference/dcm2niix/dicom/enhanced/emri_small.dcm/301_.nii.gz");
    let (theirs, _) = prism::io::load_volume(&out, None).unwrap();
    assert_eq!(volume.shape(), theirs.shape());
    assert_eq!(volume.data, theirs.data);
}

fn mosaic_fixture() -> PathBuf {
    fixture("siemens_dti_mosaic_0.dcm")
}

#[test]
fn mosaic_unpacks_to_48_slices() {
    let series = only_series(&mosaic_fixture());
    assert!(series.is_mosaic());
    let (volume, info) = load(&series);
    assert_eq!(volume.shape(), [36, 36, 48]);
    assert!(!info.placeholder_geometry);
    // The 256 x 256 test mosaic is not a whole number of 7 x 7 tiles of 36 x 36.
    assert!(info.warnings.iter().any(|w| w.contains("not a whole number")), "{:?}", info.warnings);
    assert_eq!(info.metadata.bvals, Some(vec![0.0]));
    assert_eq!(info.metadata.bvecs, Some(vec![[0.0, 0.0, 0.0]]));
}

#[test]
fn mosaic_affine_matches_nibabel() {
    // nibabel 5.4.2 MosaicWrapper.affine for this file: LPS, voxel axes (row, column, slice).
    let lps = [
        [0.0, 1.796875, 0.0, -607.8571428571429],
        [1.79684984375, 0.0, 0.015708, -627.8790218571429],
        [-0.0094084375, 0.0, 2.9999580000000003, -76.129881],
    ];
    // Ours is RAS with voxel axes (column, row, slice): swap the first two columns, negate x and y.
    let mut expected = [[0.0; 4]; 4];
    for r in 0..3 {
        let flip = if r < 2 { -1.0 } else { 1.0 };
        expected[r] = [flip * lps[r][1], flip * lps[r][0], flip * lps[r][2], flip * lps[r][3]];
    }
    expected[3][3] = 1.0;
    let (volume, _) = load(&only_series(&mosaic_fixture()));
    let error = volume.affine.max_abs_diff(&Affine(expected));
    assert!(error < 1e-3, "affine differs by {error}: {:?}", volume.affine.0);
}

#[test]
fn mosaic_matches_dcm2niix() {
    let Some(data) = shared_data() else { return };
    let (ours, _) = load(&only_series(&mosaic_fixture()));
    let out = data.join("reference/dcm2niix/dicom/siemens_dti_mosaic/0.dcm/12_CBU_DTI_64D_1A.nii.gz");
    let (theirs, _) = prism::io::load_volume(&out, None).unwrap();
    assert_same_grid(&ours, &theirs, 1e-3);
    assert_eq!(max_difference_in_world(&ours, &theirs), 0.0);
}

// ---------------------------------------------------------------- broken inputs

fn edited_copy(dir: &Path, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(fixture("MR_small.dcm")).unwrap();
    edit(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn replace_once(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let at = bytes.windows(from.len()).position(|w| w == from).expect("pattern in file");
    bytes[at..at + to.len()].copy_from_slice(to);
}

#[test]
fn folder_skips_non_dicom_and_dicomdir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("MR_small.dcm"), dir.path().join("image")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
    std::fs::copy(fixture("MR_small_RLE.dcm"), dir.path().join("DICOMDIR")).unwrap();
    let scan = scan_folder(dir.path()).unwrap();
    assert!(scan.unreadable.is_empty(), "{:?}", scan.unreadable);
    assert_eq!(scan.series.len(), 1);
    assert_eq!(scan.series[0].files.len(), 1);
}

#[test]
fn truncated_header_names_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = edited_copy(dir.path(), "cut.dcm", |b| b.truncate(400));
    let scan = scan_files(&[path]);
    assert_eq!(scan.unreadable.len(), 1);
    let message = scan.unreadable[0].to_string();
    assert!(message.contains("cut.dcm"), "{message}");
    assert!(message.contains("invalid DICOM file"), "{message}");
}

#[test]
fn short_pixel_data_names_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = edited_copy(dir.path(), "short.dcm", |b| b.truncate(b.len() - 1000));
    let series = only_series(&path);
    let message = load_series(&series, &DicomOptions::default()).unwrap_err().to_string();
    assert!(message.contains("short.dcm"), "{message}");
}

#[test]
fn missing_orientation_names_file() {
    let dir = tempfile::tempdir().unwrap();
    // Renumber (0020,0037) ImageOrientationPatient to the unused (0020,0038).
    let path = edited_copy(dir.path(), "no_iop.dcm", |b| {
        replace_once(b, &[0x20, 0x00, 0x37, 0x00, b'D', b'S'], &[0x20, 0x00, 0x38, 0x00, b'D', b'S'])
    });
    let series = only_series(&path);
    let message = load_series(&series, &DicomOptions::default()).unwrap_err().to_string();
    assert!(message.contains("no_iop.dcm"), "{message}");
    assert!(message.contains("ImageOrientationPatient (0020,0037) is missing"), "{message}");
}

#[test]
fn unsupported_transfer_syntax_names_file() {
    let dir = tempfile::tempdir().unwrap();
    // Explicit VR Little Endian becomes an unregistered UID of the same length.
    let path = edited_copy(dir.path(), "odd_ts.dcm", |b| {
        replace_once(b, b"1.2.840.10008.1.2.1\0", b"1.2.840.10008.1.2.7\0")
    });
    let scan = scan_files(&[path]);
    let message = match scan.series.first() {
        Some(series) => load_series(series, &DicomOptions::default()).unwrap_err().to_string(),
        None => scan.unreadable[0].to_string(),
    };
    assert!(message.contains("odd_ts.dcm"), "{message}");
    assert!(message.contains("1.2.840.10008.1.2.7"), "{message}");
}

// ---------------------------------------------------------------- inputs and prism-convert

use assert_cmd::Command;
use prism::cli::inputs::{expand_inputs, load_input, InputSource};

/// `root/scan.nii.gz` (a NIfTI file) and `root/dicom/MR_small.dcm`.
fn mixed_inputs(root: &Path) {
    let nifti = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/brain1_label.nii.gz");
    std::fs::copy(nifti, root.join("scan.nii.gz")).unwrap();
    std::fs::create_dir(root.join("dicom")).unwrap();
    std::fs::copy(fixture("MR_small.dcm"), root.join("dicom/MR_small.dcm")).unwrap();
}

#[test]
fn inputs_mix_nifti_and_dicom_series() {
    let dir = tempfile::tempdir().unwrap();
    mixed_inputs(dir.path());
    let args = vec![dir.path().display().to_string()];
    let items = expand_inputs(&args, &mut std::io::empty()).unwrap();
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["scan", "1"]);
    assert_eq!(items[0].source, InputSource::Nifti);
    assert!(matches!(items[1].source, InputSource::DicomSeries { .. }));
    assert_eq!(items[1].path, dir.path().join("dicom"));

    let volume = load_input(&items[1], None).unwrap();
    let (expected, _) = load(&only_series(&fixture("MR_small.dcm")));
    assert_eq!(volume.data, expected.data);
}

#[test]
fn inputs_accept_single_dicom_file() {
    let args = vec![fixture("MR_small_RLE.dcm").display().to_string()];
    let items = expand_inputs(&args, &mut std::io::empty()).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].id, "1");
}

fn convert() -> Command {
    Command::cargo_bin("prism-convert").unwrap()
}

#[test]
fn convert_writes_nifti_and_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    convert().arg(fixture("MR_small.dcm")).arg("-o").arg(&out).arg("-q").assert().success();

    let (written, _) = prism::io::load_volume(&out.join("1.nii.gz"), None).unwrap();
    let (expected, _) = load(&only_series(&fixture("MR_small.dcm")));
    assert_eq!(written.data, expected.data);
    assert!(written.affine.max_abs_diff(&expected.affine) < 1e-4);
    let sidecar = read_sidecar(&out.join("1.json")).unwrap();
    assert_eq!(sidecar.repetition_time, Some(4.0));
    assert_eq!(sidecar.patient, None);
}

#[test]
fn convert_template_names_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    convert()
        .arg(fixture("MR_small.dcm"))
        .args(["--template", "sub-01_{series_number}"])
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
    assert!(out.join("sub-01_1.nii.gz").is_file());
    assert!(out.join("sub-01_1.json").is_file());
}

#[test]
fn convert_rejects_unsafe_template() {
    let dir = tempfile::tempdir().unwrap();
    let output = convert()
        .arg(fixture("MR_small.dcm"))
        .args(["--template", "../{id}"])
        .arg("-o")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--template"));
}

#[test]
fn convert_keeps_existing_files_without_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    convert().arg(fixture("MR_small.dcm")).arg("-o").arg(&out).assert().success();
    let again = convert().arg(fixture("MR_small.dcm")).arg("-o").arg(&out).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("pass --overwrite"));
    convert().arg(fixture("MR_small.dcm")).arg("-o").arg(&out).arg("--overwrite").assert().success();
}

#[test]
fn convert_keep_going_converts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    edited_copy(&bad, "short.dcm", |b| b.truncate(b.len() - 1000));
    let out = dir.path().join("out");

    let output = convert()
        .arg(&bad)
        .arg(fixture("MR_small_RLE.dcm"))
        .arg("-o")
        .arg(&out)
        .arg("--keep-going")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("short.dcm"));
    assert!(out.join("1.nii.gz").is_file());
}

#[test]
fn convert_list_prints_series_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    mixed_inputs(dir.path());
    let output = convert().arg("--list").arg(dir.path().join("dicom")).output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("id,path,description,files,dims,orientation\n"), "{text}");
    assert!(text.contains(",1,64x64x1,axial"), "{text}");
}

#[test]
fn convert_two_series_folder_writes_two_files() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    convert().arg(data.join("dicom/series_two_in_one_dir")).arg("-o").arg(dir.path()).arg("-q").assert().success();
    for id in ["4_SYNTH_T1_SAG_colin", "5_SYNTH_T1_SAG_mni"] {
        let reference = data.join("reference/dcm2niix/dicom/series_two_in_one_dir").join(format!("{id}.nii.gz"));
        let (ours, _) = prism::io::load_volume(&dir.path().join(format!("{id}.nii.gz")), None).unwrap();
        let (theirs, _) = prism::io::load_volume(&reference, None).unwrap();
        assert_eq!(max_difference_in_world(&ours, &theirs), 0.0, "{id}");
    }
}

// ---------------------------------------------------------------- prism-embed --with-metadata

/// The encoder weights of `tests/data/encoder_w6`, also used by `tests/cli_embed.rs`.
fn test_weights() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/encoder_w6/encoder.safetensors")
}

#[test]
fn embed_with_metadata_adds_columns() {
    let dir = tempfile::tempdir().unwrap();
    mixed_inputs(dir.path());
    let sidecar = r#"{"RepetitionTime": 2.3, "EchoTime": 0.003, "FlipAngle": 8,
        "ImageOrientationPatientDICOM": [0, 1, 0, 0, 0, -1], "SeriesDescription": "mprage"}"#;
    std::fs::write(dir.path().join("scan.json"), sidecar).unwrap();

    let output = Command::cargo_bin("prism-embed")
        .unwrap()
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("SLURM_ARRAY_TASK_COUNT")
        .env_remove("SLURM_ARRAY_TASK_MIN")
        .arg("--weights")
        .arg(test_weights())
        .args(["--spacing", "4", "--threads", "2", "--with-metadata"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').take(7).collect()).collect();
    assert_eq!(
        lines[0],
        ["id", "path", "repetition_time_s", "echo_time_s", "flip_angle_deg", "acquisition_plane", "sequence_family"]
    );
    assert_eq!(lines[1][2..], ["2.3", "0.003", "8", "sagittal", "T1w"]);
    assert_eq!(lines[2][2..], ["4", "0.24", "90", "axial", "T2w"]);
}
