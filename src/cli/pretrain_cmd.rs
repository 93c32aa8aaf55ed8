//! `prism-pretrain`: PRISM's self-supervised pretraining. `train` runs it on a manifest of
//! scans (or a folder), `manifest` writes a manifest from a folder, `export` writes the encoder
//! of a run's checkpoint in the layout `prism-embed --weights` loads.
//!
//! Everything a run writes goes to `--out-dir`: the checkpoints and `train_log.csv` of
//! [`crate::train`], and at the end `encoder.safetensors` (for prism-embed and prism-seg
//! `--init`) and `network.safetensors` (every tensor, for `prism-pretrain train --init`).

use std::cell::RefCell;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use rand::SeedableRng;
use serde_json::json;

use crate::cli::resumable::three;
use crate::cli::Exit;
use crate::error::{Error, Result};
use crate::model::prism_pretrain::PretrainConfig;
use crate::model::SwinConfig;
use crate::pretrain::data::{
    read_manifest, scan_folder, split_by_subject, validation_batches, write_manifest, CorruptConfig, Dataset,
    Holdout, Loader, LoaderConfig, ManifestEntry, Split,
};
use crate::pretrain::synth::SynthConfig;
use crate::pretrain::objective::{ObjectiveConfig, StepInputs};
use crate::pretrain::train::{
    build, export_encoder, export_network, loss_names, train_step, training_state, validation_loss,
    OptimizerSettings, Trainable, OPTIMIZERS,
};
use crate::train::{checkpoint, run, BestMetric, CheckpointKind, Goal, Metrics, RunConfig, StepProgress, StopSignal};
use crate::weights::{infer_swin_config, Checkpoint};

pub const TOOL: &str = "prism-pretrain";

/// Self-supervised pretraining of the PRISM encoder
#[derive(Debug, Clone, Parser)]
#[command(name = "prism-pretrain", version)]
pub struct PretrainCli {
    #[command(subcommand)]
    pub command: PretrainCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum PretrainCommand {
    /// Pretrain (or continue pretraining) on a manifest of scans
    Train(TrainArgs),
    /// Write a manifest CSV for the NIfTI files of a folder (with their JSON sidecars)
    Manifest(ManifestArgs),
    /// Write the encoder (or the whole network) of a run's checkpoint
    Export(ExportArgs),
}

impl PretrainCli {
    /// `--threads` of the chosen verb, for `main` to apply before anything starts threads.
    pub fn threads(&self) -> Option<NonZeroUsize> {
        match &self.command {
            PretrainCommand::Train(t) => t.threads,
            _ => None,
        }
    }

    pub fn quiet(&self) -> bool {
        match &self.command {
            PretrainCommand::Train(t) => t.quiet,
            _ => false,
        }
    }
}

/// Runs the chosen verb and returns its exit code.
pub fn run_cli(cli: &PretrainCli) -> Result<Exit> {
    match &cli.command {
        PretrainCommand::Train(args) => run_train(args),
        PretrainCommand::Manifest(args) => run_manifest(args),
        PretrainCommand::Export(args) => run_export(args),
    }
}

#[derive(Debug, Clone, Args)]
#[command(long_about = TRAIN_ABOUT)]
pub struct TrainArgs {
    /// Training data: a manifest CSV (see `prism-pretrain manifest --help`) or a folder of
    /// NIfTI files with optional JSON sidecars
    #[arg(long, value_name = "CSV_OR_DIR")]
    pub data: PathBuf,

    /// Folder for checkpoints, the log and the exported weights
    #[arg(short = 'd', long, value_name = "DIR")]
    pub out_dir: PathBuf,

    /// Starting weights: a PRISM checkpoint (the encoder, and the heads, generator and style
    /// mapping where present), an encoder alone, or a network.safetensors of an earlier run
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,

    /// Feature size of a network started from scratch (PRISM's published size is 48; the
    /// latent has 16 times as many channels)
    #[arg(long, value_name = "N", default_value_t = 48)]
    pub feature_size: usize,

    /// Swin blocks per encoder stage of a network started from scratch (PRISM's B, L and H
    /// scales: 2,2,2,2; 2,2,6,2; 2,2,18,2)
    #[arg(long, value_name = "N,N,N,N", value_delimiter = ',', default_value = "2,2,2,2")]
    pub depths: Vec<usize>,

    /// Crop size in voxels (1 mm): one edge or three, multiples of 32
    #[arg(long, value_name = "N", value_delimiter = ',', default_value = "96")]
    pub roi: Vec<usize>,

    /// Crops per step (PRISM: 18 per GPU). On a CPU with 16–32 GB of memory use 2 crops of 64³
    /// at feature size 12
    #[arg(long, value_name = "N", default_value_t = 18)]
    pub batch_size: usize,

    /// Peak learning rate of each of the three AdamW optimizers
    #[arg(long, value_name = "LR", default_value_t = 5e-4)]
    pub lr: f64,

    /// AdamW weight decay (applied to every parameter, as PRISM does)
    #[arg(long, value_name = "W", default_value_t = 0.1)]
    pub weight_decay: f64,

    /// Steps of linear warm-up before the cosine decay
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub warmup_steps: u64,

    /// Total training steps, over all resumed sessions
    #[arg(long, value_name = "N", default_value_t = 250_000)]
    pub max_steps: u64,

    /// Stop (saving a checkpoint, exit 3) after this many minutes of this session
    #[arg(long, value_name = "MIN")]
    pub max_time: Option<f64>,

    /// Run the generator step (C) every N steps
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub generator_every: u64,

    /// Weight of the NT-Xent term in the generator step
    #[arg(long, value_name = "W", default_value_t = 0.5)]
    pub contrastive_weight: f64,

    /// NT-Xent temperature
    #[arg(long, value_name = "T", default_value_t = 0.5)]
    pub temperature: f64,

    /// Steps between validations (0: never)
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub validate_every: u64,

    /// Steps between checkpoints (0: only at the end)
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub checkpoint_every: u64,

    /// Subjects held out for the validation reconstruction loss (0: no validation)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub val_subjects: usize,

    /// Validation scans from their own manifest or folder, instead of holding out
    /// --val-subjects of --data
    #[arg(long, value_name = "CSV_OR_DIR")]
    pub val_data: Option<PathBuf>,

    /// Background threads that load, crop and corrupt the next batches
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub workers: usize,

    /// Batches prepared ahead of the training step
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub prefetch: usize,

    /// Seed of every random choice (initialization, split, crops, corruption, styles)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,

    /// Continue the run in --out-dir from its last checkpoint
    #[arg(long)]
    pub resume: bool,

    /// Print only errors
    #[arg(short, long)]
    pub quiet: bool,

    /// Number of CPU threads (sets RAYON_NUM_THREADS and CANDLE_NUM_THREADS)
    #[arg(long, value_name = "N")]
    pub threads: Option<NonZeroUsize>,

    /// Compute device: cpu, cuda or cuda:N
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = crate::cli::args::parse_device_spec)]
    pub device: crate::device::DeviceSpec,
}

const TRAIN_ABOUT: &str = "\
Pretrain the PRISM encoder by PRISM's self-supervised objective.

Scans are oriented to RAS+, resampled to 1 mm and z-scored over non-zero voxels.
Each step draws --batch-size random crops of --roi voxels (random axis permutation
and flips), corrupts them with noise cuboids and cuboids pasted from another crop,
and runs three optimizer steps:
  A  all parameters: L1 reconstruction of the clean crop, L1 on TR/TE/flip angle
     where the manifest gives them, cross-entropy on the body part;
  B  encoder side: discriminator loss on the real crop against the reconstruction
     and a crop re-rendered under a random style, plus the TR/TE/FA and body-part
     losses;
  C  generator side, every --generator-every steps: adversarial and L1 terms, and
     NT-Xent between the structure features of the real and the re-rendered crop.
Each optimizer is AdamW with its own warm-up + cosine schedule.

Checkpoints in --out-dir hold weights, the three optimizer states, random state and
step, so --resume continues exactly. On SIGTERM, SIGUSR1 or SIGINT, or after
--max-time, the run saves and exits 3 so a job script can requeue it with --resume.

Exit status: 0 finished, 2 invalid usage, data or configuration, 3 stopped early
with a checkpoint saved.";

#[derive(Debug, Clone, Args)]
#[command(long_about = MANIFEST_ABOUT)]
pub struct ManifestArgs {
    /// Folder searched recursively for .nii and .nii.gz files
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// Manifest to write (written atomically; an existing file is replaced)
    #[arg(short, long, value_name = "CSV")]
    pub output: PathBuf,
}

const MANIFEST_ABOUT: &str = "\
Write a pretraining manifest for the NIfTI files of a folder.

Columns: path, subject, body_part, tr_ms, te_ms, flip_deg, family, source. Only
path is required; empty cells are missing values. path is a NIfTI file or a DICOM
folder, relative to the manifest's folder. body_part is one of head, neck, chest,
upper_abdomen, lower_abdomen, knee, unknown. tr_ms and te_ms are in milliseconds,
flip_deg in degrees. source is scan (an image), labels (an integer label map,
rendered under a new random contrast each time it is drawn) or tissue (tissue
probability maps on one grid, paths separated by ';').

From a folder, TR, TE, flip angle and body part come from each file's JSON sidecar
(BIDS / dcm2niix: RepetitionTime and EchoTime in seconds, FlipAngle,
BodyPartExamined); the subject is the BIDS sub-* folder, else the file name.";

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Run folder of `prism-pretrain train`
    #[arg(short = 'd', long, value_name = "DIR")]
    pub run_dir: PathBuf,

    /// File to write (.safetensors)
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,

    /// Take the best validation checkpoint instead of the last one
    #[arg(long)]
    pub best: bool,

    /// Write every tensor of the network, not only the encoder
    #[arg(long)]
    pub network: bool,
}

/// Runs `prism-pretrain train`; returns the exit code of a run that started.
pub fn run_train(args: &TrainArgs) -> Result<Exit> {
    if let Some(bad) = args.roi.iter().find(|&&v| v < 64 || v % 32 != 0) {
        return Err(Error::invalid(format!(
            "invalid --roi {bad}: give multiples of 32 of at least 64, so the latent has more than one voxel per axis"
        )));
    }
    let roi = three("--roi", &args.roi, |_| true)?;
    check_numbers(args)?;

    // Checked here as well as in the training loop, so a forgotten --resume fails before the
    // data is loaded.
    let last = CheckpointKind::Last.json_path(&args.out_dir);
    if !args.resume && last.exists() {
        return Err(Error::file(
            &last,
            "a checkpoint of an earlier run is here; add --resume to continue it or choose another output directory",
        ));
    }
    let device = args.device.open()?;

    let entries = read_entries(&args.data)?;
    let split = match &args.val_data {
        Some(path) => Split { train: entries, validation: read_entries(path)? },
        None => split_by_subject(&entries, Holdout::Count(args.val_subjects), args.seed)?,
    };
    let mut progress = StepProgress::new(TOOL, args.quiet, 10);
    progress.info(&format!(
        "{} training and {} validation scans; loading",
        split.train.len(),
        split.validation.len()
    ));
    let val_scans = split.validation.len();
    let train_data = Arc::new(Dataset::load(split.train, SynthConfig::default())?);
    let validation = if split.validation.is_empty() {
        Vec::new()
    } else {
        let val_data = Dataset::load(split.validation, SynthConfig::default())?;
        let batches = validation_batches(&val_data, args.batch_size, roi, &CorruptConfig::default(), args.seed)?;
        batches.iter().map(|b| Ok(b.to_tensors(&device)?.into())).collect::<Result<Vec<StepInputs>>>()?
    };
    progress.info(&format!(
        "{:.0} MB of prepared training volumes in memory",
        train_data.memory_bytes() as f64 / 1e6
    ));

    let config = network_config(args)?;
    let mut init_rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let trainable = build(&config, args.init.as_deref(), &device, &mut init_rng)?;
    let settings = OptimizerSettings {
        lr: args.lr,
        weight_decay: args.weight_decay,
        warmup_steps: args.warmup_steps,
        max_steps: args.max_steps,
    };
    let mut state = training_state(&trainable, settings, args.seed)?;
    let objective = ObjectiveConfig {
        generator_every: args.generator_every,
        contrastive_weight: args.contrastive_weight,
        temperature: args.temperature,
        ..ObjectiveConfig::default()
    };

    let run_config = RunConfig {
        dir: args.out_dir.clone(),
        max_steps: args.max_steps,
        max_time: args.max_time.map(|m| Duration::from_secs_f64(m * 60.0)),
        checkpoint_every: args.checkpoint_every,
        validate_every: if validation.is_empty() { 0 } else { args.validate_every },
        best: (!validation.is_empty()).then(|| BestMetric { name: "val_recon".into(), goal: Goal::Minimize }),
        resume: args.resume,
        losses: loss_names(),
        metrics: vec!["val_recon".into(), "data_wait_s".into()],
        config: run_record(args, &config, &objective, train_data.len(), val_scans),
    };
    let stop = StopSignal::install()?;
    progress.info(&format!(
        "{} of {} tensors from {}",
        trainable.loaded,
        state.model.len(),
        args.init.as_deref().map_or("nowhere (fresh start)".to_string(), |p| p.display().to_string()),
    ));

    // The loader starts at the step the run resumes from, so batches follow (seed, step).
    let first_step = resumed_step(&args.out_dir, args.resume)?;
    let loader_config = LoaderConfig {
        workers: args.workers.max(1),
        prefetch: args.prefetch.max(1),
        ..LoaderConfig::new(args.batch_size, roi, args.seed)
    };
    // Both closures read the loader: the step takes batches, validation its waiting time.
    let loader = RefCell::new(Loader::start(train_data, loader_config, first_step)?);
    let outcome = run(
        &run_config,
        &mut state,
        &stop,
        &mut progress,
        |state| {
            let (step, batch) = loader.borrow_mut().next()?;
            if step != state.step {
                return Err(Error::invalid(format!(
                    "internal: the loader gave the batch of step {step} for step {}",
                    state.step
                )));
            }
            let inputs: StepInputs = batch.to_tensors(&device)?.into();
            train_step(&trainable.net, state, &inputs, &objective)
        },
        |_| {
            Ok(Metrics::from([
                ("val_recon".to_string(), validation_loss(&trainable.net, &validation)?),
                ("data_wait_s".to_string(), loader.borrow().waited().as_secs_f64()),
            ]))
        },
    )?;
    drop(loader);

    export_encoder(&trainable, &args.out_dir.join("encoder.safetensors"))?;
    export_network(&trainable, &args.out_dir.join("network.safetensors"))?;
    Ok(outcome.exit())
}

/// Returns the step a run continues from: the `last` checkpoint's with `--resume`, else 0.
fn resumed_step(dir: &Path, resume: bool) -> Result<u64> {
    if !resume {
        return Ok(0);
    }
    checkpoint::saved_step(dir, CheckpointKind::Last).map(|s| s.unwrap_or(0))
}

/// Rejects values no run can use before any data is read.
fn check_numbers(args: &TrainArgs) -> Result<()> {
    if args.batch_size < 2 {
        return Err(Error::invalid(format!(
            "invalid --batch-size {}: NT-Xent needs at least 2 crops per step",
            args.batch_size
        )));
    }
    if !(args.lr.is_finite() && args.lr > 0.0) || !(args.weight_decay.is_finite() && args.weight_decay >= 0.0) {
        return Err(Error::invalid(format!(
            "invalid --lr {} or --weight-decay {}: give a positive learning rate and a weight decay of at least 0",
            args.lr, args.weight_decay
        )));
    }
    if !(args.temperature.is_finite() && args.temperature > 0.0) {
        return Err(Error::invalid(format!("invalid --temperature {}: give a positive number", args.temperature)));
    }
    if args.depths.len() != 4 || args.depths.contains(&0) {
        return Err(Error::invalid(format!(
            "invalid --depths {:?}: give four positive block counts, one per stage",
            args.depths
        )));
    }
    if args.feature_size == 0 || args.feature_size % 12 != 0 {
        return Err(Error::invalid(format!(
            "invalid --feature-size {}: give a positive multiple of 12 (the stages have 3, 6, 12 and 24 heads)",
            args.feature_size
        )));
    }
    Ok(())
}

fn read_entries(data: &Path) -> Result<Vec<ManifestEntry>> {
    let entries = if data.is_dir() { scan_folder(data)? } else { read_manifest(data)? };
    if entries.is_empty() {
        return Err(Error::file(data, "no scans to train on"));
    }
    Ok(entries)
}

/// Returns the network's shape: the encoder of `--init` when given, else PRISM's architecture
/// at `--feature-size` and `--depths`.
fn network_config(args: &TrainArgs) -> Result<PretrainConfig> {
    let encoder = match &args.init {
        Some(path) => infer_swin_config(&Checkpoint::read(path)?.encoder_tensors(path)?, path)?,
        None => SwinConfig { embed_dim: args.feature_size, depths: args.depths.clone(), ..SwinConfig::prism_base() },
    };
    Ok(PretrainConfig::around(encoder))
}

/// Lists the settings recorded in every checkpoint.
fn run_record(
    args: &TrainArgs,
    config: &PretrainConfig,
    objective: &ObjectiveConfig,
    train: usize,
    validation: usize,
) -> serde_json::Value {
    json!({
        "tool": TOOL,
        "version": env!("CARGO_PKG_VERSION"),
        "data": args.data.display().to_string(),
        "val_data": args.val_data.as_ref().map(|p| p.display().to_string()),
        "init": args.init.as_ref().map(|p| p.display().to_string()),
        "feature_size": config.encoder.embed_dim,
        "depths": config.encoder.depths,
        "roi": args.roi,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "warmup_steps": args.warmup_steps,
        "max_steps": args.max_steps,
        "optimizers": OPTIMIZERS,
        "objective": objective,
        "seed": args.seed,
        "train_scans": train,
        "validation_scans": validation,
    })
}

/// Runs `prism-pretrain manifest`.
pub fn run_manifest(args: &ManifestArgs) -> Result<Exit> {
    let mut entries = scan_folder(&args.dir)?;
    if entries.is_empty() {
        return Err(Error::file(&args.dir, "no .nii or .nii.gz files in this folder"));
    }
    // Paths in a manifest are relative to its own folder where possible.
    let base = args.output.parent().map(Path::to_path_buf).unwrap_or_default();
    for entry in &mut entries {
        for path in &mut entry.paths {
            if let Some(relative) = relative_to(path, &base) {
                *path = relative;
            }
        }
    }
    write_manifest(&entries, &args.output)?;
    eprintln!("{TOOL}: wrote {} rows to {}", entries.len(), args.output.display());
    Ok(Exit::Success)
}

fn relative_to(path: &Path, base: &Path) -> Option<PathBuf> {
    let absolute = |p: &Path| std::path::absolute(p).ok();
    let (path, base) = (absolute(path)?, absolute(base)?);
    path.strip_prefix(&base).ok().map(Path::to_path_buf)
}

/// Runs `prism-pretrain export`.
pub fn run_export(args: &ExportArgs) -> Result<Exit> {
    let kind = if args.best { CheckpointKind::Best } else { CheckpointKind::Last };
    let record = checkpoint::saved_config(&args.run_dir, kind)?;
    let feature_size = record.get("feature_size").and_then(|v| v.as_u64()).ok_or_else(|| {
        Error::file(kind.json_path(&args.run_dir), "not a prism-pretrain checkpoint: no feature_size in its config")
    })?;
    let depths: Vec<usize> = match record.get("depths") {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| Error::file(kind.json_path(&args.run_dir), format!("invalid depths in its config: {e}")))?,
        None => SwinConfig::prism_base().depths,
    };
    let encoder = SwinConfig { embed_dim: feature_size as usize, depths, ..SwinConfig::prism_base() };
    let config = PretrainConfig::around(encoder);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let trainable: Trainable = build(&config, None, &Device::Cpu, &mut rng)?;
    let settings = OptimizerSettings { lr: 1e-3, weight_decay: 0.0, warmup_steps: 0, max_steps: 1 };
    let mut state = training_state(&trainable, settings, 0)?;
    if checkpoint::load(&args.run_dir, kind, &mut state)?.is_none() {
        return Err(Error::file(&args.run_dir, format!("no {} checkpoint in this folder", kind.name())));
    }
    if args.network {
        export_network(&trainable, &args.output)?;
    } else {
        export_encoder(&trainable, &args.output)?;
    }
    eprintln!("{TOOL}: wrote {}", args.output.display());
    Ok(Exit::Success)
}
