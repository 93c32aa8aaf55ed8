//! `prism-convert` and `prism-embed` over every folder of the shared DICOM test set
//! (`../shared/data/dicom`, or `$PRISM_SHARED_DIR/data/dicom`; skipped with a note
//! when absent): single images, an enhanced MR image without orientation, a Siemens
//! mosaic and three synthetic series.
//!
//! prism-convert must write one NIfTI file per series that dcm2niix v1.0.20260724
//! wrote (`reference/dcm2niix/...`, the same name without dcm2niix's trailing `_`),
//! with every voxel equal at the same world position, and the same `.bval`/`.bvec`
//! text. prism-embed must give one row per series, equal to its row for the NIfTI
//! file prism-convert wrote (`--preprocess none`, so the rows compare the voxels
//! without resampling).

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use prism::Volume;

const FOLDERS: [&str; 6] = [
    "single",
    "enhanced",
    "siemens_dti_mosaic",
    "series_axial_t1",
    "series_oblique_t1",
    "series_two_in_one_dir",
];

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

/// Every file below `dir` whose name ends in `suffix`, sorted.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_ending(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// Maps every voxel of `ours` into `theirs` through the two affines (which must
/// give an integer index map within 1e-3 voxels) and returns the largest value difference.
fn max_difference_in_world(ours: &Volume, theirs: &Volume) -> f64 {
    let map = theirs.affine.inverse().unwrap().compose(&ours.affine);
    for row in &map.0[..3] {
        for v in row {
            assert!((v - v.round()).abs() < 1e-3, "index map not integral: {:?}", map.0);
        }
    }
    let mut max = 0.0f64;
    for ((i, j, k), &value) in ours.data.indexed_iter() {
        let p = map.apply([i as f64, j as f64, k as f64]).map(|x| x.round() as usize);
        max = max.max((f64::from(value) - f64::from(theirs.data[[p[0], p[1], p[2]]])).abs());
    }
    max
}

fn convert(input: &Path, out: &Path) {
    let output = Command::cargo_bin("prism-convert").unwrap().arg(input).arg("-o").arg(out).output().unwrap();
    assert!(output.status.success(), "{}: {}", input.display(), String::from_utf8_lossy(&output.stderr));
}

/// The `id` and embedding fields of each row of prism-embed's CSV for `input`.
fn embed_rows(input: &Path) -> Vec<(String, Vec<String>)> {
    let output = Command::cargo_bin("prism-embed")
        .unwrap()
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("SLURM_ARRAY_TASK_COUNT")
        .env_remove("SLURM_ARRAY_TASK_MIN")
        .arg("--weights")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/encoder_w6/encoder.safetensors"))
        .args(["--preprocess", "none", "--threads", "2"])
        .arg(input)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}: {}", input.display(), String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            (fields[0].to_string(), fields[2..].iter().map(|f| f.to_string()).collect())
        })
        .collect()
}

#[test]
fn convert_matches_dcm2niix_for_every_folder() {
    let Some(data) = shared_data() else { return };
    for folder in FOLDERS {
        let out = tempfile::tempdir().unwrap();
        convert(&data.join("dicom").join(folder), out.path());
        let references = files_ending(&data.join("reference/dcm2niix/dicom").join(folder), ".nii.gz");
        assert!(!references.is_empty(), "{folder}");

        let mut names: Vec<String> = Vec::new();
        for reference in &references {
            let file = reference.file_name().unwrap().to_string_lossy().into_owned();
            let name = file.trim_end_matches(".nii.gz").trim_end_matches('_').to_string();
            let (theirs, _) = prism::io::load_volume(reference, None).unwrap();
            let (ours, _) = prism::io::load_volume(&out.path().join(format!("{name}.nii.gz")), None).unwrap();
            assert_eq!(max_difference_in_world(&ours, &theirs), 0.0, "{folder}/{name}");

            for extension in ["bval", "bvec"] {
                let theirs = reference.with_file_name(file.replace(".nii.gz", &format!(".{extension}")));
                let ours = out.path().join(format!("{name}.{extension}"));
                assert_eq!(ours.is_file(), theirs.is_file(), "{folder}/{name}.{extension}");
                if theirs.is_file() {
                    let (ours, theirs) = (std::fs::read_to_string(ours).unwrap(), std::fs::read_to_string(theirs).unwrap());
                    assert_eq!(ours, theirs, "{folder}/{name}.{extension}");
                }
            }
            names.push(name);
        }
        names.sort();
        names.dedup();
        assert_eq!(files_ending(out.path(), ".nii.gz").len(), names.len(), "{folder}");
    }
}

#[test]
fn embed_rows_match_converted_nifti_for_every_folder() {
    let Some(data) = shared_data() else { return };
    for folder in FOLDERS {
        let out = tempfile::tempdir().unwrap();
        let input = data.join("dicom").join(folder);
        convert(&input, out.path());
        let from_dicom = embed_rows(&input);
        let from_nifti = embed_rows(out.path());
        assert_eq!(from_dicom.len(), files_ending(out.path(), ".nii.gz").len(), "{folder}");
        assert_eq!(from_dicom.len(), from_nifti.len(), "{folder}");
        for ((dicom_id, dicom_values), (nifti_id, nifti_values)) in from_dicom.iter().zip(&from_nifti) {
            assert_eq!(dicom_values, nifti_values, "{folder}: {dicom_id} and {nifti_id}");
        }
    }
}
