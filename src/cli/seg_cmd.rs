//! `prism-seg`: segmentation with a fine-tuned SwinUNETR. The `predict` verb lives here; `train`
//! ([`crate::cli::seg_train`]) and `eval` ([`crate::cli::seg_eval`]) have their own modules.
//!
//! `prism-seg predict` writes one label map per scan into `--out-dir` (`{id}.nii.gz` by default, on
//! the scan's own grid: same shape and affine) and one CSV row per scan of label volumes in mm³.
//! Rows go to standard output or `-o FILE`, which a rerun resumes as `prism-embed` does. A scan
//! whose label map already exists is not run through the network again, unless `--overwrite` is
//! given: its volumes are read back from the map.
//!
//! A model may have a JSON description beside it (`model.safetensors` → `model.json`, written
//! by `prism-seg train`) giving label names, the voxel spacing and window size it was trained
//! with; command-line options override it.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cli::args::BatchArgs;
use crate::cli::seg_eval::{read_label_table, EvalArgs};
use crate::cli::seg_train::{run_train, TrainArgs};
use crate::cli::Exit;
use crate::cli::batch::run_batch;
use crate::cli::embed_cmd::PreprocessMode;
use crate::cli::inputs::{load_input, InputItem};
use crate::cli::progress::{Reporter, Summary};
use crate::cli::provenance::{record, sha256_file, write_sidecar};
use crate::cli::resumable::{finish_sidecars, open_output, output_file, select_items, three};
use crate::cli::output::RowSink;
use crate::error::{Error, Result};
use crate::io::{load_volume, write_volume, write_volumes, OutputDtype, WriteOptions};
use crate::model::SwinUnetr;
use crate::preprocess::PreprocessOptions;
use crate::seg::predict::{predict, PredictOptions, Prediction};
use crate::seg::sliding::SlidingWindow;
use crate::volume::Volume;

pub const TOOL: &str = "prism-seg";

/// Default window edge in voxels: the 96³ crops PRISM fine-tunes on.
const DEFAULT_ROI: usize = 96;

/// Default fraction shared by neighbouring windows (nnU-Net's choice; MONAI's default is 0.25).
const DEFAULT_OVERLAP: f64 = 0.5;

/// Window sizes must be multiples of SwinUNETR's total down-sampling.
const ROI_MULTIPLE: usize = 32;

/// Segment MRI scans with PRISM's SwinUNETR, fine-tune it, and score label maps
#[derive(Debug, Clone, Parser)]
#[command(name = "prism-seg", version)]
pub struct SegCli {
    #[command(subcommand)]
    pub command: SegCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum SegCommand {
    /// Write a label map per scan and a CSV of label volumes
    Predict(PredictArgs),
    /// Fine-tune SwinUNETR on labelled scans
    Train(TrainArgs),
    /// Score label maps against reference label maps (Dice, HD95, volumes)
    Eval(EvalArgs),
}

impl SegCli {
    /// `--threads` of the chosen verb, for `main` to apply before anything starts threads.
    pub fn threads(&self) -> Option<NonZeroUsize> {
        match &self.command {
            SegCommand::Predict(p) => p.batch.threads,
            SegCommand::Train(t) => t.threads,
            SegCommand::Eval(e) => e.threads,
        }
    }

    pub fn quiet(&self) -> bool {
        match &self.command {
            SegCommand::Predict(p) => p.batch.quiet,
            SegCommand::Train(t) => t.quiet,
            SegCommand::Eval(e) => e.quiet,
        }
    }
}

/// Runs the chosen verb and returns the exit code of a run that started. `Err` is a failure
/// before that (arguments, model, data, output), which exits 2.
pub fn run(cli: &SegCli, reporter: &mut Reporter) -> Result<Exit> {
    match &cli.command {
        SegCommand::Predict(args) => run_predict(args, reporter).map(|s| Exit::from_summary(&s)),
        SegCommand::Train(args) => run_train(args),
        SegCommand::Eval(args) => crate::cli::seg_eval::run(args, reporter).map(|s| Exit::from_summary(&s)),
    }
}

#[derive(Debug, Clone, Args)]
#[command(long_about = PREDICT_ABOUT)]
pub struct PredictArgs {
    #[command(flatten)]
    pub batch: BatchArgs,

    /// Fine-tuned SwinUNETR: a state dict (.pt, as torch.save(model.state_dict()) writes
    /// it) or .safetensors with the same names
    #[arg(short, long, value_name = "FILE", env = "PRISM_SEG_MODEL", hide_env_values = true)]
    pub model: PathBuf,

    /// Folder for the label maps (created if missing)
    #[arg(short = 'd', long, value_name = "DIR")]
    pub out_dir: PathBuf,

    /// File name of each label map, without .nii.gz: {id} is the scan's id (letters, digits,
    /// '-', '_' and '.' around it)
    #[arg(long, value_name = "TEMPLATE", default_value = "{id}")]
    pub template: String,

    /// Sliding-window size in voxels: one edge, or three for i,j,k; multiples of 32
    /// (default: the model description's, else 96)
    #[arg(long, value_name = "N", value_delimiter = ',')]
    pub roi: Option<Vec<usize>>,

    /// Fraction of a window shared with its neighbour, in [0, 1)
    #[arg(long, value_name = "F", default_value_t = DEFAULT_OVERLAP)]
    pub overlap: f64,

    /// Average the predictions over the 8 mirrorings of the three axes (8 times slower)
    #[arg(long)]
    pub mirror: bool,

    /// Preprocessing: `prism` (RAS+, resampling to --spacing, foreground crop, z-score over
    /// non-zero voxels, zero padding to a multiple of 32) or `none` (the voxel array as it is)
    #[arg(long, value_enum, default_value_t = PreprocessMode::Prism)]
    pub preprocess: PreprocessMode,

    /// Voxel spacing in mm the network runs at, one value or three (default: the model
    /// description's, else 1)
    #[arg(long, value_name = "MM", value_delimiter = ',')]
    pub spacing: Option<Vec<f64>>,

    /// Also write {id}_prob.nii.gz: 4-D float32, volume K the probability of class K
    /// (0 = background). Costs one float per class and voxel of memory, which the label map
    /// alone avoids
    #[arg(long)]
    pub probabilities: bool,

    /// Also write {id}_qc.png: three orthogonal slices through the labelled region with the
    /// labels overlaid
    #[arg(long)]
    pub qc: bool,

    /// Label names for the CSV columns, from a CSV `id,name` or text lines `ID name` (the
    /// AAL atlas format). Default: the model description's names, else label_K
    #[arg(long, value_name = "TABLE")]
    pub labels: Option<PathBuf>,

    /// Volume of 4-D inputs to segment (0-based)
    #[arg(long, value_name = "N")]
    pub volume: Option<usize>,
}

const PREDICT_ABOUT: &str = "\
Segment MRI scans with a fine-tuned PRISM SwinUNETR.

Each input (NIfTI file or DICOM series) is preprocessed as the model was trained,
segmented in overlapping windows blended with Gaussian weights, and the label map
is mapped back onto the scan's own grid: the output has the input's shape and
affine, whatever its orientation and spacing. Label maps go to --out-dir as
{id}.nii.gz; one CSV row per scan (id, path, label_map, then the volume in mm3 of
each foreground label) goes to standard output or --output FILE.

Memory: stitching holds classes x roi x H x W floats of the network grid, plus one
label per voxel; --probabilities adds one float per class and voxel.

Exit status: 0 success, 1 some inputs failed, 2 invalid usage or configuration.";

/// Description `prism-seg train` writes beside a model: everything `predict` needs to prepare
/// inputs as the model saw them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelDescription {
    /// Class names, background first; the label value is the index.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Voxel spacing in mm of the training data after resampling.
    #[serde(default)]
    pub spacing_mm: Option<[f64; 3]>,
    /// Training crop size in voxels.
    #[serde(default)]
    pub roi: Option<[usize; 3]>,
}

impl ModelDescription {
    /// `model.safetensors` → `model.json`.
    pub fn path_for(model: &Path) -> PathBuf {
        model.with_extension("json")
    }

    /// Reads the description beside `model`; absent means every field unset.
    pub fn read_for(model: &Path) -> Result<ModelDescription> {
        let path = Self::path_for(model);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| Error::file(&path, format!("invalid model description: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ModelDescription::default()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }
}

impl PredictArgs {
    fn options(&self, described: &ModelDescription) -> Result<PredictOptions> {
        let roi = match &self.roi {
            Some(r) => three("--roi", r, |v| v > 0 && v % ROI_MULTIPLE == 0).map_err(|_| {
                Error::invalid(format!(
                    "invalid --roi {r:?}: give one or three window sizes in voxels, each a positive \
                     multiple of {ROI_MULTIPLE}, such as 96 or 64,96,96"
                ))
            })?,
            None => described.roi.unwrap_or([DEFAULT_ROI; 3]),
        };
        if !(0.0..1.0).contains(&self.overlap) {
            return Err(Error::invalid(format!(
                "invalid --overlap {}: the fraction shared by neighbouring windows must be in [0, 1)",
                self.overlap
            )));
        }
        let preprocess = match self.preprocess {
            PreprocessMode::None => PreprocessOptions::none(),
            PreprocessMode::Prism => {
                let mut p = PreprocessOptions::prism_default();
                p.spacing = Some(match &self.spacing {
                    Some(s) => three("--spacing", s, |v| v.is_finite() && v >= 0.05)?,
                    None => described.spacing_mm.unwrap_or([1.0; 3]),
                });
                p
            }
        };
        Ok(PredictOptions {
            preprocess,
            window: SlidingWindow { roi, overlap: self.overlap, mirror: self.mirror },
            probabilities: self.probabilities,
        })
    }
}

/// Rejects a `--template` without `{id}` (every scan would get one file name) or with characters
/// that could leave the output folder.
fn check_template(template: &str) -> Result<()> {
    let rest = template.replace("{id}", "");
    let safe = rest.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !template.contains("{id}") || !safe || rest.starts_with('.') {
        return Err(Error::invalid(format!(
            "invalid --template {template:?}: it must contain {{id}}, and around it only letters, digits, \
             '-', '_' and '.' (for example {{id}}_seg)"
        )));
    }
    Ok(())
}

/// Class names for the CSV columns: from `--labels`, else the model description, else `label_K`.
fn label_names(table: Option<&BTreeMap<u32, String>>, described: &ModelDescription, classes: usize) -> Vec<String> {
    (0..classes)
        .map(|k| {
            let from_table = table.and_then(|t| t.get(&(k as u32)).cloned());
            from_table.or_else(|| described.labels.get(k).cloned()).unwrap_or_else(|| format!("label_{k}"))
        })
        .collect()
}

/// Makes a CSV column name of safe characters: `{name}_mm3`.
fn volume_column(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    format!("{}_mm3", safe.trim_matches('_'))
}

fn run_predict(args: &PredictArgs, reporter: &mut Reporter) -> Result<Summary> {
    let described = ModelDescription::read_for(&args.model)?;
    let options = args.options(&described)?;
    check_template(&args.template)?;
    let device = args.batch.device.open()?;
    let items = select_items(&args.batch, reporter)?;

    let net = crate::weights::load_swin_unetr(&args.model, &device)?;
    let classes = net.config().out_channels;
    if net.config().encoder.in_chans != 1 {
        // NOTE: multi-channel models need several co-registered scans per case
        // (nnU-Net's CASE_0000, CASE_0001 naming); predict reads one scan per case.
        return Err(Error::file(
            &args.model,
            format!("the model takes {} input channels; prism-seg predict handles single-channel models", net.config().encoder.in_chans),
        ));
    }
    let table = args.labels.as_deref().map(read_label_table).transpose()?;
    let names = label_names(table.as_ref(), &described, classes);
    std::fs::create_dir_all(&args.out_dir)
        .map_err(|e| Error::file(&args.out_dir, format!("cannot create the output folder: {e}")))?;

    let mut header = vec!["id".to_string(), "path".to_string(), "label_map".to_string()];
    header.extend(names.iter().skip(1).map(|n| volume_column(n)));
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let record = predict_record(args, &options, &names)?;
    write_sidecar(&args.out_dir.join("predict"), &record)?;

    let output = output_file(&args.batch);
    let sink = match output {
        Some(path) => open_output(path, &header, &items, args.batch.overwrite, &record, &["model", "options"])?,
        None => RowSink::stdout(&header)?,
    };
    let job = PredictJob { args, net, options, device, classes };
    let summary = run_batch(&items, sink, reporter, args.batch.keep_going, |item, reporter| {
        job.process(item, reporter)
    })?;
    finish_sidecars(output, &record, &summary)?;
    Ok(summary)
}

/// The per-scan work of `predict`.
struct PredictJob<'a> {
    args: &'a PredictArgs,
    net: SwinUnetr,
    options: PredictOptions,
    device: candle_core::Device,
    classes: usize,
}

impl PredictJob<'_> {
    fn process(&self, item: &InputItem, reporter: &mut Reporter) -> Result<Vec<String>> {
        let stem = self.args.template.replace("{id}", &item.id);
        let label_path = self.args.out_dir.join(format!("{stem}.nii.gz"));
        let labels = if label_path.exists() && !self.args.batch.overwrite {
            reporter.info(&format!("{}: reusing {}", item.id, label_path.display()));
            load_volume(&label_path, None)?.0
        } else {
            let volume = load_input(item, self.args.volume)?;
            let prediction = predict(&self.net, volume.clone(), &self.options, &self.device)
                .map_err(|e| on_file(&item.path, e))?;
            self.write_outputs(&stem, &label_path, &volume, &prediction)?;
            prediction.labels
        };

        let mut row = vec![item.path.display().to_string(), label_path.display().to_string()];
        row.extend(label_volumes_mm3(&labels, self.classes).iter().skip(1).map(|v| format!("{v:.3}")));
        Ok(row)
    }

    fn write_outputs(&self, stem: &str, label_path: &Path, input: &Volume, prediction: &Prediction) -> Result<()> {
        let dtype = if self.classes <= 256 { OutputDtype::Uint8 } else { OutputDtype::Int16 };
        let options = WriteOptions { descrip: format!("{TOOL} labels"), ..WriteOptions::default() }.with_dtype(dtype);
        if let Some(maps) = &prediction.probabilities {
            let path = self.args.out_dir.join(format!("{stem}_prob.nii.gz"));
            write_volumes(&path, maps, &WriteOptions::default())?;
        }
        if self.args.qc {
            let path = self.args.out_dir.join(format!("{stem}_qc.png"));
            crate::seg::qc::write_overlay(&path, input, &prediction.labels)?;
        }
        // The label map goes last: its presence marks the scan as finished for a rerun.
        write_volume(label_path, &prediction.labels, &options)
    }
}

/// Volume of each label value 0..classes in mm³ (voxel count × voxel volume).
pub fn label_volumes_mm3(labels: &Volume, classes: usize) -> Vec<f64> {
    let voxel = labels.affine.voxel_volume();
    let mut counts = vec![0u64; classes];
    for &v in labels.data.iter() {
        if let Some(c) = counts.get_mut(v as usize) {
            *c += 1;
        }
    }
    counts.iter().map(|&c| c as f64 * voxel).collect()
}

fn on_file(path: &Path, e: Error) -> Error {
    match e {
        Error::Invalid(m) => Error::file(path, m),
        other => other,
    }
}

/// Provenance: the model's checksum and every option that changes the label maps.
fn predict_record(args: &PredictArgs, options: &PredictOptions, names: &[String]) -> Result<Value> {
    let p = &options.preprocess;
    let details = json!({
        "settings": {
            "model": { "sha256": sha256_file(&args.model)?, "labels": names },
            "options": {
                "preprocess": format!("{:?}", args.preprocess).to_lowercase(),
                "spacing_mm": p.spacing,
                "roi": options.window.roi,
                "overlap": options.window.overlap,
                "mirror": options.window.mirror,
            },
        },
        "model_path": args.model.display().to_string(),
        "device": args.batch.device.to_string(),
    });
    Ok(record(TOOL, details))
}

