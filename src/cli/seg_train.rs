//! `prism-seg train`: fine-tune SwinUNETR on labelled scans from a PRISM checkpoint (or a
//! whole SwinUNETR, or from scratch), with validation Dice, checkpoints and exact resume.
//!
//! Everything goes to `--out-dir`: the checkpoints and `train_log.csv` of [`crate::train`],
//! and at the end `model.safetensors` (the last weights) and `model_best.safetensors` (the
//! best validation Dice), each with a `.json` description that `prism-seg predict` reads.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use rand::SeedableRng;
use serde_json::json;

use crate::cli::seg_cmd::ModelDescription;
use crate::cli::resumable::three;
use crate::cli::Exit;
use crate::error::{Error, Result};
use crate::model::{SwinConfig, SwinUnetrConfig};
use crate::seg::augment::AugmentOptions;
use crate::seg::dataset::{load_cases, read_csv, read_nnunet, split_cases, CaseList, LoadOptions};
use crate::seg::train::{build, export, frozen_copy, train_step, validation_dice, Freeze, Init, Trainable};
use crate::train::{
    checkpoint, named_vars, run, AdamW, AdamWConfig, BestMetric, CheckpointKind, Goal, Metrics, NamedOptimizer,
    Param, RunConfig, StepProgress, StopSignal, TrainState, WarmupCosine,
};
use crate::weights::{infer_swin_config, infer_swin_unetr_config, Checkpoint};

pub const TOOL: &str = "prism-seg";

#[derive(Debug, Clone, Args)]
#[command(long_about = TRAIN_ABOUT)]
pub struct TrainArgs {
    /// Training cases: a CSV (image column(s), a label column, optional id and split
    /// columns) or an nnU-Net v2 raw dataset folder (imagesTr/, labelsTr/, dataset.json)
    #[arg(long, value_name = "CSV_OR_DIR")]
    pub data: PathBuf,

    /// Name of the label column of a CSV
    #[arg(long, value_name = "NAME", default_value = "label")]
    pub label_column: String,

    /// Folder for checkpoints, the log and the exported model
    #[arg(short = 'd', long, value_name = "DIR")]
    pub out_dir: PathBuf,

    /// Starting weights: a PRISM encoder checkpoint (decoder starts fresh) or a whole
    /// SwinUNETR state dict; without it every weight starts fresh
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,

    /// Number of classes, background included (default: from dataset.json)
    #[arg(long, value_name = "N")]
    pub classes: Option<usize>,

    /// Feature size of a network started from scratch (PRISM's published size is 48)
    #[arg(long, value_name = "N", default_value_t = 48)]
    pub feature_size: usize,

    /// Encoder parameters kept fixed: none, all, or N (patch embedding and the first N stages)
    #[arg(long, value_name = "WHICH", default_value = "none", value_parser = parse_freeze)]
    pub freeze: Freeze,

    /// Voxel spacing in mm the cases are resampled to: one value or three
    #[arg(long, value_name = "MM", value_delimiter = ',', default_value = "1")]
    pub spacing: Vec<f64>,

    /// Training crop size in voxels: one edge or three, multiples of 32
    #[arg(long, value_name = "N", value_delimiter = ',', default_value = "96")]
    pub roi: Vec<usize>,

    /// Crops per step. Memory grows with it: at the published size (feature size 48) one 96³
    /// crop needs about 16 GB on the CPU, one 64³ crop about 7 GB
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub batch_size: usize,

    /// Peak learning rate of AdamW
    #[arg(long, value_name = "LR", default_value_t = 1e-4)]
    pub lr: f64,

    /// AdamW weight decay (not applied to biases and norm weights)
    #[arg(long, value_name = "W", default_value_t = 1e-5)]
    pub weight_decay: f64,

    /// Steps of linear warm-up before the cosine decay
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub warmup_steps: u64,

    /// Total training steps, over all resumed sessions
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_steps: u64,

    /// Stop (saving a checkpoint, exit 3) after this many minutes of this session
    #[arg(long, value_name = "MIN")]
    pub max_time: Option<f64>,

    /// Steps between validations (0: never)
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub validate_every: u64,

    /// Steps between checkpoints (0: only at the end)
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub checkpoint_every: u64,

    /// Fraction of cases held out for validation when the data has no split column
    #[arg(long, value_name = "F", default_value_t = 0.2)]
    pub val_fraction: f64,

    /// Seed of every random choice (initialization, split, crops, augmentation)
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
    pub threads: Option<std::num::NonZeroUsize>,

    /// Compute device: cpu, cuda or cuda:N
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = crate::cli::args::parse_device_spec)]
    pub device: crate::device::DeviceSpec,
}

const TRAIN_ABOUT: &str = "\
Fine-tune SwinUNETR on labelled scans.

Cases are resampled to --spacing on a RAS+ grid and z-scored over non-zero voxels.
Each step draws --batch-size crops of --roi voxels (a third forced onto foreground,
random flips, intensity scale and shift, small rotations and scaling) and takes one
AdamW step on the DiceCE loss (Dice over foreground classes). The learning rate
warms up linearly, then follows a cosine to 0 at --max-steps.

Checkpoints in --out-dir hold weights, optimizer state, random state and step, so
--resume continues exactly. On SIGTERM, SIGUSR1 or SIGINT, or after --max-time, the
run saves and exits 3 so a job script can requeue it with --resume.

Exit status: 0 finished, 2 invalid usage, data or configuration, 3 stopped early
with a checkpoint saved.";

fn parse_freeze(text: &str) -> std::result::Result<Freeze, String> {
    match text {
        "none" => Ok(Freeze::None),
        "all" => Ok(Freeze::Encoder),
        n => match n.parse::<usize>() {
            Ok(n) if n <= 4 => Ok(Freeze::Stages(n)),
            _ => Err(format!("expected none, all or a stage count 0-4, got {text}")),
        },
    }
}

/// Runs `prism-seg train`; returns the exit code of a run that started.
pub fn run_train(args: &TrainArgs) -> Result<Exit> {
    let spacing = three("--spacing", &args.spacing, |v| v.is_finite() && v >= 0.05)?;
    let roi = three("--roi", &args.roi, |v| v > 0 && v % 32 == 0)?;
    check_numbers(args)?;
    let device = args.device.open()?;

    let list = read_case_list(args)?;
    let classes = args.classes.or(list.declared_classes()).ok_or_else(|| {
        Error::invalid("the number of classes is unknown: pass --classes N (background included)")
    })?;
    let split = split_cases(&list.cases, args.val_fraction, args.seed)?;
    let options = LoadOptions { spacing, n_classes: classes };
    let train_cases = load_cases(&split.train, &options)?;
    let val_cases = load_cases(&split.validation, &options)?;
    let channels = list.channel_names.len().max(1);

    let config = network_config(args, classes, channels)?;
    let mut init_rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let init = args.init.as_deref().map_or(Init::Scratch, Init::Checkpoint);
    let trainable = build(&config, init, &device, &mut init_rng)?;

    let mut state = training_state(args, &trainable)?;
    let run_config = RunConfig {
        dir: args.out_dir.clone(),
        max_steps: args.max_steps,
        max_time: args.max_time.map(|m| Duration::from_secs_f64(m * 60.0)),
        checkpoint_every: args.checkpoint_every,
        validate_every: if val_cases.is_empty() { 0 } else { args.validate_every },
        best: (!val_cases.is_empty()).then(|| BestMetric { name: "dice".into(), goal: Goal::Maximize }),
        resume: args.resume,
        losses: vec!["total".into(), "dice".into(), "ce".into()],
        metrics: vec!["dice".into()],
        config: run_record(args, &config, train_cases.len(), val_cases.len()),
    };
    let stop = StopSignal::install()?;
    let mut progress = StepProgress::new(TOOL, args.quiet, 10);
    progress.info(&format!(
        "{} training and {} validation cases, {classes} classes, {} of {} tensors from {}",
        train_cases.len(),
        val_cases.len(),
        trainable.loaded,
        state.model.len(),
        args.init.as_deref().map_or("nowhere (fresh start)".to_string(), |p| p.display().to_string()),
    ));

    let augment = AugmentOptions::new(roi);
    let outcome = run(
        &run_config,
        &mut state,
        &stop,
        &mut progress,
        |state| {
            let TrainState { optimizers, rng, .. } = state;
            let optimizer = &mut optimizers[0].optimizer;
            train_step(&trainable.net, optimizer, &train_cases, args.batch_size, &augment, rng, &device)
        },
        |_| {
            let net = frozen_copy(&trainable, &device)?;
            Ok(Metrics::from([("dice".to_string(), validation_dice(&net, &val_cases, roi, &device)?)]))
        },
    )?;

    let description = ModelDescription { labels: label_names(&list, classes), spacing_mm: Some(spacing), roi: Some(roi) };
    export_model(&trainable, &args.out_dir.join("model.safetensors"), &description)?;
    if outcome.best.is_some() && checkpoint::load(&args.out_dir, CheckpointKind::Best, &mut state)?.is_some() {
        export_model(&trainable, &args.out_dir.join("model_best.safetensors"), &description)?;
    }
    Ok(outcome.exit())
}

/// Rejects values no run can use before any data is read.
fn check_numbers(args: &TrainArgs) -> Result<()> {
    if args.batch_size == 0 {
        return Err(Error::invalid("invalid --batch-size 0: give at least 1 crop per step"));
    }
    if !(0.0..1.0).contains(&args.val_fraction) {
        return Err(Error::invalid(format!(
            "invalid --val-fraction {}: the held-out share of the cases must be in [0, 1)",
            args.val_fraction
        )));
    }
    if !(args.lr.is_finite() && args.lr > 0.0) || !(args.weight_decay.is_finite() && args.weight_decay >= 0.0) {
        return Err(Error::invalid(format!(
            "invalid --lr {} or --weight-decay {}: give a positive learning rate and a weight decay of at least 0",
            args.lr, args.weight_decay
        )));
    }
    Ok(())
}

fn read_case_list(args: &TrainArgs) -> Result<CaseList> {
    let is_csv = args.data.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if is_csv {
        read_csv(&args.data, &args.label_column)
    } else {
        read_nnunet(&args.data)
    }
}

/// Returns the network's shape: from a whole SwinUNETR checkpoint, from an encoder checkpoint plus the
/// class count, or PRISM's architecture at `--feature-size` from scratch.
fn network_config(args: &TrainArgs, classes: usize, channels: usize) -> Result<SwinUnetrConfig> {
    let config = match &args.init {
        Some(path) => {
            let checkpoint = Checkpoint::read(path)?;
            if checkpoint.has_segmentation_head() {
                infer_swin_unetr_config(&checkpoint.unwrapped(), path)?
            } else {
                let encoder = infer_swin_config(&checkpoint.encoder_tensors(path)?, path)?;
                SwinUnetrConfig { encoder, out_channels: classes }
            }
        }
        None => {
            let mut encoder = SwinConfig::prism_base();
            encoder.embed_dim = args.feature_size;
            encoder.in_chans = channels;
            SwinUnetrConfig { encoder, out_channels: classes }
        }
    };
    check_config(&config, args.init.as_deref(), classes, channels)?;
    Ok(config)
}

fn check_config(config: &SwinUnetrConfig, init: Option<&Path>, classes: usize, channels: usize) -> Result<()> {
    let source = init.map_or("the network".to_string(), |p| p.display().to_string());
    if config.out_channels != classes {
        return Err(Error::invalid(format!(
            "{source} predicts {} classes but the data has {classes}; start from its encoder instead",
            config.out_channels
        )));
    }
    if config.encoder.in_chans != channels {
        return Err(Error::invalid(format!(
            "{source} takes {} input channels but each case has {channels} image(s)",
            config.encoder.in_chans
        )));
    }
    Ok(())
}

/// Step 0 of a run: every variable in the checkpoint, the unfrozen ones in one AdamW.
fn training_state(args: &TrainArgs, trainable: &Trainable) -> Result<TrainState> {
    let vars = named_vars(&trainable.varmap);
    let params: Vec<Param> = vars
        .iter()
        .filter(|(name, _)| !args.freeze.is_frozen(name))
        .map(|(name, var)| Param::new(name.clone(), var.clone()))
        .collect();
    if params.is_empty() {
        return Err(Error::invalid("--freeze leaves nothing to train"));
    }
    let config = AdamWConfig { lr: args.lr, weight_decay: args.weight_decay, ..AdamWConfig::default() };
    let optimizer = NamedOptimizer {
        name: "model".into(),
        optimizer: AdamW::new(params, config)?,
        schedule: Some(WarmupCosine::new(args.lr, args.warmup_steps, args.max_steps, 0.0)?),
    };
    TrainState::new(vars, vec![optimizer], args.seed)
}

fn label_names(list: &CaseList, classes: usize) -> Vec<String> {
    (0..classes)
        .map(|k| match list.class_names.get(&(k as u32)) {
            Some(name) => name.clone(),
            None if k == 0 => "background".to_string(),
            None => format!("label_{k}"),
        })
        .collect()
}

fn export_model(trainable: &Trainable, path: &Path, description: &ModelDescription) -> Result<()> {
    export(trainable, path)?;
    let json_path = ModelDescription::path_for(path);
    let text = serde_json::to_string_pretty(description).map_err(|e| Error::file(&json_path, e.to_string()))?;
    crate::io::atomic::write_text(&json_path, &(text + "\n"))
}

/// Lists the settings recorded in every checkpoint.
fn run_record(args: &TrainArgs, config: &SwinUnetrConfig, train: usize, validation: usize) -> serde_json::Value {
    json!({
        "tool": TOOL,
        "version": env!("CARGO_PKG_VERSION"),
        "data": args.data.display().to_string(),
        "init": args.init.as_ref().map(|p| p.display().to_string()),
        "feature_size": config.encoder.embed_dim,
        "classes": config.out_channels,
        "freeze": format!("{:?}", args.freeze),
        "spacing": args.spacing,
        "roi": args.roi,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "warmup_steps": args.warmup_steps,
        "max_steps": args.max_steps,
        "seed": args.seed,
        "train_cases": train,
        "validation_cases": validation,
    })
}
