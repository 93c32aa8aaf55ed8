//! `prism-seg predict` end to end on real scans, as a batch job would run it.
//!
//! Runs use the SwinUNETR reference network (feature size 12, four classes) with `--spacing 4`,
//! which keeps the MNI152 T1 to one 64³ window. Its logits carry no anatomy, so the tests check
//! behaviour: grids, files, rows, resumption and errors. The 26 MB network is read from the
//! shared reference data beside the repository. Where it is absent, the tests that need it print
//! a note and pass.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use prism::io::load_volume;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn model() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/swinunetr_f12/swinunetr_state_dict.pt");
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipped: {} is absent", path.display());
        None
    }
}

/// `prism-seg predict -m MODEL -d OUT --spacing 4 --roi 64 ARGS…`, SLURM variables cleared.
fn predict(model: &Path, out: &Path) -> Command {
    let mut cmd = Command::cargo_bin("prism-seg").unwrap();
    cmd.arg("predict").arg("-m").arg(model).arg("-d").arg(out);
    cmd.args(["--spacing", "4", "--roi", "64", "--threads", "2"]);
    for var in ["SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "PRISM_SEG_MODEL"] {
        cmd.env_remove(var);
    }
    cmd
}

fn scan() -> PathBuf {
    data("mni152_2009a_t1.nii.gz")
}

#[test]
fn predict_writes_label_map_on_input_grid() {
    let Some(model) = model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = predict(&model, dir.path()).arg(scan()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let (input, _) = load_volume(&scan(), None).unwrap();
    let (labels, header) = load_volume(&dir.path().join("mni152_2009a_t1.nii.gz"), None).unwrap();
    assert_eq!(labels.shape(), input.shape());
    assert_eq!(labels.affine, input.affine);
    assert_eq!(header.datatype_name(), "uint8");
    assert!(labels.data.iter().all(|&v| (0.0..4.0).contains(&v)));
    assert!(labels.data.iter().all(|&v| v.fract() == 0.0));
}

#[test]
fn predict_row_gives_label_volumes_in_mm3() {
    let Some(model) = model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = predict(&model, dir.path()).arg(scan()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0], ["id", "path", "label_map", "label_1_mm3", "label_2_mm3", "label_3_mm3"]);
    assert_eq!(rows.len(), 2);

    // Recount from the written map: 1 mm voxels, so mm³ = voxel count.
    let (labels, _) = load_volume(&dir.path().join("mni152_2009a_t1.nii.gz"), None).unwrap();
    for k in 1..4 {
        let count = labels.data.iter().filter(|&&v| v == k as f32).count() as f64;
        let reported: f64 = rows[1][2 + k].parse().unwrap();
        assert_eq!(reported, count, "label {k}");
    }
}

#[test]
fn predict_resumes_from_csv_and_reuses_label_maps() {
    let Some(model) = model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("volumes.csv");
    let first = predict(&model, dir.path()).arg(scan()).arg("-o").arg(&csv).output().unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let written = std::fs::read_to_string(&csv).unwrap();

    let again = predict(&model, dir.path()).arg(scan()).arg("-o").arg(&csv).output().unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("skipped"), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), written);

    // Without the CSV, the finished label map is read back instead of segmenting again.
    let rerun = predict(&model, dir.path()).arg(scan()).output().unwrap();
    assert!(rerun.status.success());
    assert!(String::from_utf8_lossy(&rerun.stderr).contains("reusing"));
    let row = String::from_utf8(rerun.stdout).unwrap();
    assert_eq!(row.lines().nth(1), written.lines().nth(1));
}

#[test]
fn predict_keeps_going_past_unreadable_scan() {
    let Some(model) = model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.nii.gz");
    std::fs::write(&bad, "not a NIfTI file").unwrap();
    let out_dir = dir.path().join("labels");
    let out = predict(&model, &out_dir).arg(&bad).arg(scan()).arg("--keep-going").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.nii.gz"), "{stderr}");
    assert!(out_dir.join("mni152_2009a_t1.nii.gz").exists());
    assert!(!out_dir.join("broken.nii.gz").exists());
}

#[test]
fn predict_qc_picture_is_a_png() {
    let Some(model) = model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = predict(&model, dir.path()).arg(scan()).arg("--qc").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = std::fs::File::open(dir.path().join("mni152_2009a_t1_qc.png")).unwrap();
    let reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().unwrap();
    let info = reader.info();
    // Axial (197 wide) + coronal (197) + sagittal (233) panels at 1 mm per pixel.
    assert_eq!(info.width, 197 + 197 + 233);
    assert_eq!(info.height, 233.max(189));
}

#[test]
fn predict_rejects_encoder_only_weights() {
    let dir = tempfile::tempdir().unwrap();
    let encoder = data("encoder_w6/encoder.safetensors");
    let out = predict(&encoder, dir.path()).arg(scan()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("out.conv.conv.weight"));
}

#[test]
fn predict_rejects_roi_not_multiple_of_32() {
    let dir = tempfile::tempdir().unwrap();
    let encoder = data("encoder_w6/encoder.safetensors");
    let out = predict(&encoder, dir.path()).arg(scan()).args(["--roi", "50"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--roi"));
}

#[test]
fn predict_probabilities_are_one_4d_file() {
    let Some(model) = model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = predict(&model, dir.path()).arg(scan()).arg("--probabilities").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = dir.path().join("mni152_2009a_t1_prob.nii.gz");
    let header = prism::io::read_header(&path).unwrap();
    assert_eq!(header.n_volumes(), 4);
    let (input, _) = load_volume(&scan(), None).unwrap();
    let (background, _) = load_volume(&path, Some(0)).unwrap();
    assert_eq!(background.shape(), input.shape());
    assert_eq!(background.affine, input.affine);
}

#[test]
fn predict_names_volume_columns_from_label_table() {
    let Some(model) = model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("labels.csv");
    std::fs::write(&table, "id,name\n1,CSF\n2,Grey matter\n3,White matter\n").unwrap();
    let out = predict(&model, dir.path()).arg(scan()).arg("--labels").arg(&table).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = String::from_utf8(out.stdout).unwrap();
    assert_eq!(csv.lines().next(), Some("id,path,label_map,csf_mm3,grey_matter_mm3,white_matter_mm3"));
}

#[test]
fn predict_names_outputs_from_template() {
    let Some(model) = model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = predict(&model, dir.path()).arg(scan()).args(["--template", "{id}_seg", "--qc"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.path().join("mni152_2009a_t1_seg.nii.gz").exists());
    assert!(dir.path().join("mni152_2009a_t1_seg_qc.png").exists());
}

#[test]
fn predict_rejects_template_leaving_out_dir() {
    let dir = tempfile::tempdir().unwrap();
    let encoder = data("encoder_w6/encoder.safetensors");
    for template in ["../{id}", "seg", "{id}/x"] {
        let out = predict(&encoder, dir.path()).arg(scan()).args(["--template", template]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{template}");
    }
}

#[test]
fn predict_takes_dicom_series_folder() {
    let Some(model) = model() else { return };
    let series = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/dicom/series_axial_t1");
    if !series.exists() {
        eprintln!("skipped: {} is absent", series.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = predict(&model, dir.path()).arg(&series).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 2, "{csv}");

    // The label map has the series' grid: 160 columns, 192 rows, 80 slices.
    let id = rows[1].split(',').next().unwrap();
    let (labels, _) = load_volume(&dir.path().join(format!("{id}.nii.gz")), None).unwrap();
    assert_eq!(labels.shape(), [160, 192, 80]);
}
