//! `prism-pretrain` through the binary, as a Slurm job would run it: training on a real scan
//! and a label map rendered under synthetic contrasts, checkpoints, exact resume after
//! SIGTERM, the exports (loaded back by prism-embed), the manifest verb and its errors.
//!
//! The network is small (feature size 12, one Swin block per stage) and crops are 64³, the
//! smallest size whose latent is more than one voxel, so a step takes seconds. The numbers
//! carry no meaning; the tests check files, exit codes and exact resumption.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use candle_core::{Device, Tensor};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// Training manifest: the MNI152 T1 and the Harvard-Oxford labels (rendered under a new
/// contrast at every draw); validation manifest: the labels alone.
fn write_manifests(dir: &Path) -> (PathBuf, PathBuf) {
    let train = dir.join("train.csv");
    let text = format!(
        "path,subject,body_part,tr_ms,te_ms,flip_deg,family,source\n\
         {},mni,head,2300,2.98,9,T1w,scan\n{},mni,head,,,,,labels\n",
        data("mni152_2009a_t1.nii.gz").display(),
        data("harvardoxford_cort_maxprob_1mm.nii.gz").display()
    );
    std::fs::write(&train, text).unwrap();
    let val = dir.join("val.csv");
    std::fs::write(&val, format!("path,source\n{},labels\n", data("harvardoxford_cort_maxprob_1mm.nii.gz").display()))
        .unwrap();
    (train, val)
}

fn train_args(train: &Path, val: &Path, out: &Path, steps: u64) -> Vec<String> {
    [
        "train", "--data", &train.display().to_string(), "--val-data", &val.display().to_string(),
        "-d", &out.display().to_string(), "--feature-size", "12", "--depths", "1,1,1,1", "--roi", "64",
        "--batch-size", "2", "--max-steps", &steps.to_string(), "--warmup-steps", "1",
        "--generator-every", "2", "--validate-every", "2", "--checkpoint-every", "1", "--seed", "3",
        "--threads", "2", "-q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn binary() -> PathBuf {
    assert_cmd::cargo::cargo_bin("prism-pretrain")
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_same_tensors(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: tensor count");
    for (name, x) in a {
        let x: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let y: Vec<f32> = b[name].flatten_all().unwrap().to_vec1().unwrap();
        assert!(x == y, "{what}: {name} differs");
    }
}

#[test]
fn train_writes_log_checkpoints_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = write_manifests(dir.path());
    let out = dir.path().join("run");
    let status = Command::new(binary()).args(train_args(&train, &val, &out, 2)).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));

    let log = std::fs::read_to_string(out.join("train_log.csv")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    let header: Vec<&str> = lines[0].split(',').collect();
    let first: Vec<&str> = lines[1].split(',').collect();
    let cell = |row: &[&str], name: &str| row[header.iter().position(|h| *h == name).unwrap()].to_string();
    // Step 0 runs all three steps; the log has every term, and validation ran after step 2.
    for term in ["loss.recon", "loss.disc", "loss.contrastive", "loss.sequence", "loss.body_part"] {
        assert!(cell(&first, term).parse::<f64>().is_ok_and(f64::is_finite), "{term} in {log}");
    }
    let second: Vec<&str> = lines[2].split(',').collect();
    assert!(cell(&second, "val.val_recon").parse::<f64>().is_ok(), "{log}");
    assert!(cell(&second, "val.data_wait_s").parse::<f64>().is_ok(), "{log}");
    assert!(out.join("last.json").is_file());
    assert!(out.join("best.json").is_file());

    // The exported encoder is what prism-embed loads.
    let encoder = out.join("encoder.safetensors");
    let embed = Command::cargo_bin("prism-embed")
        .unwrap()
        .args(["--weights", &encoder.display().to_string(), "--spacing", "4"])
        .arg(data("mni152_2009a_t1.nii.gz"))
        .output()
        .unwrap();
    assert!(embed.status.success(), "{}", String::from_utf8_lossy(&embed.stderr));
    let csv = String::from_utf8(embed.stdout).unwrap();
    assert_eq!(csv.lines().next().unwrap().split(',').count(), 2 + 192);

    // `export` from the last checkpoint gives the same tensors as the end of the run.
    let exported = dir.path().join("exported.safetensors");
    let status = Command::new(binary())
        .args(["export", "-d", &out.display().to_string(), "-o", &exported.display().to_string()])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert_same_tensors(&load(&encoder), &load(&exported), "export");
}

#[test]
fn train_resumes_after_sigterm_to_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = write_manifests(dir.path());

    let straight = dir.path().join("straight");
    let status = Command::new(binary()).args(train_args(&train, &val, &straight, 4)).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));

    // Stop a second run with SIGTERM once its first step is logged, then resume it.
    let stopped = dir.path().join("stopped");
    let mut child = StdCommand::new(binary())
        .args(train_args(&train, &val, &stopped, 4))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = stopped.join("train_log.csv");
    let start = Instant::now();
    while std::fs::read_to_string(&log).map(|t| t.lines().count()).unwrap_or(0) < 2 {
        assert!(start.elapsed() < Duration::from_secs(600), "no step logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = StdCommand::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    assert_eq!(child.wait().unwrap().code(), Some(3), "a run stopped by a signal exits 3");
    let stopped_at = std::fs::read_to_string(&log).unwrap().lines().count() - 1;
    assert!(stopped_at < 4, "the run finished before the signal arrived");

    let mut resume = train_args(&train, &val, &stopped, 4);
    resume.push("--resume".into());
    let status = Command::new(binary()).args(resume).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));

    assert_same_tensors(
        &load(&straight.join("network.safetensors")),
        &load(&stopped.join("network.safetensors")),
        "resumed run",
    );
}

#[test]
fn manifest_reads_sidecars_and_writes_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    let anat = dir.path().join("bids/sub-01/anat");
    std::fs::create_dir_all(&anat).unwrap();
    std::fs::copy(data("mni152_2009a_t1.nii.gz"), anat.join("sub-01_T1w.nii.gz")).unwrap();
    std::fs::write(
        anat.join("sub-01_T1w.json"),
        r#"{"RepetitionTime": 2.3, "EchoTime": 0.00298, "FlipAngle": 9, "BodyPartExamined": "BRAIN"}"#,
    )
    .unwrap();

    let manifest = dir.path().join("manifest.csv");
    let status = Command::new(binary())
        .args(["manifest", &dir.path().join("bids").display().to_string(), "-o", &manifest.display().to_string()])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));

    let text = std::fs::read_to_string(&manifest).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 2, "{text}");
    let header: Vec<&str> = rows[0].split(',').collect();
    let row: Vec<&str> = rows[1].split(',').collect();
    let cell = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(cell("path"), "bids/sub-01/anat/sub-01_T1w.nii.gz");
    assert_eq!(cell("subject"), "sub-01");
    assert_eq!(cell("body_part"), "head");
    assert_eq!(cell("tr_ms").parse::<f64>().unwrap(), 2300.0);
    assert!((cell("te_ms").parse::<f64>().unwrap() - 2.98).abs() < 1e-9);
    assert_eq!(cell("flip_deg").parse::<f64>().unwrap(), 9.0);
}

#[test]
fn train_rejects_a_single_crop_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = write_manifests(dir.path());
    let mut args = train_args(&train, &val, &dir.path().join("run"), 2);
    let at = args.iter().position(|a| a == "--batch-size").unwrap();
    args[at + 1] = "1".into();
    let out = Command::new(binary()).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--batch-size"), "{err}");
    assert!(err.contains("NT-Xent"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn train_names_an_unknown_manifest_column() {
    let dir = tempfile::tempdir().unwrap();
    let (_, val) = write_manifests(dir.path());
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, format!("path,tr_msec\n{},2300\n", data("mni152_2009a_t1.nii.gz").display())).unwrap();
    let out = Command::new(binary()).args(train_args(&bad, &val, &dir.path().join("run"), 2)).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tr_msec"), "{err}");
    assert!(err.contains("bad.csv"), "{err}");
}

#[test]
fn train_rejects_a_crop_below_64() {
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = write_manifests(dir.path());
    let mut args = train_args(&train, &val, &dir.path().join("run"), 2);
    let at = args.iter().position(|a| a == "--roi").unwrap();
    args[at + 1] = "32".into();
    let out = Command::new(binary()).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--roi 32"), "{err}");
}

#[test]
fn train_without_resume_keeps_an_earlier_run() {
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = write_manifests(dir.path());
    let out_dir = dir.path().join("run");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(out_dir.join("last.json"), "{}").unwrap();
    let out = Command::new(binary()).args(train_args(&train, &val, &out_dir, 2)).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--resume"), "{err}");
    assert_eq!(std::fs::read_to_string(out_dir.join("last.json")).unwrap(), "{}");
}
