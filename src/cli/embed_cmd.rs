//! `prism-embed`: scans in, one CSV row of PRISM embeddings per scan out.
//!
//! Output columns, in order: `id` (the file name without `.nii`/`.nii.gz`, made
//! unique by parent folders when needed, `_vN` for volume N of a 4-D file), `path`
//! (as given or found), then the embedding: `emb_0 … emb_{C−1}` for the mean of the
//! last stage (C = 768 for the published model), or with `--pooling multiscale`
//! `s0_0 … s4_{C−1}`, the spatial means of all five stage outputs in order.
//! With `--with-metadata`, [`METADATA_COLUMNS`] come between `path` and the embedding.
//!
//! With `-o FILE`, `FILE.json` records the weights (with their SHA-256) and the
//! options behind the rows (see [`crate::cli::provenance`]).

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use serde_json::Value;

use crate::cli::args::BatchArgs;
use crate::cli::batch::run_batch;
use crate::cli::inputs::{load_input, load_input_with_metadata, nifti_volume, InputItem, InputSource};
use crate::cli::output::{format_f32, RowSink};
use crate::cli::progress::{Reporter, Summary};
use crate::cli::provenance::{record, sha256_file};
use crate::cli::resumable::{finish_sidecars, open_output, output_file, select_items, three};
use crate::embed::{embed_tensor, EmbedOptions, Pooling, DEFAULT_MAX_VOXELS};
use crate::error::{Error, Result};
use crate::io::dicom::SequenceMetadata;
use crate::model::SwinEncoder;
use crate::preprocess::{volume_to_tensor, Normalize, PreprocessOptions};

pub const TOOL: &str = "prism-embed";

/// Default `--spacing`, in mm: PRISM's fine-tuning resamples to 1 mm isotropic.
const DEFAULT_SPACING_MM: f64 = 1.0;

/// Default `--overlap` of neighbouring windows.
const DEFAULT_OVERLAP: f64 = 0.5;

/// Smallest accepted `--spacing`, in mm.
const MIN_SPACING_MM: f64 = 0.05;

/// `--roi` sizes must be multiples of the published encoder's down-sampling factor.
/// NOTE: an encoder with another patch size or depth would need its own factor.
const ROI_MULTIPLE: usize = 32;

/// Embed MRI scans with the PRISM encoder: one CSV row per scan
#[derive(Debug, Clone, Parser)]
#[command(name = "prism-embed", version, long_about = LONG_ABOUT)]
pub struct EmbedCli {
    #[command(flatten)]
    pub batch: BatchArgs,

    /// PRISM encoder weights: a PRISM checkpoint (.pt), a state dict, or .safetensors;
    /// the environment variable PRISM_WEIGHTS gives a default. Without either, the small
    /// built-in encoder (feature size 12, pretrained on open brain MRI) is used
    #[arg(short, long, value_name = "FILE", env = "PRISM_WEIGHTS", hide_env_values = true)]
    pub weights: Option<PathBuf>,

    /// Volume of 4-D inputs to embed (0-based); 3-D inputs ignore it, and a per-input
    /// `scan.nii.gz:N` takes precedence
    #[arg(long, value_name = "N")]
    pub volume: Option<usize>,

    /// Preprocessing before the encoder: `prism` (RAS+, resampling to --spacing,
    /// foreground crop, intensity normalization, zero padding to a multiple of 32) or
    /// `none` (the file's voxel array as it is)
    #[arg(long, value_enum, default_value_t = PreprocessMode::Prism)]
    pub preprocess: PreprocessMode,

    /// Target voxel spacing in mm for `--preprocess prism`: one value, or three for i,j,k
    /// (default 1)
    #[arg(long, value_name = "MM", value_delimiter = ',')]
    pub spacing: Option<Vec<f64>>,

    /// Clip intensities to these percentiles of the non-zero voxels before the z-score
    /// (for example 0.5,99.5); default: z-score only
    #[arg(long, value_name = "LO,HI", value_delimiter = ',')]
    pub clip_percentiles: Option<Vec<f64>>,

    /// Stage outputs pooled into the embedding
    #[arg(long, value_enum, default_value_t = PoolingMode::Last)]
    pub pooling: PoolingMode,

    /// Embed in sliding windows of this size in voxels (one edge, or three for i,j,k;
    /// multiples of 32) instead of one whole-volume pass
    #[arg(long, value_name = "N", value_delimiter = ',')]
    pub roi: Option<Vec<usize>>,

    /// Fraction of each --roi window shared with its neighbour, in [0, 1) (default 0.5)
    #[arg(long, value_name = "F")]
    pub overlap: Option<f64>,

    /// Largest preprocessed volume, in voxels, run in one pass; larger scans are refused
    /// unless --roi is given
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_VOXELS)]
    pub max_voxels: usize,

    /// Add the columns repetition_time_s, echo_time_s, flip_angle_deg,
    /// acquisition_plane and sequence_family after `path`, read from DICOM headers or
    /// from the JSON sidecar next to a NIfTI file (scan.nii.gz → scan.json); empty
    /// where unknown
    #[arg(long)]
    pub with_metadata: bool,
}

/// Columns `--with-metadata` adds: TR and TE in seconds, flip angle in degrees,
/// the acquisition plane and the guessed sequence family.
pub const METADATA_COLUMNS: [&str; 5] = [
    "repetition_time_s",
    "echo_time_s",
    "flip_angle_deg",
    "acquisition_plane",
    "sequence_family",
];

/// The `--with-metadata` fields of one input, empty where unknown.
fn metadata_fields(meta: Option<&SequenceMetadata>) -> Vec<String> {
    let number = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    let Some(m) = meta else {
        return vec![String::new(); METADATA_COLUMNS.len()];
    };
    vec![
        number(m.repetition_time),
        number(m.echo_time.as_ref().and_then(|te| te.get(0))),
        number(m.flip_angle),
        m.acquisition_plane.clone().unwrap_or_default(),
        m.sequence_family.clone().unwrap_or_default(),
    ]
}

const LONG_ABOUT: &str = "\
Embed MRI scans with the PRISM encoder: one CSV row per scan.

Each input is read (NIfTI-1 of any scalar type, or a DICOM series found in an
input folder), preprocessed as PRISM's fine-tuning
does (RAS+, 1 mm, foreground crop, z-score over non-zero voxels, padding to a
multiple of 32), passed through the encoder, and pooled into one vector. Rows go
to standard output, or to --output FILE, which a rerun resumes.

Columns: id (the file name without .nii/.nii.gz, with parent folders prefixed when
two inputs share a name, and _vN for volume N of a 4-D file), path, then emb_0 ...
emb_{C-1}, the mean over space of the last stage output (C = 768 for the published
model), or with --pooling multiscale s0_* ... s4_*, the means of all five stages.

Exit status: 0 success, 1 some inputs failed, 2 invalid usage or configuration.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PreprocessMode {
    Prism,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PoolingMode {
    /// Mean of the last stage output
    Last,
    /// Means of all five stage outputs, concatenated
    Multiscale,
}

impl EmbedCli {
    fn preprocess_options(&self) -> Result<PreprocessOptions> {
        if self.preprocess == PreprocessMode::None {
            return Ok(PreprocessOptions::none());
        }
        let mut opts = PreprocessOptions::prism_default();
        // 0.05 mm is far below any MRI resolution; smaller values only make the
        // resampled grid too large to allocate.
        let requested = self.spacing.clone().unwrap_or_else(|| vec![DEFAULT_SPACING_MM]);
        let spacing = three("--spacing", &requested, |v| v.is_finite() && v >= MIN_SPACING_MM)
            .map_err(|_| Error::invalid(format!(
                "invalid --spacing {:?}: give one or three voxel sizes in mm, each at least {MIN_SPACING_MM}",
                requested
            )))?;
        opts.spacing = Some(spacing);
        if let Some(p) = &self.clip_percentiles {
            let &[lo, hi] = p.as_slice() else {
                return Err(Error::invalid(format!(
                    "--clip-percentiles takes two values, LO,HI (for example 0.5,99.5), got {}",
                    p.len()
                )));
            };
            if !(0.0..=100.0).contains(&lo) || !(0.0..=100.0).contains(&hi) || lo >= hi {
                return Err(Error::invalid(format!(
                    "--clip-percentiles needs 0 <= LO < HI <= 100, got {lo},{hi}"
                )));
            }
            opts.normalize = Normalize::PercentileClip { lo, hi };
        }
        Ok(opts)
    }

    /// Lists options given on the command line that the other options make
    /// ineffective, so a user does not believe they were applied.
    fn ignored_options(&self) -> Vec<String> {
        let mut ignored = Vec::new();
        if self.overlap.is_some() && self.roi.is_none() {
            ignored.push("--overlap has no effect without --roi".to_string());
        }
        if self.preprocess == PreprocessMode::None {
            if self.spacing.is_some() {
                ignored.push("--spacing has no effect with --preprocess none".to_string());
            }
            if self.clip_percentiles.is_some() {
                ignored.push("--clip-percentiles has no effect with --preprocess none".to_string());
            }
        }
        ignored
    }

    fn embed_options(&self) -> Result<EmbedOptions> {
        let roi = match &self.roi {
            Some(r) => Some(three("--roi", r, |v| v > 0 && v % ROI_MULTIPLE == 0).map_err(|_| {
                Error::invalid(format!(
                    "invalid --roi {r:?}: give one or three window sizes in voxels, each a positive \
                     multiple of {ROI_MULTIPLE} (the encoder's down-sampling factor), such as 96 or 128"
                ))
            })?),
            None => None,
        };
        let overlap = self.overlap.unwrap_or(DEFAULT_OVERLAP);
        if !(0.0..1.0).contains(&overlap) {
            return Err(Error::invalid(format!(
                "invalid --overlap {}: the fraction shared by neighbouring windows must be in [0, 1)",
                overlap
            )));
        }
        Ok(EmbedOptions {
            pooling: match self.pooling {
                PoolingMode::Last => Pooling::LastStage,
                PoolingMode::Multiscale => Pooling::MultiScale,
            },
            roi,
            overlap,
            max_voxels: self.max_voxels,
        })
    }
}

/// Everything one scan needs: read, check, preprocess, encode, pool.
struct Embedder {
    encoder: SwinEncoder,
    device: candle_core::Device,
    preprocess: PreprocessOptions,
    embed: EmbedOptions,
}

impl Embedder {
    fn embed(&self, item: &InputItem, volume: crate::Volume) -> Result<Vec<f32>> {
        let path = &item.path;
        check_values(path, &volume)?;

        let (volume, _) = self.preprocess.apply(volume).map_err(|e| on_file(path, e))?;
        let x = volume_to_tensor(&volume, &self.device)?;
        embed_tensor(&self.encoder, &x, &self.embed).map_err(|e| on_file(path, e))
    }
}

/// Attach the scan's path to errors that do not name a file yet.
fn on_file(path: &Path, e: Error) -> Error {
    match e {
        Error::Invalid(m) => Error::file(path, m),
        Error::Tensor(t) => Error::file(path, format!("encoder failed: {t}")),
        other => other,
    }
}

/// Refuse values no preprocessing can make sense of.
fn check_values(path: &Path, volume: &crate::Volume) -> Result<()> {
    let non_finite = crate::io::count_non_finite(volume);
    if non_finite > 0 {
        return Err(Error::file(
            path,
            format!("{non_finite} voxels are NaN or infinite; fix or mask them before embedding"),
        ));
    }
    if volume.data.iter().all(|&v| v == 0.0) {
        return Err(Error::file(path, "every voxel is zero; there is nothing to embed"));
    }
    Ok(())
}

/// Run `prism-embed`. Returns the summary of per-scan outcomes; `Err` is a failure of
/// the run as a whole (arguments, weights, output file).
pub fn run(cli: &EmbedCli, reporter: &mut Reporter) -> Result<Summary> {
    let preprocess = cli.preprocess_options()?;
    let embed = cli.embed_options()?;
    for warning in cli.ignored_options() {
        reporter.warn(&warning);
    }
    let weights = cli.weights.clone();
    let device = cli.batch.device.open()?;

    let items = apply_default_volume(select_items(&cli.batch, reporter)?, cli.volume)?;

    let encoder = match &weights {
        Some(path) => crate::weights::load_encoder(path, &device)?,
        None => {
            reporter.info(&format!(
                "no --weights: using the built-in encoder ({}), not PRISM's published model",
                crate::weights::BUILTIN_ENCODER
            ));
            crate::weights::load_builtin_encoder(&device)?
        }
    };
    let mut header = vec!["id".to_string(), "path".to_string()];
    if cli.with_metadata {
        header.extend(METADATA_COLUMNS.map(String::from));
    }
    header.extend(embed.pooling.column_names(&encoder));
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let embedder = Embedder {
        encoder,
        device,
        preprocess,
        embed,
    };
    let record = provenance_record(cli, weights.as_deref(), &embedder)?;

    let output = output_file(&cli.batch);
    let sink = match output {
        Some(path) => open_output(path, &header, &items, cli.batch.overwrite, &record, &SETTINGS)?,
        None => RowSink::stdout(&header)?,
    };

    let summary = run_batch(&items, sink, reporter, cli.batch.keep_going, |item, _| {
        let (volume, meta) = if cli.with_metadata {
            load_input_with_metadata(item, None)?
        } else {
            (load_input(item, None)?, None)
        };
        let values = embedder.embed(item, volume)?;
        let mut row = vec![item.path.display().to_string()];
        if cli.with_metadata {
            row.extend(metadata_fields(meta.as_ref()));
        }
        row.extend(values.iter().map(|v| format_f32(*v)));
        Ok(row)
    })?;

    finish_sidecars(output, &record, &summary)?;
    Ok(summary)
}

/// Gives `--volume N` to every 4-D input (NIfTI file without its own `:N`, or DICOM
/// series with several volumes), with the same `_vN` id suffix as `scan.nii.gz:N`,
/// so runs over different volumes of one series never share ids. A file that
/// cannot be read keeps no volume and fails later, with the other per-scan errors.
fn apply_default_volume(items: Vec<InputItem>, volume: Option<usize>) -> Result<Vec<InputItem>> {
    let Some(volume) = volume else {
        return Ok(items);
    };
    Ok(items
        .into_iter()
        .map(|mut item| {
            let four_d = match item.source {
                InputSource::Nifti => nifti_volume(&item, Some(volume)).ok().flatten().is_some(),
                InputSource::DicomSeries { volumes, .. } => volumes > 1,
            };
            if item.volume.is_none() && four_d {
                item.volume = Some(volume);
                item.id = format!("{}_v{volume}", item.id);
            }
            item
        })
        .collect())
}

/// Keys of the provenance settings that rows of one output file must share.
const SETTINGS: [&str; 5] = ["weights", "preprocess", "pooling", "roi", "overlap"];

/// Describes the computation behind the rows, for the `FILE.json` sidecar. The
/// `settings` part decides whether rows of two runs may share one file.
fn provenance_record(cli: &EmbedCli, weights: Option<&Path>, embedder: &Embedder) -> Result<Value> {
    let (sha256, weights_path) = match weights {
        Some(path) => (sha256_file(path)?, path.display().to_string()),
        None => (crate::weights::builtin_encoder_sha256(), crate::weights::BUILTIN_ENCODER.to_string()),
    };
    let cfg = embedder.encoder.config();
    let p = &embedder.preprocess;
    let settings = serde_json::json!({
        "weights": {
            "sha256": sha256,
            "embed_dim": cfg.embed_dim,
            "depths": cfg.depths,
            "num_heads": cfg.num_heads,
            "window_size": cfg.window_size,
            "patch_size": cfg.patch_size,
            "use_v2": cfg.use_v2,
        },
        "preprocess": {
            "mode": format!("{:?}", cli.preprocess).to_lowercase(),
            "reorient_to_ras": p.reorient,
            "spacing_mm": p.spacing,
            "crop_foreground": p.crop_foreground,
            "normalize": format!("{:?}", p.normalize),
            "pad_multiple": p.pad_multiple,
        },
        "pooling": format!("{:?}", cli.pooling).to_lowercase(),
        "roi": embedder.embed.roi,
        "overlap": embedder.embed.overlap,
    });
    let details = serde_json::json!({
        "settings": settings,
        "weights_path": weights_path,
        "device": cli.batch.device.to_string(),
    });
    Ok(record(TOOL, details))
}

/// `--threads` as parsed, for `main` to apply before anything else starts threads.
pub fn threads(cli: &EmbedCli) -> Option<NonZeroUsize> {
    cli.batch.threads
}
