//! `prism-seg train` and `prism-seg eval` through the binary, as a Slurm job would run them.
//!
//! The training case is the MNI152 T1 with a three-class label map made from its own
//! intensities (background, darker and brighter half of the brain), resampled to 6 mm. Crops
//! are 32³, so a step of a small SwinUNETR (feature size 12) takes a second and little memory.
//! The numbers carry no meaning, so the tests check files, exit codes and exact resumption.

use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use prism::io::{load_volume, write_volume, OutputDtype, WriteOptions};
use prism::Volume;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// Writes the label map and a case list with the scan as training and validation case.
fn write_cases(dir: &Path) -> PathBuf {
    let scan = data("mni152_2009a_t1.nii.gz");
    let (t1, _) = load_volume(&scan, None).unwrap();
    let mut brain: Vec<f32> = t1.data.iter().copied().filter(|v| *v > 0.0).collect();
    brain.sort_by(f32::total_cmp);
    let median = brain[brain.len() / 2];
    let labels = t1.data.mapv(|v| if v <= 0.0 { 0.0 } else if v < median { 1.0 } else { 2.0 });
    let label_path = dir.join("labels.nii.gz");
    write_volume(&label_path, &Volume::new(labels, t1.affine), &WriteOptions::default().with_dtype(OutputDtype::Uint8))
        .unwrap();

    let csv = dir.join("cases.csv");
    let text = format!(
        "id,t1,label,split\ntrain_case,{s},{l},train\nval_case,{s},{l},val\n",
        s = scan.display(),
        l = label_path.display()
    );
    std::fs::write(&csv, text).unwrap();
    csv
}

fn train_args(csv: &Path, out: &Path, steps: u64) -> Vec<String> {
    [
        "train", "--data", &csv.display().to_string(), "-d", &out.display().to_string(),
        "--classes", "3", "--feature-size", "12", "--spacing", "6", "--roi", "32",
        "--batch-size", "1", "--max-steps", &steps.to_string(), "--warmup-steps", "1",
        "--validate-every", "2", "--checkpoint-every", "1", "--seed", "3", "--threads", "2", "-q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn binary() -> PathBuf {
    assert_cmd::cargo::cargo_bin("prism-seg")
}

#[test]
fn train_writes_log_checkpoints_and_model() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_cases(dir.path());
    let out = dir.path().join("run");
    let status = Command::new(binary()).args(train_args(&csv, &out, 2)).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));

    let log = std::fs::read_to_string(out.join("train_log.csv")).unwrap();
    let rows: Vec<&str> = log.lines().collect();
    assert_eq!(rows[0], "step,elapsed_s,lr.model,loss.total,loss.dice,loss.ce,val.dice");
    assert_eq!(rows.len(), 3);
    let dice: f64 = rows[2].rsplit(',').next().unwrap().parse().unwrap();
    assert!((0.0..=1.0).contains(&dice), "validation Dice {dice}");

    let description: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model.json")).unwrap()).unwrap();
    assert_eq!(description["labels"].as_array().unwrap().len(), 3);
    assert_eq!(description["spacing_mm"], serde_json::json!([6.0, 6.0, 6.0]));
    assert!(out.join("model_best.safetensors").exists());

    // The exported model is what predict loads: same classes, labels on the input grid.
    let predicted = dir.path().join("pred");
    let run = Command::new(binary())
        .args(["predict", "-q", "--threads", "2", "-m"])
        .arg(out.join("model.safetensors"))
        .arg("-d")
        .arg(&predicted)
        .arg(data("mni152_2009a_t1.nii.gz"))
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let header = String::from_utf8(run.stdout).unwrap();
    assert!(header.starts_with("id,path,label_map,label_1_mm3,label_2_mm3\n"), "{header}");
}

#[test]
fn train_resumes_after_sigterm_to_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_cases(dir.path());

    let straight = dir.path().join("straight");
    let status = Command::new(binary()).args(train_args(&csv, &straight, 3)).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));

    // Stop a second run with SIGTERM once its first step is logged, then resume it.
    let stopped = dir.path().join("stopped");
    let mut child = StdCommand::new(binary())
        .args(train_args(&csv, &stopped, 3))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = stopped.join("train_log.csv");
    let start = Instant::now();
    while std::fs::read_to_string(&log).map(|t| t.lines().count()).unwrap_or(0) < 2 {
        assert!(start.elapsed() < Duration::from_secs(300), "no step logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = StdCommand::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(3), "a run stopped by a signal exits 3");

    let mut resume = train_args(&csv, &stopped, 3);
    resume.push("--resume".into());
    let status = Command::new(binary()).args(resume).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));

    let load = |dir: &Path| candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let (a, b) = (load(&straight), load(&stopped));
    assert_eq!(a.len(), b.len());
    for (name, x) in &a {
        let x: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let y: Vec<f32> = b[name].flatten_all().unwrap().to_vec1().unwrap();
        assert!(x == y, "{name}: resumed weights differ from the uninterrupted run");
    }
}

#[test]
fn train_refuses_existing_run_without_resume() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_cases(dir.path());
    let out = dir.path().join("run");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("last.json"), "{}").unwrap();
    let status = Command::new(binary()).args(train_args(&csv, &out, 1)).output().unwrap();
    assert_eq!(status.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&status.stderr).contains("resume"));
}

#[test]
fn train_rejects_label_outside_classes() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_cases(dir.path());
    let mut args = train_args(&csv, &dir.path().join("run"), 1);
    let classes = args.iter().position(|a| a == "--classes").unwrap();
    args[classes + 1] = "2".into();
    let status = Command::new(binary()).args(args).output().unwrap();
    assert_eq!(status.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&status.stderr).contains("labels.nii.gz"));
}

#[test]
fn eval_scores_prediction_folder() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("metrics.csv");
    let status = Command::new(binary())
        .args(["eval", "--pred"])
        .arg(data("seg_metrics/pred"))
        .arg("--ref")
        .arg(data("seg_metrics/ref"))
        .arg("-o")
        .arg(&csv)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("case,label,"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("lesion_crop,1,")));
}

#[test]
fn train_rejects_bad_numbers_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("absent.csv");
    for (flag, value) in [("--batch-size", "0"), ("--val-fraction", "2"), ("--lr", "0")] {
        let mut args = train_args(&csv, &dir.path().join("run"), 1);
        let at = args.iter().position(|a| a == flag).map(|i| i + 1);
        match at {
            Some(i) => args[i] = value.to_string(),
            None => args.extend([flag.to_string(), value.to_string()]),
        }
        let out = Command::new(binary()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{flag}: {stderr}");
    }
}
