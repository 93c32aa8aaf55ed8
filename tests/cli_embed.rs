//! `prism-embed` end to end: the binary on real scans, as a batch job would run it.
//!
//! Runs use the small reference encoder (embed_dim 6, 96-value embeddings) and
//! `--spacing 4`, which keeps each real scan to a 64³ network input so the suite
//! stays fast. The numbers carry no meaning, so the tests check behaviour.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use ndarray::Array3;
use prism::io::{write_volume, WriteOptions};
use prism::{Affine, Volume};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn weights() -> PathBuf {
    data("encoder_w6/encoder.safetensors")
}

/// `prism-embed --weights W --spacing 4 ARGS…`, with SLURM variables cleared.
fn embed() -> Command {
    let mut cmd = Command::cargo_bin("prism-embed").unwrap();
    cmd.arg("--weights").arg(weights()).args(["--spacing", "4", "--threads", "2"]);
    for var in ["SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "PRISM_WEIGHTS"] {
        cmd.env_remove(var);
    }
    cmd
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn rows(csv: &str) -> Vec<Vec<String>> {
    csv.lines().map(|l| l.split(',').map(str::to_string).collect()).collect()
}

/// Copy the real T1 scan under a new name, so one scan can stand for several inputs.
fn copy_scan(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(data("mni152_2009a_t1.nii.gz"), &path).unwrap();
    path
}

#[test]
fn csv_has_header_and_one_row_per_scan() {
    let csv = stdout_of(embed().arg(data("mni152_2009a_t1.nii.gz")).arg(format!("{}:1", data("example4d.nii.gz").display())));
    let rows = rows(&csv);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0][..3], ["id", "path", "emb_0"]);
    assert_eq!(rows[0].last().unwrap(), "emb_95");
    assert_eq!(rows[1][0], "mni152_2009a_t1");
    assert_eq!(rows[2][0], "example4d_v1");
    for row in &rows[1..] {
        assert_eq!(row.len(), 2 + 96);
        for v in &row[2..] {
            let v: f32 = v.parse().unwrap();
            assert!(v.is_finite());
        }
    }
}

#[test]
fn embeddings_are_deterministic() {
    let first = stdout_of(embed().arg(data("mni152_2009a_t1.nii.gz")));
    let second = stdout_of(embed().arg(data("mni152_2009a_t1.nii.gz")));
    assert_eq!(first, second);
}

#[test]
fn different_scans_give_different_embeddings() {
    let csv = stdout_of(embed().arg(data("mni152_2009a_t1.nii.gz")).arg(format!("{}:0", data("example4d.nii.gz").display())));
    let rows = rows(&csv);
    assert_ne!(rows[1][2..], rows[2][2..]);
}

#[test]
fn multiscale_pooling_concatenates_five_stages() {
    let csv = stdout_of(embed().args(["--pooling", "multiscale"]).arg(data("mni152_2009a_t1.nii.gz")));
    let multi = rows(&csv);
    // embed_dim 6: 6 + 12 + 24 + 48 + 96 channels.
    assert_eq!(multi[0].len(), 2 + 186);
    assert_eq!(multi[0][2], "s0_0");
    assert_eq!(multi[0].last().unwrap(), "s4_95");
    let last_stage = stdout_of(embed().arg(data("mni152_2009a_t1.nii.gz")));
    assert_eq!(multi[1][2 + 90..], rows(&last_stage)[1][2..], "the last 96 values are the last-stage embedding");
}

#[test]
fn directory_input_is_sorted_and_recursive() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("sub")).unwrap();
    copy_scan(tmp.path(), "b.nii.gz");
    copy_scan(&tmp.path().join("sub"), "a.nii.gz");
    std::fs::write(tmp.path().join("notes.txt"), "not a scan").unwrap();
    let csv = stdout_of(embed().arg(tmp.path()));
    let ids: Vec<String> = rows(&csv)[1..].iter().map(|r| r[0].clone()).collect();
    assert_eq!(ids, ["b", "a"], "sorted by path: b.nii.gz before sub/a.nii.gz");
}

#[test]
fn shards_partition_the_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let scans: Vec<PathBuf> = ["s0", "s1", "s2"].iter().map(|n| copy_scan(tmp.path(), &format!("{n}.nii.gz"))).collect();
    let ids = |shard: &str| -> Vec<String> {
        let csv = stdout_of(embed().args(["--shard", shard]).args(&scans));
        rows(&csv)[1..].iter().map(|r| r[0].clone()).collect()
    };
    assert_eq!(ids("0/2"), ["s0", "s2"]);
    assert_eq!(ids("1/2"), ["s1"]);
}

#[test]
fn slurm_array_selects_the_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let scans: Vec<PathBuf> = ["s0", "s1", "s2"].iter().map(|n| copy_scan(tmp.path(), &format!("{n}.nii.gz"))).collect();
    let mut cmd = embed();
    cmd.args(&scans)
        .env("SLURM_ARRAY_TASK_ID", "2")
        .env("SLURM_ARRAY_TASK_COUNT", "2")
        .env("SLURM_ARRAY_TASK_MIN", "1");
    let csv = stdout_of(&mut cmd);
    let ids: Vec<String> = rows(&csv)[1..].iter().map(|r| r[0].clone()).collect();
    assert_eq!(ids, ["s1"], "task 2 of an array starting at 1 is shard 1/2");
}

#[test]
fn rerun_resumes_and_keeps_finished_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let a = copy_scan(tmp.path(), "a.nii.gz");
    let b = copy_scan(tmp.path(), "b.nii.gz");
    let out = tmp.path().join("emb.csv");

    embed().arg(&a).arg("-o").arg(&out).assert().success();
    let first = std::fs::read_to_string(&out).unwrap();
    assert_eq!(rows(&first).len(), 2);

    let run = embed().arg(&a).arg(&b).arg("-o").arg(&out).output().unwrap();
    assert!(run.status.success());
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(log.contains("skipped a"), "log: {log}");
    let second = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = second.lines().collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1], first.lines().nth(1).unwrap(), "the finished row is kept as it was");
    assert!(lines[2].starts_with("b,"));
    assert!(!tmp.path().join("emb.csv.partial").exists());
}

#[test]
fn no_weights_uses_the_builtin_encoder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("emb.csv");
    let mut cmd = Command::cargo_bin("prism-embed").unwrap();
    cmd.env_remove("PRISM_WEIGHTS").args(["--spacing", "4", "-o"]).arg(&out).arg(data("mni152_2009a_t1.nii.gz"));
    let result = cmd.output().unwrap();
    assert_eq!(result.status.code(), Some(0), "{}", String::from_utf8_lossy(&result.stderr));
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(err.contains("built-in encoder"), "{err}");

    let csv = std::fs::read_to_string(&out).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    // id, path, then one column per channel of the last stage: 16 × feature size 12.
    assert_eq!(header.len(), 2 + 192);
    let provenance = std::fs::read_to_string(tmp.path().join("emb.csv.json")).unwrap();
    assert!(provenance.contains("builtin:prism-mri-default-f12"), "{provenance}");
}

#[test]
fn weights_from_environment() {
    let mut cmd = Command::cargo_bin("prism-embed").unwrap();
    cmd.env("PRISM_WEIGHTS", weights()).args(["--spacing", "4"]).arg(data("mni152_2009a_t1.nii.gz"));
    let csv = stdout_of(&mut cmd);
    assert_eq!(rows(&csv).len(), 2);
}

#[test]
fn sliding_windows_cover_the_scan() {
    let csv = stdout_of(embed().args(["--roi", "32", "--overlap", "0.5"]).arg(data("mni152_2009a_t1.nii.gz")));
    let rows = rows(&csv);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].len(), 2 + 96);
}

#[test]
fn roi_not_multiple_of_32_is_refused() {
    let out = embed().args(["--roi", "40"]).arg(data("mni152_2009a_t1.nii.gz")).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "an invalid option is a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("multiple of 32"), "{err}");
}

#[test]
fn volume_above_limit_is_refused_with_the_fix() {
    let out = embed().args(["--max-voxels", "1000"]).arg(data("mni152_2009a_t1.nii.gz")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mni152_2009a_t1.nii.gz"), "{err}");
    assert!(err.contains("--roi"), "{err}");
}

#[test]
fn preprocess_none_feeds_odd_sized_voxel_array() {
    // 45×53×61: the encoder pads odd sizes itself, as MONAI does.
    let tmp = tempfile::tempdir().unwrap();
    let data = Array3::from_shape_fn((45, 53, 61), |(i, j, k)| ((i * 7 + j * 3 + k) % 17) as f32);
    let path = tmp.path().join("odd.nii.gz");
    write_volume(&path, &Volume::new(data, Affine::identity()), &WriteOptions::default()).unwrap();
    let csv = stdout_of(embed().args(["--preprocess", "none"]).arg(&path));
    assert_eq!(rows(&csv)[1].len(), 2 + 96);
}

// ------------------------------------------------------------ bad inputs

fn write_f32(path: &Path, data: Array3<f32>) {
    write_volume(path, &Volume::new(data, Affine::identity()), &WriteOptions::default()).unwrap();
}

/// Writes a valid uncompressed NIfTI and then patches its header at `offset`.
fn patched_nii(path: &Path, offset: usize, bytes: &[u8]) {
    write_f32(path, Array3::from_elem((8, 8, 1), 1.0));
    let mut raw = std::fs::read(path).unwrap();
    raw[offset..offset + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, raw).unwrap();
}

fn i16s(values: &[i16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Runs one bad input alone and expects exit 1 and one error line naming the file and the problem.
fn assert_rejected(path: &Path, keyword: &str) {
    let out = embed().arg(path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}: {err}", path.display());
    let line = err.lines().find(|l| l.contains("error:")).unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.contains(&path.display().to_string()), "{line}");
    assert!(line.to_lowercase().contains(keyword), "expected '{keyword}' in: {line}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_inputs_get_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    let not_nifti = dir.join("notes.nii");
    std::fs::write(&not_nifti, "subject 12, session 2\n").unwrap();
    assert_rejected(&not_nifti, "nifti");

    let truncated = dir.join("truncated.nii.gz");
    let full = std::fs::read(data("mni152_2009a_t1.nii.gz")).unwrap();
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    assert_rejected(&truncated, "truncated");

    // One flipped bit in the gzip trailer's CRC-32: the voxel bytes decode, the check fails.
    let bad_crc = dir.join("bad_crc.nii.gz");
    let mut flipped = full.clone();
    let crc_byte = flipped.len() - 6;
    flipped[crc_byte] ^= 0x01;
    std::fs::write(&bad_crc, &flipped).unwrap();
    assert_rejected(&bad_crc, "corrupt");

    let zeros = dir.join("zeros.nii.gz");
    write_f32(&zeros, Array3::zeros((20, 20, 20)));
    assert_rejected(&zeros, "zero");

    let nans = dir.join("nans.nii.gz");
    let mut values = Array3::from_elem((20, 20, 20), 3.0f32);
    values[[4, 5, 6]] = f32::NAN;
    write_f32(&nans, values);
    assert_rejected(&nans, "nan");

    // dim[0] = 2 at byte 40: a 2-D image.
    let flat = dir.join("flat.nii");
    patched_nii(&flat, 40, &i16s(&[2]));
    assert_rejected(&flat, "2-d");

    // dim[1..3] = 30000 each: 2.7e13 voxels, refused before allocating.
    let huge = dir.join("huge.nii");
    patched_nii(&huge, 42, &i16s(&[30000, 30000, 30000]));
    assert_rejected(&huge, "too large");

    assert_rejected(&data("example4d.nii.gz"), "4-d");
}

#[test]
fn missing_input_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let absent = tmp.path().join("absent.nii.gz");
    let out = embed().arg(&absent).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "the input list itself is invalid");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&absent.display().to_string()), "{err}");
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn keep_going_processes_the_rest_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.nii");
    std::fs::write(&bad, "not an image").unwrap();
    let good = copy_scan(tmp.path(), "good.nii.gz");
    let out_csv = tmp.path().join("emb.csv");

    let out = embed().arg("--keep-going").arg(&bad).arg(&good).arg("-o").arg(&out_csv).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!out_csv.exists(), "an incomplete run must not leave the output file for make");
    let partial = std::fs::read_to_string(tmp.path().join("emb.csv.partial")).unwrap();
    let ids: Vec<String> = rows(&partial)[1..].iter().map(|r| r[0].clone()).collect();
    assert_eq!(ids, ["good"]);

    // Once the bad input is fixed, a rerun embeds only it and writes the file.
    std::fs::copy(&good, &bad).unwrap();
    let rerun = embed().arg("--keep-going").arg(&bad).arg(&good).arg("-o").arg(&out_csv).output().unwrap();
    assert_eq!(rerun.status.code(), Some(0));
    let log = String::from_utf8_lossy(&rerun.stderr);
    assert!(log.contains("skipped good"), "{log}");
    let csv = std::fs::read_to_string(&out_csv).unwrap();
    let ids: Vec<String> = rows(&csv)[1..].iter().map(|r| r[0].clone()).collect();
    assert_eq!(ids, ["bad", "good"]);
}

#[test]
fn first_failure_stops_without_keep_going() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("a_bad.nii");
    std::fs::write(&bad, "not an image").unwrap();
    let good = copy_scan(tmp.path(), "b_good.nii.gz");
    let out = embed().arg(&bad).arg(&good).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let csv = String::from_utf8(out.stdout).unwrap();
    assert_eq!(rows(&csv).len(), 1, "only the header: the run stopped at a_bad");
}

#[test]
fn closed_stdout_pipe_is_a_normal_end() {
    let tmp = tempfile::tempdir().unwrap();
    let scans: Vec<PathBuf> = ["s0", "s1"].iter().map(|n| copy_scan(tmp.path(), &format!("{n}.nii.gz"))).collect();
    let bin = assert_cmd::cargo::cargo_bin("prism-embed");
    let script = format!(
        "'{}' --weights '{}' --spacing 4 '{}' '{}' | head -c 10 > /dev/null; echo ${{PIPESTATUS[0]}}",
        bin.display(),
        weights().display(),
        scans[0].display(),
        scans[1].display()
    );
    let out = std::process::Command::new("bash").arg("-c").arg(script).output().unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert_eq!(status.trim(), "0", "stderr: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn volume_option_applies_to_4d_inputs_only() {
    let csv = stdout_of(embed().args(["--volume", "1"]).arg(data("mni152_2009a_t1.nii.gz")).arg(data("example4d.nii.gz")));
    let with_option = rows(&csv);
    assert_eq!(with_option.len(), 3);
    let explicit = stdout_of(embed().arg(format!("{}:1", data("example4d.nii.gz").display())));
    assert_eq!(with_option[2][2..], rows(&explicit)[1][2..], "--volume 1 reads the same volume as :1");
}

#[test]
fn output_gets_provenance_sidecar() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("emb.csv");
    embed().arg(data("mni152_2009a_t1.nii.gz")).arg("-o").arg(&out).assert().success();
    let text = std::fs::read_to_string(tmp.path().join("emb.csv.json")).unwrap();
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(record["tool"], "prism-embed");
    let settings = &record["details"]["settings"];
    assert_eq!(settings["weights"]["embed_dim"], 6);
    assert_eq!(settings["preprocess"]["spacing_mm"], serde_json::json!([4.0, 4.0, 4.0]));
    let sha = settings["weights"]["sha256"].as_str().unwrap();
    assert_eq!(sha, prism::cli::provenance::sha256_file(&weights()).unwrap());
    assert!(!tmp.path().join("emb.csv.partial.json").exists(), "the in-progress record is removed");
}

#[test]
fn rerun_with_other_settings_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = copy_scan(tmp.path(), "a.nii.gz");
    let b = copy_scan(tmp.path(), "b.nii.gz");
    let out = tmp.path().join("emb.csv");
    embed().arg(&a).arg("-o").arg(&out).assert().success();

    let run = embed().args(["--clip-percentiles", "1,99"]).arg(&a).arg(&b).arg("-o").arg(&out).output().unwrap();
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("preprocess"), "{err}");
    assert_eq!(rows(&std::fs::read_to_string(&out).unwrap()).len(), 2, "the earlier file is untouched");

    embed().args(["--clip-percentiles", "1,99", "--overwrite"]).arg(&a).arg(&b).arg("-o").arg(&out).assert().success();
    assert_eq!(rows(&std::fs::read_to_string(&out).unwrap()).len(), 3);
}

#[test]
fn invalid_options_are_usage_errors() {
    let cases: [&[&str]; 5] = [
        &["--overlap", "1"],
        &["--spacing", "0"],
        &["--spacing", "0.001"],
        &["--clip-percentiles", "99,1"],
        &["--clip-percentiles", "1,2,3"],
    ];
    for args in cases {
        let out = embed().args(args).arg(data("mni152_2009a_t1.nii.gz")).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(args[0]), "{args:?}: {err}");
    }
}

#[test]
fn clip_percentiles_take_comma_pair() {
    let csv = stdout_of(embed().args(["--clip-percentiles", "0.5,99.5"]).arg(data("mni152_2009a_t1.nii.gz")));
    assert_eq!(rows(&csv).len(), 2);
}

#[test]
fn output_over_an_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let scan = copy_scan(tmp.path(), "victim.nii.gz");
    let before = std::fs::read(&scan).unwrap();
    let out = embed().arg(&scan).arg("-o").arg(&scan).arg("--overwrite").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read(&scan).unwrap(), before, "the input is untouched");
}

#[test]
fn dash_output_means_stdout() {
    let csv = stdout_of(embed().arg(data("mni152_2009a_t1.nii.gz")).args(["-o", "-"]));
    assert_eq!(rows(&csv).len(), 2);
    assert!(!Path::new("-").exists());
}

#[test]
fn volume_option_runs_resume_per_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("vol.csv");
    for v in ["0", "1"] {
        embed().args(["--volume", v]).arg(data("example4d.nii.gz")).arg("-o").arg(&out).assert().success();
    }
    let csv = std::fs::read_to_string(&out).unwrap();
    // The current run's inputs come first, then the rows of earlier runs.
    let ids: Vec<String> = rows(&csv)[1..].iter().map(|r| r[0].clone()).collect();
    assert_eq!(ids, ["example4d_v1", "example4d_v0"]);
}

#[test]
fn renamed_ids_on_rerun_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for sub in ["a", "b"] {
        std::fs::create_dir(tmp.path().join(sub)).unwrap();
        copy_scan(&tmp.path().join(sub), "t1.nii.gz");
    }
    let out = tmp.path().join("emb.csv");
    embed().arg(tmp.path().join("a/t1.nii.gz")).arg("-o").arg(&out).assert().success();

    // With b/t1.nii.gz added, a's scan is named a_t1: resuming by id would embed it twice.
    let run = embed().arg(tmp.path().join("a/t1.nii.gz")).arg(tmp.path().join("b/t1.nii.gz")).arg("-o").arg(&out).output().unwrap();
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("--overwrite"), "{err}");
}

#[test]
fn non_utf8_file_name_in_directory_is_found() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.nii.gz");
    std::fs::copy(data("mni152_2009a_t1.nii.gz"), tmp.path().join(name)).unwrap();
    let csv = stdout_of(embed().arg(tmp.path()));
    assert_eq!(rows(&csv).len(), 2, "the Latin-1 named scan is embedded");
}

#[test]
fn ineffective_options_are_warned_about() {
    let run = embed().args(["--preprocess", "none", "--overlap", "0.25"]).arg(data("mni152_2009a_t1.nii.gz")).output().unwrap();
    assert!(run.status.success());
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(log.contains("warning: --overlap has no effect without --roi"), "{log}");
    assert!(log.contains("warning: --spacing has no effect with --preprocess none"), "{log}");
}
