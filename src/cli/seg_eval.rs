//! `prism-seg eval`: predicted label maps against reference label maps, one CSV
//! row per case and label (metrics defined in [`crate::seg::metrics`]).
//!
//! Pairing follows nnU-Net v2's `compute_metrics_on_folder`: a prediction and a
//! reference belong together when their file names match, and directories are
//! listed without recursion. Here the name is compared without `.nii`/`.nii.gz`,
//! so `x.nii` pairs with `x.nii.gz`, and hidden files are skipped. Two files
//! given directly form one case whatever their names. nnU-Net stops when a
//! prediction has no reference and ignores references without a prediction.
//! Here a prediction without a reference is reported and left out, and a
//! reference without a prediction is a failed case, because its metrics are
//! missing from the output.
//!
//! Each case must have equal shapes and affines (within [`AFFINE_TOLERANCE_MM`])
//! in both files, and integer voxel values. A case that fails stops the run
//! unless `--keep-going` is given. Then the other cases are evaluated, as in the
//! other `prism-*` tools.
//!
//! Labels: label 0 is background and never evaluated. Without `--labels` each
//! case is evaluated on the non-zero labels found in either file. With a table,
//! every label of the table is evaluated in every case (those absent from both
//! files get status `both_empty`), plus any other label found, with a warning.
//!
//! Output: `-o FILE` is written atomically when every case succeeded. When a case
//! failed, `FILE` is left as it was and the rows of the evaluated cases go to
//! `FILE.partial` instead. Every run evaluates all cases again. `-o -` writes the
//! CSV to standard output.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Write;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use ndarray::Array3;

use crate::cli::progress::{Reporter, Summary};
use crate::io::atomic::{reject_output_over_input, temp_file_beside};
use crate::seg::metrics::{evaluate_labels, labels_present, LabelMetrics, LabelStatus};
use crate::{Affine, Error, Result};

pub const TOOL: &str = "prism-seg";

/// Largest difference between any two elements of the prediction's and the
/// reference's affines, in mm (or mm per voxel for the linear part). NIfTI stores
/// the sform in float32, which rounds a 100 mm offset by about 1e-5 mm, so files
/// written from the same grid agree far within it.
pub const AFFINE_TOLERANCE_MM: f64 = 1e-3;

/// Largest distance of a voxel value from the nearest integer that still counts
/// as that integer label (float files and `scl_slope` scaling can add rounding error).
pub const LABEL_TOLERANCE: f32 = 1e-3;

/// Largest label accepted: 2^24, above which `f32` (the type voxels are loaded as)
/// cannot represent every integer.
pub const MAX_LABEL: u32 = 1 << 24;

/// CSV columns, in order.
pub const COLUMNS: [&str; 10] = [
    "case",
    "label",
    "name",
    "dice",
    "hd95_mm",
    "volume_pred_mm3",
    "volume_ref_mm3",
    "volume_diff_mm3",
    "volume_diff_percent",
    "status",
];

/// Evaluate predicted label maps against reference label maps
#[derive(Debug, Clone, clap::Args)]
#[command(long_about = LONG_ABOUT)]
pub struct EvalArgs {
    /// Predicted label maps: a NIfTI file (.nii, .nii.gz) or a directory of them
    /// (not searched recursively)
    #[arg(long, value_name = "DIR_OR_FILE")]
    pub pred: PathBuf,

    /// Reference label maps: a NIfTI file or a directory; a prediction pairs with
    /// the reference of the same file name
    #[arg(long = "ref", value_name = "DIR_OR_FILE")]
    pub reference: PathBuf,

    /// Label names: a CSV file with columns id,name (header optional) or a text
    /// file with lines `ID<TAB>name` or `ID name [...]`. Every label in it is
    /// evaluated in every case
    #[arg(long, value_name = "TABLE")]
    pub labels: Option<PathBuf>,

    /// File whose affine gives the voxel spacing for distances and volumes
    #[arg(long, value_enum, default_value_t = SpacingFrom::Ref)]
    pub spacing_from: SpacingFrom,

    /// Write the CSV to FILE (- for standard output). FILE is replaced only when
    /// every case succeeded; otherwise the rows go to FILE.partial
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,

    /// Continue after a case fails; the exit status is then 1 if any case failed
    #[arg(long)]
    pub keep_going: bool,

    /// Print only errors on standard error (no progress, no summary)
    #[arg(short, long)]
    pub quiet: bool,

    /// Number of CPU threads (sets RAYON_NUM_THREADS; default: all logical CPUs)
    #[arg(long, value_name = "N")]
    pub threads: Option<NonZeroUsize>,
}

/// Source of the voxel spacing of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SpacingFrom {
    Ref,
    Pred,
}

const LONG_ABOUT: &str = "\
Evaluate predicted label maps against reference label maps.

Predictions pair with references by file name (without .nii/.nii.gz), as in
nnU-Net's compute_metrics_on_folder. For each case and each non-zero label the CSV gets
one row: Dice, the 95th-percentile symmetric Hausdorff distance in mm (MONAI
1.4.0's definition: surface voxels, exact Euclidean distances with the voxel
spacing, 95th percentile of each direction, the larger of the two), volumes in
mm^3 and the volume difference (prediction minus reference) in mm^3 and percent
of the reference.

Empty masks: status both_empty gives Dice 1 and HD95 0; pred_empty and ref_empty
give Dice 0 and an empty HD95 (and ref_empty an empty percentage). A per-label
summary (mean and SD over cases) is printed to standard error.";

/// One prediction and its reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasePair {
    /// File name without `.nii`/`.nii.gz`.
    pub case: String,
    pub pred: Option<PathBuf>,
    pub reference: Option<PathBuf>,
}

/// Cases found under `--pred` and `--ref`, sorted by case name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pairing {
    /// Cases with a reference; `pred` is `None` where the prediction is missing.
    pub cases: Vec<CasePair>,
    /// Predictions without a reference.
    pub pred_only: Vec<PathBuf>,
}

/// Evaluates every case and writes the CSV (see the module documentation).
///
/// Returns `Err` for problems outside single cases (unreadable inputs, label
/// table or output path); failed cases are counted in the [`Summary`].
pub fn run(args: &EvalArgs, reporter: &mut Reporter) -> Result<Summary> {
    let pairing = pair_cases(&args.pred, &args.reference)?;
    let names = match &args.labels {
        Some(path) => Some(read_label_table(path)?),
        None => None,
    };
    let to_stdout = args.output == Path::new("-");
    if !to_stdout {
        let inputs: Vec<&Path> = pairing.cases.iter().flat_map(case_files).collect();
        reject_output_over_input(&args.output, &inputs)?;
    }

    for path in &pairing.pred_only {
        reporter.warn(&format!(
            "{}: no reference with this case name in {}; not evaluated",
            path.display(),
            args.reference.display()
        ));
    }

    let evaluated = evaluate_cases(&pairing.cases, names.as_ref(), args, reporter);
    print_label_summaries(&summarize_labels(&evaluated), names.as_ref(), reporter);
    let rows: Vec<Vec<String>> = evaluated
        .iter()
        .flat_map(|case| case_rows(case, names.as_ref()))
        .collect();

    let failed = reporter.failed_so_far();
    let written = if to_stdout {
        write_csv(&mut std::io::stdout().lock(), &rows).map_err(|e| Error::io("<stdout>", e))
    } else {
        write_output(&args.output, &rows, failed, reporter)
    };
    let summary = reporter.finish();
    written?;
    Ok(summary)
}

fn case_files(case: &CasePair) -> Vec<&Path> {
    case.pred
        .iter()
        .chain(case.reference.iter())
        .map(PathBuf::as_path)
        .collect()
}

/// Metrics of one evaluated case.
#[derive(Debug, Clone)]
pub struct CaseMetrics {
    pub case: String,
    pub labels: Vec<LabelMetrics>,
}

/// Evaluates the cases in order; stops at the first failure unless `keep_going`.
fn evaluate_cases(
    cases: &[CasePair],
    names: Option<&BTreeMap<u32, String>>,
    args: &EvalArgs,
    reporter: &mut Reporter,
) -> Vec<CaseMetrics> {
    reporter.start(cases.len());
    let mut evaluated = Vec::with_capacity(cases.len());

    for case in cases {
        reporter.item_started(&case.case);
        match evaluate_case(case, names, args.spacing_from, reporter) {
            Ok(labels) => {
                evaluated.push(CaseMetrics {
                    case: case.case.clone(),
                    labels,
                });
                reporter.item_done(&case.case);
            }
            Err(error) => {
                let path = case
                    .pred
                    .as_ref()
                    .or(case.reference.as_ref())
                    .cloned()
                    .unwrap_or_default();
                reporter.item_failed(&case.case, &path, &error);
                if !args.keep_going {
                    reporter.info("stopped at the first failure; pass --keep-going to evaluate the other cases");
                    break;
                }
            }
        }
    }
    evaluated
}

/// Loads, checks and measures one case.
pub fn evaluate_case(
    case: &CasePair,
    names: Option<&BTreeMap<u32, String>>,
    spacing_from: SpacingFrom,
    reporter: &mut Reporter,
) -> Result<Vec<LabelMetrics>> {
    let (Some(pred_path), Some(ref_path)) = (&case.pred, &case.reference) else {
        let present = case
            .reference
            .as_ref()
            .or(case.pred.as_ref())
            .cloned()
            .unwrap_or_default();
        return Err(Error::file(present, "no prediction with this case name"));
    };
    let (pred, pred_affine) = load_label_map(pred_path)?;
    let (reference, ref_affine) = load_label_map(ref_path)?;
    check_same_grid(
        pred_path,
        &pred,
        &pred_affine,
        ref_path,
        &reference,
        &ref_affine,
    )?;

    let spacing = match spacing_from {
        SpacingFrom::Ref => ref_affine.spacing(),
        SpacingFrom::Pred => pred_affine.spacing(),
    };
    let found: Vec<u32> = labels_present(pred.view(), reference.view())
        .into_iter()
        .filter(|&l| l != 0)
        .collect();
    let labels = match names {
        Some(names) => {
            warn_unnamed(&case.case, &found, names, reporter);
            let mut all: BTreeSet<u32> = names.keys().copied().filter(|&l| l != 0).collect();
            all.extend(found);
            all.into_iter().collect()
        }
        None => found,
    };
    evaluate_labels(pred.view(), reference.view(), spacing, &labels)
}

fn warn_unnamed(case: &str, found: &[u32], names: &BTreeMap<u32, String>, reporter: &mut Reporter) {
    let unnamed: Vec<String> = found
        .iter()
        .filter(|l| !names.contains_key(l))
        .map(u32::to_string)
        .collect();
    if !unnamed.is_empty() {
        reporter.warn(&format!(
            "{case}: labels {} are not in the label table; evaluated without a name",
            unnamed.join(", ")
        ));
    }
}

fn check_same_grid(
    pred_path: &Path,
    pred: &Array3<u32>,
    pred_affine: &Affine,
    ref_path: &Path,
    reference: &Array3<u32>,
    ref_affine: &Affine,
) -> Result<()> {
    if pred.shape() != reference.shape() {
        return Err(Error::file(
            pred_path,
            format!(
                "shape {:?} differs from shape {:?} of the reference {}; resample the prediction onto the reference grid",
                pred.shape(),
                reference.shape(),
                ref_path.display()
            ),
        ));
    }
    let difference = pred_affine.max_abs_diff(ref_affine);
    if difference.is_nan() || difference > AFFINE_TOLERANCE_MM {
        return Err(Error::file(
            pred_path,
            format!(
                "affine differs from the affine of the reference {} by up to {difference:.3e} mm \
                 (tolerance {AFFINE_TOLERANCE_MM:e}); resample the prediction onto the reference grid",
                ref_path.display()
            ),
        ));
    }
    Ok(())
}

/// Loads a NIfTI label map: voxel values rounded to integer labels, with its affine.
///
/// Fails on a value that is not within [`LABEL_TOLERANCE`] of an integer in
/// 0..=[`MAX_LABEL`] (probabilities, logits, negative values, NaN).
pub fn load_label_map(path: &Path) -> Result<(Array3<u32>, Affine)> {
    let (volume, _) = crate::io::load_volume(path, None)?;
    let is_label = |v: f32| {
        let rounded = v.round();
        (rounded - v).abs() <= LABEL_TOLERANCE && (0.0..=MAX_LABEL as f32).contains(&rounded)
    };

    if let Some(((i, j, k), value)) = volume.data.indexed_iter().find(|(_, &v)| !is_label(v)) {
        return Err(Error::file(
            path,
            format!(
                "voxel [{i}, {j}, {k}] has value {value}, which is not a label; label maps contain \
                 integers from 0 to {MAX_LABEL} (apply argmax or a threshold to probability maps first)"
            ),
        ));
    }
    Ok((volume.data.mapv(|v| v.round() as u32), volume.affine))
}

/// Pairs predictions with references by case name (see the module documentation).
pub fn pair_cases(pred: &Path, reference: &Path) -> Result<Pairing> {
    if pred.is_file() && reference.is_file() {
        return Ok(Pairing {
            cases: vec![CasePair {
                case: case_name(pred)?,
                pred: Some(pred.to_path_buf()),
                reference: Some(reference.to_path_buf()),
            }],
            pred_only: Vec::new(),
        });
    }

    let mut preds = list_label_maps(pred)?;
    let references = list_label_maps(reference)?;
    let mut pairing = Pairing::default();
    for (case, ref_path) in references {
        pairing.cases.push(CasePair {
            pred: preds.remove(&case),
            reference: Some(ref_path),
            case,
        });
    }
    pairing.pred_only = preds.into_values().collect();
    Ok(pairing)
}

/// Maps case name to file for a NIfTI file or the NIfTI files directly in a directory.
fn list_label_maps(path: &Path) -> Result<BTreeMap<String, PathBuf>> {
    if !path.exists() {
        return Err(Error::file(path, "not found"));
    }
    if path.is_file() {
        return Ok(BTreeMap::from([(case_name(path)?, path.to_path_buf())]));
    }

    let mut files: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
        let entry = entry.map_err(|e| Error::io(path, e))?;
        let name = entry.file_name();
        let bytes = name.as_encoded_bytes();
        let is_nifti = bytes.ends_with(b".nii") || bytes.ends_with(b".nii.gz");
        if is_nifti && !bytes.starts_with(b".") && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    if files.is_empty() {
        return Err(Error::file(
            path,
            "no NIfTI files (.nii, .nii.gz) in this directory",
        ));
    }

    let mut by_case: BTreeMap<String, PathBuf> = BTreeMap::new();
    for file in files {
        let case = case_name(&file)?;
        if let Some(other) = by_case.get(&case) {
            return Err(Error::file(
                &file,
                format!(
                    "has the same case name '{case}' as {}; keep one of them",
                    other.display()
                ),
            ));
        }
        by_case.insert(case, file);
    }
    Ok(by_case)
}

/// Returns the file name without `.nii.gz` or `.nii`.
fn case_name(path: &Path) -> Result<String> {
    let name = path
        .file_name()
        .map(OsString::from)
        .and_then(|n| n.into_string().ok())
        .ok_or_else(|| Error::file(path, "file name is not valid UTF-8; rename it"))?;
    let stem = name
        .strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"));
    stem.map(str::to_string)
        .ok_or_else(|| Error::file(path, "not a NIfTI file name (.nii, .nii.gz)"))
}

/// Reads label names from a CSV table `id,name` (first row skipped when its id is
/// not an integer) or a text table with `ID<TAB>name` or whitespace-separated
/// `ID name [more columns]` lines.
pub fn read_label_table(path: &Path) -> Result<BTreeMap<u32, String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let first_line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let entries = if first_line.contains(',') {
        parse_csv_table(path, &text)?
    } else {
        parse_text_table(&text)
    };

    let mut names = BTreeMap::new();
    for (line_number, id, name) in entries {
        let id: u32 = id.trim().parse().map_err(|_| {
            Error::file(
                path,
                format!("line {line_number}: label id '{id}' is not a non-negative integer"),
            )
        })?;
        if names.insert(id, name.trim().to_string()).is_some() {
            return Err(Error::file(
                path,
                format!("line {line_number}: label id {id} is listed twice"),
            ));
        }
    }
    if names.is_empty() {
        return Err(Error::file(path, "label table has no entries"));
    }
    Ok(names)
}

type TableEntry = (usize, String, String);

fn parse_csv_table(path: &Path, text: &str) -> Result<Vec<TableEntry>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut entries = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let record = record.map_err(|e| Error::file(path, format!("invalid CSV: {e}")))?;
        let id = record.get(0).unwrap_or("").to_string();
        let is_header = index == 0 && id.parse::<u32>().is_err();
        if is_header || record.iter().all(str::is_empty) {
            continue;
        }
        let line_number = record.position().map_or(index + 1, |p| p.line() as usize);
        entries.push((line_number, id, record.get(1).unwrap_or("").to_string()));
    }
    Ok(entries)
}

fn parse_text_table(text: &str) -> Vec<TableEntry> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        // A tab separates a name that may contain spaces; otherwise the second word is the name.
        let (id, name) = match line.split_once('\t') {
            Some((id, rest)) => (id, rest.split('\t').next().unwrap_or("")),
            None => {
                let mut words = line.split_whitespace();
                (words.next().unwrap_or(""), words.next().unwrap_or(""))
            }
        };
        entries.push((index + 1, id.to_string(), name.to_string()));
    }
    entries
}

/// Formats the CSV rows of one case.
fn case_rows(case: &CaseMetrics, names: Option<&BTreeMap<u32, String>>) -> Vec<Vec<String>> {
    let optional = |value: Option<f64>| value.map(|v| v.to_string()).unwrap_or_default();
    case.labels
        .iter()
        .map(|m| {
            let name = names
                .and_then(|n| n.get(&m.label))
                .cloned()
                .unwrap_or_default();
            vec![
                case.case.clone(),
                m.label.to_string(),
                name,
                m.dice.to_string(),
                optional(m.hd95_mm),
                m.volume_pred_mm3.to_string(),
                m.volume_ref_mm3.to_string(),
                m.volume_diff_mm3.to_string(),
                optional(m.volume_diff_percent),
                m.status.as_str().to_string(),
            ]
        })
        .collect()
}

fn write_csv(writer: &mut dyn Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut csv_writer = csv::Writer::from_writer(writer);
    csv_writer.write_record(COLUMNS)?;
    for row in rows {
        csv_writer.write_record(row)?;
    }
    csv_writer.flush()
}

/// Writes `FILE` when no case failed, else `FILE.partial`, each through a
/// synced temporary file renamed over the target.
fn write_output(
    output: &Path,
    rows: &[Vec<String>],
    failed: usize,
    reporter: &mut Reporter,
) -> Result<()> {
    let partial = {
        let mut name = OsString::from(output.as_os_str());
        name.push(".partial");
        PathBuf::from(name)
    };
    let target = if failed == 0 {
        output
    } else {
        partial.as_path()
    };

    let mut file = temp_file_beside(target)?;
    write_csv(file.as_file_mut(), rows)
        .and_then(|()| file.as_file().sync_all())
        .map_err(|e| Error::io(target, e))?;
    file.persist(target)
        .map_err(|e| Error::io(target, e.error))?;

    if failed == 0 {
        // A partial file from an earlier failed run is out of date now.
        match std::fs::remove_file(&partial) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(&partial, e))
            }
            _ => {}
        }
    } else {
        reporter.info(&format!(
            "{failed} case(s) failed, so {} was not written; the rows of the evaluated cases are in {}",
            output.display(),
            partial.display()
        ));
    }
    Ok(())
}

/// Statistics of one label over the evaluated cases.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelSummary {
    pub label: u32,
    /// Cases in which the label was evaluated.
    pub cases: usize,
    /// Cases with status other than `ok`.
    pub empty: usize,
    /// Mean and sample SD (n − 1) of Dice over all `cases`; SD is `None` for one case.
    pub dice_mean: f64,
    pub dice_sd: Option<f64>,
    /// Mean and sample SD of HD95 over the cases that have one; `None` when none has.
    pub hd95_mean_mm: Option<f64>,
    pub hd95_sd_mm: Option<f64>,
}

/// Summarizes each label over cases: Dice over every case (including the defined
/// values of empty masks), HD95 over the cases where it is defined.
pub fn summarize_labels(cases: &[CaseMetrics]) -> Vec<LabelSummary> {
    let mut by_label: BTreeMap<u32, Vec<&LabelMetrics>> = BTreeMap::new();
    for metrics in cases.iter().flat_map(|c| &c.labels) {
        by_label.entry(metrics.label).or_default().push(metrics);
    }

    by_label
        .into_iter()
        .map(|(label, metrics)| {
            let dice: Vec<f64> = metrics.iter().map(|m| m.dice).collect();
            let hd95: Vec<f64> = metrics.iter().filter_map(|m| m.hd95_mm).collect();
            let (dice_mean, dice_sd) = mean_sd(&dice);
            let (hd95_mean_mm, hd95_sd_mm) = match hd95.is_empty() {
                true => (None, None),
                false => {
                    let (mean, sd) = mean_sd(&hd95);
                    (Some(mean), sd)
                }
            };
            LabelSummary {
                label,
                cases: metrics.len(),
                empty: metrics
                    .iter()
                    .filter(|m| m.status != LabelStatus::Ok)
                    .count(),
                dice_mean,
                dice_sd,
                hd95_mean_mm,
                hd95_sd_mm,
            }
        })
        .collect()
}

/// Returns the mean and the sample standard deviation (`None` below two values).
fn mean_sd(values: &[f64]) -> (f64, Option<f64>) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, None);
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, Some(variance.sqrt()))
}

fn print_label_summaries(
    summaries: &[LabelSummary],
    names: Option<&BTreeMap<u32, String>>,
    reporter: &mut Reporter,
) {
    if summaries.is_empty() {
        return;
    }
    let format = |mean: Option<f64>, sd: Option<f64>| match (mean, sd) {
        (Some(m), Some(s)) => format!("{m:.4} ± {s:.4}"),
        (Some(m), None) => format!("{m:.4}"),
        _ => "-".to_string(),
    };
    reporter
        .info("per-label summary (mean ± SD over cases; n_empty counts cases with an empty mask):");
    let header = format!(
        "{:>8}  {:<20} {:>5} {:>7}  {:<18} hd95_mm",
        "label", "name", "n", "n_empty", "dice"
    );
    reporter.info(&header);
    for s in summaries {
        let name = names
            .and_then(|n| n.get(&s.label))
            .map_or("", String::as_str);
        let line = format!(
            "{:>8}  {:<20} {:>5} {:>7}  {:<18} {}",
            s.label,
            name,
            s.cases,
            s.empty,
            format(Some(s.dice_mean), s.dice_sd),
            format(s.hd95_mean_mm, s.hd95_sd_mm)
        );
        reporter.info(line.trim_end());
    }
}
