//! Tests of the shared command-line plumbing on real files, pipes and processes:
//! input expansion, sharding, resumable CSV output, progress lines, the batch
//! loop, exit codes, generated docs and the thread settings.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use prism::cli::batch::run_batch;
use prism::cli::docs::{check_generated_docs, completion_path};
use prism::cli::inputs::{expand_inputs, InputItem, InputSource};
use prism::cli::output::{RowSink, WriteOutcome};
use prism::cli::progress::{Reporter, Summary};
use prism::cli::shard::{resolve_shard, shard_from_slurm, Shard, ShardSource};
use prism::cli::Exit;
use prism::Error;

// ---------------------------------------------------------------- helpers

fn touch(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"").unwrap();
}

/// Creates a tree with nested scans, hidden entries and non-NIfTI files:
///
/// ```text
/// root/a/scan1.nii
/// root/a/nested/deep.nii.gz
/// root/a/sub-01/anat/T1w.nii.gz
/// root/a/sub-02/anat/T1w.nii.gz
/// root/a/.hidden.nii            (hidden file)
/// root/a/notes.txt              (not NIfTI)
/// root/.cache/cached.nii.gz     (hidden directory)
/// root/b/scan2.nii.gz
/// root/empty/readme.md          (no NIfTI)
/// ```
fn make_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for name in [
        "a/scan1.nii",
        "a/nested/deep.nii.gz",
        "a/sub-01/anat/T1w.nii.gz",
        "a/sub-02/anat/T1w.nii.gz",
        "a/.hidden.nii",
        "a/notes.txt",
        ".cache/cached.nii.gz",
        "b/scan2.nii.gz",
        "empty/readme.md",
    ] {
        touch(&root.join(name));
    }
    dir
}

fn arg(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

fn expand(args: &[String]) -> prism::Result<Vec<InputItem>> {
    expand_inputs(args, &mut Cursor::new(Vec::new()))
}

fn ids(items: &[InputItem]) -> Vec<&str> {
    items.iter().map(|item| item.id.as_str()).collect()
}

/// A `Write` whose bytes the test can read after handing it away.
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

fn quiet_reporter() -> Reporter {
    Reporter::to_writer("prism-test", true, Box::new(SharedBuffer::default()))
}

fn strings(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------- inputs

#[test]
fn inputs_directory_sorted_recursive_without_hidden() {
    let dir = make_tree();
    let root = dir.path().join("root");
    let items = expand(&[arg(&root.join("a")), arg(&root.join("b"))]).unwrap();

    let paths: Vec<PathBuf> = items.iter().map(|item| item.path.clone()).collect();
    assert_eq!(
        paths,
        [
            root.join("a/nested/deep.nii.gz"),
            root.join("a/scan1.nii"),
            root.join("a/sub-01/anat/T1w.nii.gz"),
            root.join("a/sub-02/anat/T1w.nii.gz"),
            root.join("b/scan2.nii.gz"),
        ]
    );
    assert!(items.iter().all(|item| item.volume.is_none()));
}

#[test]
fn inputs_root_skips_hidden_directory() {
    let dir = make_tree();
    let root = dir.path().join("root");
    let items = expand(&[arg(&root)]).unwrap();
    assert_eq!(items.len(), 5);
    assert!(items
        .iter()
        .all(|item| !item.path.to_string_lossy().contains(".cache")));
    assert!(items
        .iter()
        .all(|item| !item.path.to_string_lossy().contains(".hidden")));
}

#[test]
fn inputs_keep_command_line_order() {
    let dir = make_tree();
    let root = dir.path().join("root");
    let items = expand(&[arg(&root.join("b")), arg(&root.join("a/scan1.nii"))]).unwrap();
    assert_eq!(ids(&items), ["scan2", "scan1"]);
}

#[test]
fn inputs_ids_disambiguate_by_parents() {
    let dir = make_tree();
    let root = dir.path().join("root");
    let items = expand(&[arg(&root.join("a"))]).unwrap();
    assert_eq!(
        ids(&items),
        ["deep", "scan1", "sub-01_anat_T1w", "sub-02_anat_T1w"]
    );
}

#[test]
fn inputs_list_file_with_comments_and_relative_paths() {
    let dir = make_tree();
    let root = dir.path().join("root");
    let list = root.join("b/list.txt");
    std::fs::write(
        &list,
        "# scans for the test\n\n  scan2.nii.gz  \n../a/scan1.nii:3\n   # indented comment\r\n../a/nested\n",
    )
    .unwrap();

    let items = expand(&[format!("@{}", arg(&list))]).unwrap();

    assert_eq!(ids(&items), ["scan2", "scan1_v3", "deep"]);
    assert_eq!(items[0].path, root.join("b/scan2.nii.gz"));
    assert_eq!(items[1].path, root.join("b/../a/scan1.nii"));
    assert_eq!(items[1].volume, Some(3));
    assert_eq!(items[2].path, root.join("b/../a/nested/deep.nii.gz"));
}

#[test]
fn inputs_stdin_list_relative_to_working_directory() {
    let dir = make_tree();
    let root = dir.path().join("root");
    let mut stdin = Cursor::new(format!(
        "# from a pipe\n{}\n{}:0\n",
        arg(&root.join("b")),
        arg(&root.join("a/scan1.nii"))
    ));

    let items = expand_inputs(&["-".to_string()], &mut stdin).unwrap();

    assert_eq!(ids(&items), ["scan2", "scan1_v0"]);
    assert_eq!(items[1].volume, Some(0));
}

#[test]
fn inputs_stdin_twice_is_rejected() {
    let result = expand_inputs(
        &["-".to_string(), "-".to_string()],
        &mut Cursor::new(Vec::new()),
    );
    assert!(matches!(result, Err(Error::Invalid(_))));
}

#[test]
fn inputs_duplicates_keep_first() {
    let dir = make_tree();
    let root = dir.path().join("root");
    let scan1 = root.join("a/scan1.nii");
    let dotted = root.join("a/./scan1.nii");
    let detour = root.join("b/../a/scan1.nii");
    let args = [
        arg(&scan1),
        arg(&root.join("a")),
        arg(&dotted),
        arg(&detour),
        format!("{}:1", arg(&scan1)),
    ];

    let items = expand(&args).unwrap();

    assert_eq!(
        ids(&items),
        [
            "scan1",
            "deep",
            "sub-01_anat_T1w",
            "sub-02_anat_T1w",
            "scan1_v1"
        ]
    );
    assert_eq!(items[0].path, scan1);
}

#[test]
fn inputs_same_directory_collision_numbered() {
    let dir = tempfile::tempdir().unwrap();
    touch(&dir.path().join("x.nii"));
    touch(&dir.path().join("x.nii.gz"));
    let items = expand(&[arg(dir.path())]).unwrap();
    assert_eq!(ids(&items), ["x", "x_2"]);
}

#[test]
fn inputs_missing_path_named_in_error() {
    let dir = make_tree();
    let missing = dir.path().join("root/nowhere.nii.gz");
    let message = expand(&[arg(&missing)]).unwrap_err().to_string();
    assert!(message.contains(&arg(&missing)), "{message}");
    assert!(message.contains("not found"), "{message}");
}

#[test]
fn inputs_missing_list_entry_names_list_line() {
    let dir = make_tree();
    let list = dir.path().join("list.txt");
    std::fs::write(&list, "# header\nroot/b/scan2.nii.gz\nroot/gone.nii\n").unwrap();
    let message = expand(&[format!("@{}", arg(&list))])
        .unwrap_err()
        .to_string();
    assert!(message.contains("gone.nii"), "{message}");
    assert!(message.contains("line 3"), "{message}");
}

#[test]
fn inputs_directory_without_nifti_is_error() {
    let dir = make_tree();
    let empty = dir.path().join("root/empty");
    let message = expand(&[arg(&empty)]).unwrap_err().to_string();
    assert!(message.contains(&arg(&empty)), "{message}");
    assert!(message.contains("no NIfTI files"), "{message}");
}

#[test]
fn inputs_non_nifti_file_is_error() {
    let dir = make_tree();
    let notes = dir.path().join("root/a/notes.txt");
    let message = expand(&[arg(&notes)]).unwrap_err().to_string();
    assert!(message.contains("not a NIfTI file name"), "{message}");
}

#[test]
fn inputs_volume_suffix_on_directory_is_error() {
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("series.nii");
    touch(&odd.join("inner.nii"));
    let message = expand(&[format!("{}:1", arg(&odd))])
        .unwrap_err()
        .to_string();
    assert!(message.contains("needs a NIfTI file"), "{message}");
}

#[cfg(unix)]
#[test]
fn inputs_follow_symlinks_without_loops() {
    let dir = make_tree();
    let root = dir.path().join("root");
    std::os::unix::fs::symlink(root.join("a"), root.join("a/nested/loop")).unwrap();
    std::os::unix::fs::symlink(root.join("b/scan2.nii.gz"), root.join("a/linked.nii.gz")).unwrap();
    std::os::unix::fs::symlink(root.join("missing.nii"), root.join("a/dangling.nii")).unwrap();

    let items = expand(&[arg(&root.join("a"))]).unwrap();

    let paths: Vec<PathBuf> = items.iter().map(|item| item.path.clone()).collect();
    assert!(paths.contains(&root.join("a/linked.nii.gz")));
    assert_eq!(
        expand(&[
            arg(&root.join("a/linked.nii.gz")),
            arg(&root.join("b/scan2.nii.gz"))
        ])
        .unwrap()
        .len(),
        2
    );
    assert!(!paths.contains(&root.join("a/dangling.nii")));
    assert!(
        paths
            .iter()
            .all(|p| !p.starts_with(root.join("a/nested/loop"))),
        "{paths:?}"
    );
}

// ---------------------------------------------------------------- shard

#[test]
fn shard_partition_disjoint_balanced_complete() {
    for len in 0..40usize {
        let items: Vec<usize> = (0..len).collect();
        for count in 1..=9 {
            let parts: Vec<Vec<usize>> = (0..count)
                .map(|index| Shard::new(index, count).unwrap().select(&items))
                .collect();

            let mut union: Vec<usize> = parts.iter().flatten().copied().collect();
            union.sort_unstable();
            assert_eq!(union, items, "union of {count} shards of {len}");

            let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
            let spread = sizes.iter().max().unwrap() - sizes.iter().min().unwrap();
            assert!(
                spread <= 1,
                "sizes {sizes:?} for {len} items in {count} shards"
            );

            for part in &parts {
                assert!(
                    part.windows(2).all(|w| w[0] < w[1]),
                    "shard keeps list order"
                );
            }
        }
    }
}

#[test]
fn shard_round_robin_positions() {
    let items: Vec<usize> = (0..10).collect();
    assert_eq!(Shard::new(1, 3).unwrap().select(&items), [1, 4, 7]);
}

fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        vars.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_string())
    }
}

#[test]
fn shard_slurm_subtracts_min() {
    let vars = [
        ("SLURM_ARRAY_TASK_ID", "3"),
        ("SLURM_ARRAY_TASK_COUNT", "4"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
    ];
    let choice = shard_from_slurm(env(&vars)).unwrap();
    assert_eq!(
        choice.shard,
        Some((Shard { index: 2, count: 4 }, ShardSource::Slurm))
    );
    assert_eq!(choice.warning, None);
}

#[test]
fn shard_slurm_zero_based_without_min() {
    let vars = [
        ("SLURM_ARRAY_TASK_ID", "0"),
        ("SLURM_ARRAY_TASK_COUNT", "2"),
    ];
    let choice = shard_from_slurm(env(&vars)).unwrap();
    assert_eq!(
        choice.shard,
        Some((Shard { index: 0, count: 2 }, ShardSource::Slurm))
    );
}

#[test]
fn shard_slurm_divides_by_step() {
    // sbatch --array=10-16:2 gives tasks 10, 12, 14, 16.
    let vars = [
        ("SLURM_ARRAY_TASK_ID", "14"),
        ("SLURM_ARRAY_TASK_COUNT", "4"),
        ("SLURM_ARRAY_TASK_MIN", "10"),
        ("SLURM_ARRAY_TASK_STEP", "2"),
    ];
    let choice = shard_from_slurm(env(&vars)).unwrap();
    assert_eq!(
        choice.shard,
        Some((Shard { index: 2, count: 4 }, ShardSource::Slurm))
    );
}

#[test]
fn shard_slurm_gapped_array_rejected() {
    // sbatch --array=1,4,9: task 9 with min 1 and count 3.
    let vars = [
        ("SLURM_ARRAY_TASK_ID", "9"),
        ("SLURM_ARRAY_TASK_COUNT", "3"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
    ];
    let message = shard_from_slurm(env(&vars)).unwrap_err().to_string();
    assert!(message.contains("--shard"), "{message}");
}

#[test]
fn shard_slurm_id_without_count_warns() {
    let vars = [("SLURM_ARRAY_TASK_ID", "5")];
    let choice = shard_from_slurm(env(&vars)).unwrap();
    assert_eq!(choice.shard, None);
    let warning = choice.warning.unwrap_or_default();
    assert!(warning.contains("SLURM_ARRAY_TASK_COUNT"), "{warning}");
}

#[test]
fn shard_slurm_absent_means_everything() {
    let choice = shard_from_slurm(env(&[])).unwrap();
    assert_eq!(choice.shard, None);
    assert_eq!(choice.warning, None);
}

#[test]
fn shard_slurm_non_number_rejected() {
    let vars = [
        ("SLURM_ARRAY_TASK_ID", "x"),
        ("SLURM_ARRAY_TASK_COUNT", "4"),
    ];
    assert!(shard_from_slurm(env(&vars)).is_err());
}

#[test]
fn shard_flag_overrides_slurm() {
    let vars = [
        ("SLURM_ARRAY_TASK_ID", "1"),
        ("SLURM_ARRAY_TASK_COUNT", "4"),
    ];
    let flag = Shard::new(0, 1).unwrap();
    let choice = resolve_shard(Some(flag), env(&vars)).unwrap();
    assert_eq!(choice.shard, Some((flag, ShardSource::Flag)));
}

// ---------------------------------------------------------------- output: file

const HEADER: [&str; 3] = ["id", "mean", "note"];

fn row(id: &str, mean: f32) -> Vec<String> {
    vec![
        id.to_string(),
        prism::cli::output::format_f32(mean),
        format!("note for {id}, quoted"),
    ]
}

fn partial_of(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.partial", path.display()))
}

fn read_rows(path: &Path) -> Vec<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .unwrap();
    reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

#[test]
fn row_sink_resumes_after_kill() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb.csv");
    let order = ["a", "b", "c", "d", "e"];

    // First run: two rows, then killed (dropped without finish).
    let mut sink = RowSink::file(&out, &HEADER, &order, false).unwrap();
    assert_eq!(
        sink.write_row(&row("a", 0.1)).unwrap(),
        WriteOutcome::Written
    );
    assert_eq!(
        sink.write_row(&row("b", 0.2)).unwrap(),
        WriteOutcome::Written
    );
    drop(sink);
    assert!(!out.exists(), "a killed run leaves no final file");
    assert!(partial_of(&out).exists());

    // The kill hit in the middle of the third row.
    let mut partial = std::fs::OpenOptions::new()
        .append(true)
        .open(partial_of(&out))
        .unwrap();
    partial.write_all(b"c,0.3,\"note for c").unwrap();
    drop(partial);

    // Second run resumes: a and b are done, c's torn line is dropped.
    let mut sink = RowSink::file(&out, &HEADER, &order, false).unwrap();
    let resumed = sink.resumed().clone();
    assert_eq!(resumed.rows_in_partial, 2);
    assert_eq!(resumed.rows_in_output, 0);
    assert!(resumed.dropped_incomplete_line);
    assert!(sink.is_resumed("a"));
    assert!(sink.is_resumed("b"));
    assert!(!sink.is_resumed("c"));

    for id in ["e", "c", "d"] {
        sink.write_row(&row(id, 1.0 / 3.0)).unwrap();
    }
    assert_eq!(sink.finish().unwrap(), WriteOutcome::Written);

    let rows = read_rows(&out);
    let expected_ids = ["id", "a", "b", "c", "d", "e"];
    let found_ids: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(found_ids, expected_ids);
    assert_eq!(rows[1], row("a", 0.1));
    assert_eq!(rows[3][1].parse::<f32>().unwrap(), 1.0f32 / 3.0);
    assert!(!partial_of(&out).exists());
    assert!(!dir.path().join("emb.csv.tmp").exists());
}

#[test]
fn row_sink_partial_cut_inside_quoted_newline() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb.csv");
    let mut sink = RowSink::file(&out, &HEADER, &["a", "b"], false).unwrap();
    sink.write_row(&row("a", 1.0)).unwrap();
    drop(sink);

    // Torn after an embedded newline: the fragment ends in \n but is incomplete.
    let mut partial = std::fs::OpenOptions::new()
        .append(true)
        .open(partial_of(&out))
        .unwrap();
    partial.write_all(b"b,2,\"first line\n").unwrap();
    drop(partial);

    let mut sink = RowSink::file(&out, &HEADER, &["a", "b"], false).unwrap();
    assert!(sink.resumed().dropped_incomplete_line);
    assert!(!sink.is_resumed("b"));
    sink.write_row(&["b", "2", "first line\nsecond line"])
        .unwrap();
    sink.finish().unwrap();

    let rows = read_rows(&out);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2], ["b", "2", "first line\nsecond line"]);
}

#[test]
fn row_sink_keeps_rows_outside_input_list() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb.csv");

    let mut first = RowSink::file(&out, &HEADER, &["z", "y", "a"], false).unwrap();
    for id in ["z", "y", "a"] {
        first.write_row(&row(id, 1.0)).unwrap();
    }
    first.finish().unwrap();

    // A run over other inputs (another shard into the same file) keeps z and y.
    let mut second = RowSink::file(&out, &HEADER, &["b", "a"], false).unwrap();
    assert_eq!(second.resumed().rows_in_output, 3);
    second.write_row(&row("b", 2.0)).unwrap();
    second.finish().unwrap();

    let found: Vec<String> = read_rows(&out).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(found, ["id", "b", "a", "z", "y"]);
}

#[test]
fn row_sink_header_mismatch_points_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb.csv");
    std::fs::write(&out, "id,mean\na,1\n").unwrap();

    let message = RowSink::file(&out, &HEADER, &["a"], false)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("header"), "{message}");
    assert!(message.contains("--overwrite"), "{message}");
    assert!(message.contains("id,mean"), "{message}");
}

#[test]
fn row_sink_partial_header_mismatch_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb.csv");
    std::fs::write(partial_of(&out), "id,other,note\na,1,x\n").unwrap();

    let message = RowSink::file(&out, &HEADER, &["a"], false)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains(".partial"), "{message}");
    assert!(message.contains("--overwrite"), "{message}");
}

#[test]
fn row_sink_overwrite_ignores_old_rows() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb.csv");
    std::fs::write(&out, "id,mean\nold,1\n").unwrap();
    std::fs::write(partial_of(&out), "id,mean\nstale,2\n").unwrap();

    let mut sink = RowSink::file(&out, &HEADER, &["a"], true).unwrap();
    assert!(sink.resumed().ids.is_empty());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "id,mean\nold,1\n",
        "FILE untouched until finish"
    );
    sink.write_row(&row("a", 1.5)).unwrap();
    sink.finish().unwrap();

    let rows = read_rows(&out);
    assert_eq!(rows, [strings(&HEADER), row("a", 1.5)]);
}

#[test]
fn row_sink_unchanged_output_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb.csv");
    // Rows out of input order: a rewrite would reorder them.
    let text = "id,mean,note\nb,2,x\na,1,y\n";
    std::fs::write(&out, text).unwrap();

    let sink = RowSink::file(&out, &HEADER, &["a", "b"], false).unwrap();
    assert!(sink.is_resumed("a"));
    assert!(sink.is_resumed("b"));
    sink.finish().unwrap();

    assert_eq!(std::fs::read_to_string(&out).unwrap(), text);
    assert!(!partial_of(&out).exists());
}

#[test]
fn row_sink_empty_run_creates_header_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb.csv");
    RowSink::file(&out, &HEADER, &["a"], false)
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "id,mean,note\n");
}

#[test]
fn row_sink_second_writer_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb.csv");
    let _first = RowSink::file(&out, &HEADER, &["a"], false).unwrap();
    let message = RowSink::file(&out, &HEADER, &["a"], false)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("another run"), "{message}");
}

#[test]
fn row_sink_missing_directory_is_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("no/such/dir/emb.csv");
    let result = RowSink::file(&out, &HEADER, &["a"], false);
    assert!(matches!(result, Err(Error::Io { .. })));
}

#[test]
fn row_sink_rejects_wrong_row_length() {
    let mut sink = RowSink::stream(Box::new(SharedBuffer::default()), &HEADER).unwrap();
    assert!(sink.write_row(&["a", "1"]).is_err());
}

// ---------------------------------------------------------------- output: stream

#[test]
fn row_sink_stream_writes_csv() {
    let buffer = SharedBuffer::default();
    let mut sink = RowSink::stream(Box::new(buffer.clone()), &HEADER).unwrap();
    sink.write_row(&row("a", 0.25)).unwrap();
    assert_eq!(
        buffer.text(),
        "id,mean,note\na,0.25,\"note for a, quoted\"\n",
        "row is flushed at once"
    );
    assert_eq!(sink.finish().unwrap(), WriteOutcome::Written);
}

#[test]
fn row_sink_stream_closed_os_pipe() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut sink = RowSink::stream(Box::new(writer), &HEADER).unwrap();
    assert_eq!(
        sink.write_row(&row("a", 1.0)).unwrap(),
        WriteOutcome::Closed
    );
    assert_eq!(
        sink.write_row(&row("b", 1.0)).unwrap(),
        WriteOutcome::Closed
    );
    assert_eq!(sink.finish().unwrap(), WriteOutcome::Closed);
}

#[cfg(unix)]
#[test]
fn row_sink_stream_head_closes_pipe() {
    let mut head = Command::new("head")
        .args(["-n", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = head.stdin.take().unwrap();

    let mut sink = RowSink::stream(Box::new(stdin), &HEADER).unwrap();
    let output = head.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "id,mean,note\n");

    assert_eq!(
        sink.write_row(&row("a", 1.0)).unwrap(),
        WriteOutcome::Closed
    );
    assert_eq!(sink.finish().unwrap(), WriteOutcome::Closed);
}

// ---------------------------------------------------------------- progress

#[test]
fn reporter_plain_lines_per_event() {
    let buffer = SharedBuffer::default();
    let mut reporter = Reporter::to_writer("prism-embed", false, Box::new(buffer.clone()));
    reporter.start(3);
    reporter.item_started("sub-01");
    reporter.item_done("sub-01");
    reporter.item_skipped("sub-02", "already in the output file");
    reporter.item_started("sub-03");
    reporter.item_failed(
        "sub-03",
        Path::new("in/sub-03.nii.gz"),
        &Error::invalid("image is 2-D"),
    );
    let summary = reporter.finish();

    assert_eq!(
        summary,
        Summary {
            done: 1,
            failed: 1,
            skipped: 1
        }
    );
    let text = buffer.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert_eq!(lines[0], "prism-embed: [1/3] started sub-01");
    assert!(
        lines[1].starts_with("prism-embed: [1/3] done sub-01 ("),
        "{}",
        lines[1]
    );
    assert!(lines[1].ends_with(" s)"), "{}", lines[1]);
    assert_eq!(
        lines[2],
        "prism-embed: [2/3] skipped sub-02 (already in the output file)"
    );
    assert_eq!(lines[3], "prism-embed: [3/3] started sub-03");
    assert_eq!(
        lines[4],
        "prism-embed: error: in/sub-03.nii.gz: image is 2-D"
    );
    assert!(
        lines[5].starts_with("prism-embed: 1 done, 1 failed, 1 skipped in "),
        "{}",
        lines[5]
    );
}

#[test]
fn reporter_quiet_prints_errors_only() {
    let buffer = SharedBuffer::default();
    let mut reporter = Reporter::to_writer("prism-embed", true, Box::new(buffer.clone()));
    reporter.start(2);
    reporter.warn("4-D image; using volume 0");
    reporter.item_started("a");
    reporter.item_done("a");
    reporter.item_started("b");
    reporter.item_failed("b", Path::new("b.nii"), &Error::file("b.nii", "truncated"));
    reporter.finish();

    assert_eq!(buffer.text(), "prism-embed: error: b.nii: truncated\n");
}

// ---------------------------------------------------------------- batch loop and exit codes

fn items(names: &[&str]) -> Vec<InputItem> {
    names
        .iter()
        .map(|name| InputItem {
            path: PathBuf::from(format!("{name}.nii.gz")),
            volume: None,
            id: name.to_string(),
            source: InputSource::Nifti,
        })
        .collect()
}

fn fail_on_b(item: &InputItem, _: &mut Reporter) -> prism::Result<Vec<String>> {
    if item.id == "b" {
        return Err(Error::file(&item.path, "unreadable"));
    }
    Ok(vec![format!("{}", item.id.len()), "ok".to_string()])
}

#[test]
fn batch_stops_at_first_failure_keeping_rows() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv");
    let list = items(&["a", "b", "c"]);
    let sink = RowSink::file(&out, &HEADER, &["a", "b", "c"], false).unwrap();

    let result = run_batch(&list, sink, &mut quiet_reporter(), false, fail_on_b);

    let summary = result.as_ref().unwrap();
    assert_eq!(
        *summary,
        Summary {
            done: 1,
            failed: 1,
            skipped: 0
        }
    );
    assert_eq!(Exit::from_result(&result), Exit::ItemsFailed);
    assert!(!out.exists(), "a run with a failed input leaves no final file");
    let found: Vec<String> = read_rows(&partial_of(&out)).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(found, ["id", "a"]);
}

#[test]
fn batch_keep_going_completes_others() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv");
    let list = items(&["a", "b", "c"]);
    let sink = RowSink::file(&out, &HEADER, &["a", "b", "c"], false).unwrap();

    let result = run_batch(&list, sink, &mut quiet_reporter(), true, fail_on_b);

    assert_eq!(
        result.as_ref().unwrap(),
        &Summary {
            done: 2,
            failed: 1,
            skipped: 0
        }
    );
    assert_eq!(Exit::from_result(&result), Exit::ItemsFailed);
    assert!(!out.exists(), "a run with a failed input leaves no final file");
    let found: Vec<String> = read_rows(&partial_of(&out)).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(found, ["id", "a", "c"]);
}

#[test]
fn batch_rerun_skips_done_and_retries_failed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv");
    let list = items(&["a", "b", "c"]);
    let ids = ["a", "b", "c"];
    let sink = RowSink::file(&out, &HEADER, &ids, false).unwrap();
    run_batch(&list, sink, &mut quiet_reporter(), true, fail_on_b).unwrap();

    let sink = RowSink::file(&out, &HEADER, &ids, false).unwrap();
    let mut processed = Vec::new();
    let result = run_batch(&list, sink, &mut quiet_reporter(), false, |item, _| {
        processed.push(item.id.clone());
        Ok(vec!["1".to_string(), "ok".to_string()])
    });

    assert_eq!(processed, ["b"]);
    assert_eq!(
        result.as_ref().unwrap(),
        &Summary {
            done: 1,
            failed: 0,
            skipped: 2
        }
    );
    assert_eq!(Exit::from_result(&result), Exit::Success);
    let found: Vec<String> = read_rows(&out).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(found, ["id", "a", "b", "c"]);
}

#[test]
fn batch_closed_stdout_is_success() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let sink = RowSink::stream(Box::new(writer), &HEADER).unwrap();
    let mut calls = 0;
    let result = run_batch(
        &items(&["a", "b", "c"]),
        sink,
        &mut quiet_reporter(),
        false,
        |_, _| {
            calls += 1;
            Ok(vec!["1".to_string(), "ok".to_string()])
        },
    );

    assert_eq!(calls, 1, "the run stops once the pipe is closed");
    assert_eq!(Exit::from_result(&result), Exit::Success);
}

// ---------------------------------------------------------------- docs

fn small_command(with_extra_flag: bool) -> clap::Command {
    let command = clap::Command::new("prism-demo")
        .version("1.0.0")
        .about("Demo tool")
        .arg(clap::Arg::new("input").required(true).help("Input scan"))
        .arg(
            clap::Arg::new("quiet")
                .long("quiet")
                .action(clap::ArgAction::SetTrue)
                .help("Print only errors"),
        );
    if with_extra_flag {
        command.arg(
            clap::Arg::new("fast")
                .long("fast")
                .action(clap::ArgAction::SetTrue)
                .help("Go faster"),
        )
    } else {
        command
    }
}

#[test]
fn docs_check_fails_then_updates_then_passes() {
    let dir = tempfile::tempdir().unwrap();
    let command = small_command(false);

    let message = check_generated_docs(&command, dir.path(), false).unwrap_err();
    assert!(message.contains("PRISM_UPDATE_DOCS=1"), "{message}");
    assert!(message.contains("man/prism-demo.1"), "{message}");

    check_generated_docs(&command, dir.path(), true).unwrap();
    assert!(dir.path().join("man/prism-demo.1").exists());
    for shell in prism::cli::docs::COMPLETION_SHELLS {
        assert!(
            dir.path()
                .join(completion_path("prism-demo", shell))
                .exists(),
            "{shell:?}"
        );
    }
    let page = std::fs::read_to_string(dir.path().join("man/prism-demo.1")).unwrap();
    assert!(page.contains("quiet"), "man page lists the flag");

    assert_eq!(check_generated_docs(&command, dir.path(), false), Ok(()));
}

#[test]
fn docs_check_detects_changed_flag() {
    let dir = tempfile::tempdir().unwrap();
    check_generated_docs(&small_command(false), dir.path(), true).unwrap();

    let message = check_generated_docs(&small_command(true), dir.path(), false).unwrap_err();
    assert!(message.contains("man/prism-demo.1"), "{message}");
    assert!(message.contains("completions/prism-demo.bash"), "{message}");
    assert!(message.contains("completions/_prism-demo"), "{message}");
    assert!(message.contains("completions/prism-demo.fish"), "{message}");
}

// ---------------------------------------------------------------- threads

const THREADS_CHILD_VAR: &str = "PRISM_TEST_THREADS_CHILD";

/// Runs `threads_child_process` in a fresh process, because `--threads` sets
/// environment variables and rayon's global pool, which must happen before any
/// other thread of the process starts.
#[test]
fn threads_option_sets_rayon_and_candle() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "threads_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(THREADS_CHILD_VAR, "1")
        .env_remove("RAYON_NUM_THREADS")
        .env_remove("CANDLE_NUM_THREADS")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("1 passed"), "{log}");
}

/// The body of `threads_option_sets_rayon_and_candle`; does nothing unless run by it.
#[test]
fn threads_child_process() {
    if std::env::var(THREADS_CHILD_VAR).is_err() {
        return;
    }
    let threads = std::num::NonZeroUsize::new(3);
    prism::cli::args::configure_threads(threads).unwrap();

    assert_eq!(rayon::current_num_threads(), 3);
    assert_eq!(candle_core::utils::get_num_threads(), 3);
    assert_eq!(std::env::var("CANDLE_NUM_THREADS").unwrap(), "3");
    assert!(prism::cli::args::configure_threads(std::num::NonZeroUsize::new(2)).is_err());
}
