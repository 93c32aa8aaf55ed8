//! Tests of the segmentation metrics and of `prism-seg eval` on real label maps:
//! crops of the AAL atlas (1 mm) and of a lesion mask (0.78x0.78x6.5 mm) with
//! perturbed predictions. Dice and HD95 are compared with MONAI 1.4.0's values in
//! `tests/data/seg_metrics/expected.json` (made by `make_reference.py` there);
//! the empty-mask cases are checked against the documented definitions.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ndarray::Array3;
use serde_json::Value;

use prism::cli::progress::Reporter;
use prism::cli::seg_eval::{
    load_label_map, pair_cases, read_label_table, run, summarize_labels, CaseMetrics, EvalArgs,
    SpacingFrom, COLUMNS,
};
use prism::io::{write_volume, WriteOptions};
use prism::seg::metrics::{evaluate_labels, hausdorff_percentile_mm, LabelMetrics, LabelStatus};
use prism::Volume;

/// Relative tolerance against MONAI, which computes in float32.
const TOLERANCE: f64 = 1e-4;

// ---------------------------------------------------------------- helpers

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/seg_metrics")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(data_dir().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn expected_case(name: &str) -> Value {
    expected()["cases"][name].clone()
}

fn load_case(name: &str) -> (Array3<u32>, Array3<u32>, [f64; 3]) {
    let file = format!("{name}.nii.gz");
    let (pred, _) = load_label_map(&data_dir().join("pred").join(&file)).unwrap();
    let (reference, affine) = load_label_map(&data_dir().join("ref").join(&file)).unwrap();
    (pred, reference, affine.spacing())
}

fn evaluate_case(name: &str, labels: &[u32]) -> Vec<LabelMetrics> {
    let (pred, reference, spacing) = load_case(name);
    evaluate_labels(pred.view(), reference.view(), spacing, labels).unwrap()
}

fn relative_error(actual: f64, expected: f64) -> f64 {
    (actual - expected).abs() / expected.abs().max(1e-12)
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    let error = if expected == 0.0 {
        actual.abs()
    } else {
        relative_error(actual, expected)
    };
    assert!(
        error <= TOLERANCE,
        "{what}: {actual} vs expected {expected}"
    );
}

/// Checks every label of a case against MONAI's Dice and HD95 and numpy's counts.
fn check_case_against_monai(name: &str) {
    let case = expected_case(name);
    let rows = case["labels"].as_array().unwrap();
    let labels: Vec<u32> = rows
        .iter()
        .map(|r| r["label"].as_u64().unwrap() as u32)
        .collect();
    let spacing: Vec<f64> = case["spacing_mm"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let (_, _, our_spacing) = load_case(name);
    for axis in 0..3 {
        assert_close(
            our_spacing[axis],
            spacing[axis],
            &format!("{name} spacing axis {axis}"),
        );
    }

    let metrics = evaluate_case(name, &labels);
    assert_eq!(metrics.len(), rows.len());
    for (m, row) in metrics.iter().zip(rows) {
        let what = format!("{name} label {}", m.label);
        assert_eq!(m.label as u64, row["label"].as_u64().unwrap(), "{what}");
        assert_eq!(
            m.voxels_pred,
            row["voxels_pred"].as_u64().unwrap(),
            "{what} voxels_pred"
        );
        assert_eq!(
            m.voxels_ref,
            row["voxels_ref"].as_u64().unwrap(),
            "{what} voxels_ref"
        );
        assert_eq!(
            m.voxels_overlap,
            row["voxels_overlap"].as_u64().unwrap(),
            "{what} overlap"
        );
        if let Some(dice) = row.get("dice") {
            assert_eq!(m.status, LabelStatus::Ok, "{what}");
            assert_close(m.dice, dice.as_f64().unwrap(), &format!("{what} dice"));
            let hd95 = m.hd95_mm.expect("HD95 for two non-empty masks");
            assert_close(
                hd95,
                row["hd95_mm"].as_f64().unwrap(),
                &format!("{what} hd95"),
            );
        }
    }
}

/// A `Write` whose bytes the test can read after handing it to a [`Reporter`].
#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Creates temporary `pred/` and `ref/` directories with copies of the fixtures.
fn case_folders(cases: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for side in ["pred", "ref"] {
        std::fs::create_dir_all(dir.path().join(side)).unwrap();
        for case in cases {
            let file = format!("{case}.nii.gz");
            std::fs::copy(
                data_dir().join(side).join(&file),
                dir.path().join(side).join(&file),
            )
            .unwrap();
        }
    }
    dir
}

fn eval_args(dir: &Path, labels: Option<PathBuf>, keep_going: bool) -> EvalArgs {
    EvalArgs {
        pred: dir.join("pred"),
        reference: dir.join("ref"),
        labels,
        spacing_from: SpacingFrom::Ref,
        output: dir.join("metrics.csv"),
        keep_going,
        quiet: false,
        threads: None,
    }
}

fn read_csv(path: &Path) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let rows = reader
        .records()
        .map(|record| {
            header
                .iter()
                .cloned()
                .zip(record.unwrap().iter().map(String::from))
                .collect()
        })
        .collect();
    (header, rows)
}

fn find_row<'a>(
    rows: &'a [BTreeMap<String, String>],
    case: &str,
    label: u32,
) -> &'a BTreeMap<String, String> {
    rows.iter()
        .find(|r| r["case"] == case && r["label"] == label.to_string())
        .unwrap_or_else(|| panic!("no row for {case} label {label}"))
}

fn write_float_volume(path: &Path, data: Array3<f32>, affine: prism::Affine) {
    write_volume(path, &Volume::new(data, affine), &WriteOptions::default()).unwrap();
}

// ---------------------------------------------------------------- metrics against MONAI

#[test]
fn metrics_match_monai_on_atlas_crop() {
    check_case_against_monai("aal_crop");
}

#[test]
fn metrics_match_monai_on_anisotropic_lesion() {
    check_case_against_monai("lesion_crop");
}

#[test]
fn metrics_do_not_depend_on_label_order() {
    let forward = evaluate_case("aal_crop", &[18, 30, 84]);
    let backward = evaluate_case("aal_crop", &[84, 30, 18]);
    assert_eq!(forward[0], backward[2]);
    assert_eq!(forward[1], backward[1]);
    assert_eq!(forward[2], backward[0]);
}

#[test]
fn hausdorff_is_symmetric() {
    let (pred, reference, spacing) = load_case("lesion_crop");
    let p = pred.mapv(|v| v == 1);
    let r = reference.mapv(|v| v == 1);
    let forward = hausdorff_percentile_mm(p.view(), r.view(), spacing, 95.0);
    let backward = hausdorff_percentile_mm(r.view(), p.view(), spacing, 95.0);
    assert_eq!(forward, backward);
}

#[test]
fn volumes_follow_voxel_counts() {
    let metrics = &evaluate_case("lesion_crop", &[1])[0];
    let voxel_mm3 = 0.78125 * 0.78125 * 6.5;
    assert_close(
        metrics.volume_pred_mm3,
        metrics.voxels_pred as f64 * voxel_mm3,
        "pred volume",
    );
    assert_close(
        metrics.volume_ref_mm3,
        metrics.voxels_ref as f64 * voxel_mm3,
        "ref volume",
    );
    assert_close(
        metrics.volume_diff_mm3,
        (4442.0 - 4137.0) * voxel_mm3,
        "volume difference",
    );
    let percent = metrics.volume_diff_percent.unwrap();
    assert_close(
        percent,
        100.0 * (4442.0 - 4137.0) / 4137.0,
        "volume difference percent",
    );
}

#[test]
fn evaluate_rejects_shape_mismatch() {
    let a = Array3::<u32>::zeros([4, 4, 4]);
    let b = Array3::<u32>::zeros([4, 4, 5]);
    assert!(evaluate_labels(a.view(), b.view(), [1.0; 3], &[1]).is_err());
}

#[test]
fn evaluate_rejects_invalid_spacing() {
    let a = Array3::<u32>::zeros([4, 4, 4]);
    assert!(evaluate_labels(a.view(), a.view(), [1.0, 0.0, 1.0], &[1]).is_err());
    assert!(evaluate_labels(a.view(), a.view(), [1.0, f64::NAN, 1.0], &[1]).is_err());
}

// ---------------------------------------------------------------- empty masks

#[test]
fn both_empty_label_is_perfect_agreement() {
    // Label 200 occurs in neither map.
    let m = &evaluate_case("aal_crop", &[200])[0];
    assert_eq!(m.status, LabelStatus::BothEmpty);
    assert_eq!(m.dice, 1.0);
    assert_eq!(m.hd95_mm, Some(0.0));
    assert_eq!(m.volume_pred_mm3, 0.0);
    assert_eq!(m.volume_ref_mm3, 0.0);
    assert_eq!(m.volume_diff_mm3, 0.0);
    assert_eq!(m.volume_diff_percent, Some(0.0));
}

#[test]
fn pred_empty_label_has_no_distance() {
    // make_reference.py removed label 56 from the prediction.
    let m = &evaluate_case("aal_crop", &[56])[0];
    assert_eq!(m.status, LabelStatus::PredEmpty);
    assert_eq!(m.dice, 0.0);
    assert_eq!(m.hd95_mm, None);
    assert_eq!(m.voxels_ref, 1805);
    assert_eq!(m.volume_diff_mm3, -1805.0);
    assert_eq!(m.volume_diff_percent, Some(-100.0));
}

#[test]
fn ref_empty_label_has_no_distance_or_percent() {
    // make_reference.py added a block of label 116 to the prediction only.
    let m = &evaluate_case("aal_crop", &[116])[0];
    assert_eq!(m.status, LabelStatus::RefEmpty);
    assert_eq!(m.dice, 0.0);
    assert_eq!(m.hd95_mm, None);
    assert_eq!(m.voxels_pred, 180);
    assert_eq!(m.volume_diff_mm3, 180.0);
    assert_eq!(m.volume_diff_percent, None);
}

#[test]
fn no_metric_is_nan() {
    let labels: Vec<u32> = (0..=120).collect();
    for m in evaluate_case("aal_crop", &labels) {
        assert!(!m.dice.is_nan(), "label {} dice", m.label);
        assert!(
            m.hd95_mm.is_none_or(f64::is_finite),
            "label {} hd95",
            m.label
        );
        assert!(
            m.volume_diff_percent.is_none_or(f64::is_finite),
            "label {} percent",
            m.label
        );
    }
}

// ---------------------------------------------------------------- label maps and tables

#[test]
fn label_map_rejects_fractional_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probabilities.nii.gz");
    let mut data = Array3::<f32>::zeros([3, 4, 5]);
    data[[1, 2, 3]] = 0.5;
    write_float_volume(&path, data, prism::Affine::identity());
    let error = load_label_map(&path).unwrap_err().to_string();
    assert!(error.contains("[1, 2, 3]"), "{error}");
    assert!(error.contains("0.5"), "{error}");
}

#[test]
fn label_map_rejects_negative_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("negative.nii");
    let mut data = Array3::<f32>::zeros([3, 4, 5]);
    data[[0, 0, 1]] = -1.0;
    write_float_volume(&path, data, prism::Affine::identity());
    assert!(load_label_map(&path).is_err());
}

#[test]
fn label_map_rounds_float_labels() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("float_labels.nii");
    let mut data = Array3::<f32>::zeros([3, 4, 5]);
    data[[2, 3, 4]] = 41.9999;
    write_float_volume(&path, data, prism::Affine::identity());
    let (labels, _) = load_label_map(&path).unwrap();
    assert_eq!(labels[[2, 3, 4]], 42);
}

#[test]
fn label_table_reads_aal_text_format() {
    // `ID name code` lines with CRLF endings and a trailing blank line.
    let names = read_label_table(&data_dir().join("aal_colin27.txt")).unwrap();
    assert_eq!(names.len(), 116);
    assert_eq!(names[&1], "Precentral_L");
    assert_eq!(names[&116], "Vermis_10");
}

#[test]
fn label_table_reads_csv_with_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("labels.csv");
    std::fs::write(&path, "id,name\n1,\"Left, lesion\"\n2,edema\n").unwrap();
    let names = read_label_table(&path).unwrap();
    assert_eq!(names.len(), 2);
    assert_eq!(names[&1], "Left, lesion");
    assert_eq!(names[&2], "edema");
}

#[test]
fn label_table_reads_tab_separated_names_with_spaces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("labels.txt");
    std::fs::write(
        &path,
        "# id\tname\n17\tLeft Hippocampus\n53\tRight Hippocampus\n",
    )
    .unwrap();
    let names = read_label_table(&path).unwrap();
    assert_eq!(names[&17], "Left Hippocampus");
    assert_eq!(names[&53], "Right Hippocampus");
}

#[test]
fn label_table_rejects_duplicates_and_bad_ids() {
    let dir = tempfile::tempdir().unwrap();
    let duplicate = dir.path().join("duplicate.csv");
    std::fs::write(&duplicate, "1,a\n1,b\n").unwrap();
    let error = read_label_table(&duplicate).unwrap_err().to_string();
    assert!(error.contains("line 2"), "{error}");

    let bad_id = dir.path().join("bad.txt");
    std::fs::write(&bad_id, "1 a\nx b\n").unwrap();
    let error = read_label_table(&bad_id).unwrap_err().to_string();
    assert!(error.contains("line 2"), "{error}");
}

// ---------------------------------------------------------------- pairing

#[test]
fn pairing_matches_names_across_extensions() {
    let dir = tempfile::tempdir().unwrap();
    for path in [
        "pred/a.nii",
        "pred/b.nii.gz",
        "pred/extra.nii.gz",
        "ref/a.nii.gz",
        "ref/b.nii.gz",
        "ref/c.nii",
        "ref/.hidden.nii",
    ] {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }
    let pairing = pair_cases(&dir.path().join("pred"), &dir.path().join("ref")).unwrap();
    let cases: Vec<(&str, bool)> = pairing
        .cases
        .iter()
        .map(|c| (c.case.as_str(), c.pred.is_some()))
        .collect();
    assert_eq!(cases, [("a", true), ("b", true), ("c", false)]);
    assert_eq!(pairing.pred_only, [dir.path().join("pred/extra.nii.gz")]);
}

#[test]
fn pairing_rejects_two_files_of_one_case() {
    let dir = tempfile::tempdir().unwrap();
    for path in ["pred/a.nii", "pred/a.nii.gz", "ref/a.nii"] {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }
    let error = pair_cases(&dir.path().join("pred"), &dir.path().join("ref"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("a.nii.gz") && error.contains("a.nii"),
        "{error}"
    );
}

#[test]
fn pairing_takes_two_files_as_one_case() {
    let pred = data_dir().join("pred/lesion_crop.nii.gz");
    let reference = data_dir().join("ref/aal_crop.nii.gz");
    let pairing = pair_cases(&pred, &reference).unwrap();
    assert_eq!(pairing.cases.len(), 1);
    assert_eq!(pairing.cases[0].case, "lesion_crop");
}

// ---------------------------------------------------------------- prism-seg eval end to end

#[test]
fn eval_writes_rows_matching_monai() {
    let dir = case_folders(&["aal_crop", "lesion_crop"]);
    let buffer = SharedBuffer::default();
    let mut reporter = Reporter::to_writer("prism-seg", false, Box::new(buffer.clone()));
    let summary = run(&eval_args(dir.path(), None, false), &mut reporter).unwrap();
    assert_eq!(summary.done, 2);
    assert_eq!(summary.failed, 0);

    let (header, rows) = read_csv(&dir.path().join("metrics.csv"));
    assert_eq!(header, COLUMNS);
    let expected = expected();
    let mut checked = 0;
    for (case, value) in expected["cases"].as_object().unwrap() {
        for label in value["labels"].as_array().unwrap() {
            let id = label["label"].as_u64().unwrap() as u32;
            if id == 0 {
                assert!(
                    rows.iter()
                        .all(|r| !(r["case"] == *case && r["label"] == "0")),
                    "background row"
                );
                continue;
            }
            let row = find_row(&rows, case, id);
            if let Some(dice) = label.get("dice") {
                assert_close(
                    row["dice"].parse().unwrap(),
                    dice.as_f64().unwrap(),
                    &format!("{case} {id} dice"),
                );
                let hd95 = label["hd95_mm"].as_f64().unwrap();
                assert_close(
                    row["hd95_mm"].parse().unwrap(),
                    hd95,
                    &format!("{case} {id} hd95"),
                );
                assert_eq!(row["status"], "ok");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 19);
    assert_eq!(find_row(&rows, "aal_crop", 56)["status"], "pred_empty");
    assert_eq!(find_row(&rows, "aal_crop", 56)["hd95_mm"], "");
    assert_eq!(find_row(&rows, "aal_crop", 116)["status"], "ref_empty");
    assert_eq!(find_row(&rows, "aal_crop", 116)["volume_diff_percent"], "");

    let log = buffer.text();
    assert!(log.contains("per-label summary"), "{log}");
    assert!(log.contains("2 done, 0 failed"), "{log}");
}

#[test]
fn eval_names_labels_from_table() {
    let dir = case_folders(&["aal_crop"]);
    let table = data_dir().join("aal_colin27.txt");
    let mut reporter = Reporter::to_writer("prism-seg", true, Box::new(SharedBuffer::default()));
    run(&eval_args(dir.path(), Some(table), false), &mut reporter).unwrap();

    let (_, rows) = read_csv(&dir.path().join("metrics.csv"));
    // Every table label gets a row, those in neither map as both_empty.
    assert_eq!(rows.len(), 116);
    assert_eq!(find_row(&rows, "aal_crop", 38)["name"], "Hippocampus_R");
    let absent = find_row(&rows, "aal_crop", 1);
    assert_eq!(absent["name"], "Precentral_L");
    assert_eq!(absent["status"], "both_empty");
    assert_eq!(absent["dice"], "1");
    assert_eq!(absent["hd95_mm"], "0");
}

#[test]
fn eval_warns_about_prediction_without_reference() {
    let dir = case_folders(&["lesion_crop"]);
    std::fs::copy(
        data_dir().join("pred/aal_crop.nii.gz"),
        dir.path().join("pred/extra.nii.gz"),
    )
    .unwrap();
    let buffer = SharedBuffer::default();
    let mut reporter = Reporter::to_writer("prism-seg", false, Box::new(buffer.clone()));
    let summary = run(&eval_args(dir.path(), None, false), &mut reporter).unwrap();
    assert_eq!(summary.done, 1);
    assert_eq!(summary.failed, 0);
    let log = buffer.text();
    assert!(log.contains("extra.nii.gz: no reference"), "{log}");
    assert!(dir.path().join("metrics.csv").is_file());
}

#[test]
fn eval_missing_prediction_keeps_output_partial() {
    let dir = case_folders(&["aal_crop", "lesion_crop"]);
    std::fs::remove_file(dir.path().join("pred/aal_crop.nii.gz")).unwrap();
    let buffer = SharedBuffer::default();
    let mut reporter = Reporter::to_writer("prism-seg", false, Box::new(buffer.clone()));
    let summary = run(&eval_args(dir.path(), None, true), &mut reporter).unwrap();
    assert_eq!(summary.failed, 1);
    assert_eq!(summary.done, 1);
    assert!(!dir.path().join("metrics.csv").exists());

    let (_, rows) = read_csv(&dir.path().join("metrics.csv.partial"));
    assert!(rows.iter().all(|r| r["case"] == "lesion_crop"));
    assert_eq!(rows.len(), 1);
    assert!(
        buffer.text().contains("no prediction with this case name"),
        "{}",
        buffer.text()
    );
}

#[test]
fn eval_stops_at_first_failure_without_keep_going() {
    let dir = case_folders(&["aal_crop", "lesion_crop"]);
    std::fs::remove_file(dir.path().join("pred/aal_crop.nii.gz")).unwrap();
    let mut reporter = Reporter::to_writer("prism-seg", true, Box::new(SharedBuffer::default()));
    let summary = run(&eval_args(dir.path(), None, false), &mut reporter).unwrap();
    assert_eq!(summary.failed, 1);
    assert_eq!(summary.done, 0);
}

#[test]
fn eval_rejects_shape_mismatch_naming_both_files() {
    let dir = case_folders(&["lesion_crop"]);
    let (labels, affine) = load_label_map(&data_dir().join("pred/lesion_crop.nii.gz")).unwrap();
    let smaller = labels.slice(ndarray::s![..50, .., ..]).mapv(|v| v as f32);
    write_float_volume(&dir.path().join("pred/lesion_crop.nii.gz"), smaller, affine);

    let buffer = SharedBuffer::default();
    let mut reporter = Reporter::to_writer("prism-seg", true, Box::new(buffer.clone()));
    let summary = run(&eval_args(dir.path(), None, true), &mut reporter).unwrap();
    assert_eq!(summary.failed, 1);
    let log = buffer.text();
    assert!(log.contains("pred/lesion_crop.nii.gz"), "{log}");
    assert!(log.contains("ref/lesion_crop.nii.gz"), "{log}");
    assert!(log.contains("shape"), "{log}");
}

#[test]
fn eval_rejects_affine_mismatch() {
    let dir = case_folders(&["lesion_crop"]);
    let (labels, mut affine) = load_label_map(&data_dir().join("pred/lesion_crop.nii.gz")).unwrap();
    affine.0[0][3] += 1.0;
    write_float_volume(
        &dir.path().join("pred/lesion_crop.nii.gz"),
        labels.mapv(|v| v as f32),
        affine,
    );

    let buffer = SharedBuffer::default();
    let mut reporter = Reporter::to_writer("prism-seg", true, Box::new(buffer.clone()));
    let summary = run(&eval_args(dir.path(), None, true), &mut reporter).unwrap();
    assert_eq!(summary.failed, 1);
    assert!(
        buffer.text().contains("affine differs"),
        "{}",
        buffer.text()
    );
}

#[test]
fn eval_rejects_output_over_input() {
    let dir = case_folders(&["lesion_crop"]);
    let mut args = eval_args(dir.path(), None, false);
    args.output = dir.path().join("ref/lesion_crop.nii.gz");
    let mut reporter = Reporter::to_writer("prism-seg", true, Box::new(SharedBuffer::default()));
    assert!(run(&args, &mut reporter).is_err());
}

#[test]
fn eval_removes_stale_partial_after_success() {
    let dir = case_folders(&["lesion_crop"]);
    std::fs::write(dir.path().join("metrics.csv.partial"), "old").unwrap();
    let mut reporter = Reporter::to_writer("prism-seg", true, Box::new(SharedBuffer::default()));
    run(&eval_args(dir.path(), None, false), &mut reporter).unwrap();
    assert!(dir.path().join("metrics.csv").is_file());
    assert!(!dir.path().join("metrics.csv.partial").exists());
}

// ---------------------------------------------------------------- summary

#[test]
fn summary_counts_empty_cases_and_skips_missing_distances() {
    let good = CaseMetrics {
        case: "a".into(),
        labels: evaluate_case("aal_crop", &[30, 56]),
    };
    let perfect_labels = {
        let (_, reference, spacing) = load_case("aal_crop");
        evaluate_labels(reference.view(), reference.view(), spacing, &[30, 56]).unwrap()
    };
    let perfect = CaseMetrics {
        case: "b".into(),
        labels: perfect_labels,
    };
    let summaries = summarize_labels(&[good.clone(), perfect]);

    let label_30 = &summaries[0];
    let dice_30 = good.labels[0].dice;
    assert_eq!(label_30.cases, 2);
    assert_eq!(label_30.empty, 0);
    assert_close(label_30.dice_mean, (dice_30 + 1.0) / 2.0, "label 30 mean");
    // Sample SD of two values is |a − b| / √2.
    assert_close(
        label_30.dice_sd.unwrap(),
        (1.0 - dice_30) / 2f64.sqrt(),
        "label 30 SD",
    );

    // Label 56 is missing from the first prediction: Dice 0 counts, its HD95 does not.
    let label_56 = &summaries[1];
    assert_eq!(label_56.empty, 1);
    assert_close(label_56.dice_mean, 0.5, "label 56 mean");
    assert_eq!(label_56.hd95_mean_mm, Some(0.0));
    assert_eq!(label_56.hd95_sd_mm, None);
}
