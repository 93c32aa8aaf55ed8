//! `prism-convert`: DICOM series in, one NIfTI file and one JSON sidecar per series out.
//!
//! A series with several volumes at the same slice positions (echoes, time points,
//! diffusion weightings) becomes one 4-D file; diffusion series also get `.bval`
//! and `.bvec` files in FSL's format. Output voxels are int16 when every value is an integer within the int16 range
//! (the common case for MR, which stores 12- to 16-bit integers with slope 1) and
//! float32 otherwise, so rescaled or out-of-range data keep their values. Standard
//! output gets one CSV row per converted series: `id`, `path` (the input folder),
//! `nifti`, `sidecar`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use clap::Parser;

use crate::cli::batch::run_batch;
use crate::cli::inputs::{expand_inputs, load_dicom_input, InputItem, InputSource};
use crate::cli::output::RowSink;
use crate::cli::progress::{Reporter, Summary};
use crate::io::dicom::metadata::write_bval_bvec;
use crate::io::dicom::{self, sanitize, write_sidecar, DicomOptions, SeriesInfo};
use crate::io::write_volumes;
use crate::io::{OutputDtype, WriteOptions};
use crate::volume::Volume;
use crate::{Error, Result};

pub const TOOL: &str = "prism-convert";

/// Placeholders a file name template may use.
const PLACEHOLDERS: [&str; 4] = ["{series_number}", "{description}", "{id}", "{series_uid}"];

/// Convert DICOM series to NIfTI (.nii.gz) with JSON sidecars
#[derive(Debug, Clone, Parser)]
#[command(name = "prism-convert", version, long_about = LONG_ABOUT)]
pub struct ConvertCli {
    /// DICOM folders (searched recursively), DICOM files, @FILE lists (one input per
    /// line, # comments) or - to read such a list from standard input
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<String>,

    /// Folder for the .nii.gz and .json files (created if missing)
    #[arg(short, long, value_name = "OUTDIR", required_unless_present = "list")]
    pub output_dir: Option<PathBuf>,

    /// Output file name without extension. Placeholders: {series_number},
    /// {description}, {id} (the series id), {series_uid}; other characters must be
    /// letters, digits, '.', '-' or '_'
    #[arg(long, value_name = "TEMPLATE", default_value = "{series_number}_{description}")]
    pub template: String,

    /// Replace output files that exist already (default: fail that series)
    #[arg(long)]
    pub overwrite: bool,

    /// Print the series found (id, description, files, dimensions, orientation)
    /// without converting
    #[arg(long)]
    pub list: bool,

    /// Continue after a series fails; the exit status is then 1 if any failed
    #[arg(long)]
    pub keep_going: bool,

    /// Print only errors on standard error (no progress, no summary)
    #[arg(short, long)]
    pub quiet: bool,

    /// Resample series with uneven slice spacing or missing slices onto evenly
    /// spaced slices (linear interpolation) instead of failing
    #[arg(long)]
    pub allow_nonuniform: bool,

    /// Write patient-identifying attributes (PatientName, PatientID,
    /// PatientBirthDate, PatientSex, PatientAge, PatientWeight) into the sidecars
    #[arg(long)]
    pub include_patient: bool,
}

const LONG_ABOUT: &str = "\
Convert DICOM series to NIfTI (.nii.gz) with JSON sidecars.

Each input folder is searched for DICOM files, which are grouped into series by
SeriesInstanceUID (split where orientation or image size differ). Slices are
ordered along the slice normal and the RAS+ affine is built from
ImagePositionPatient, ImageOrientationPatient and PixelSpacing. Several images at
each slice position (echoes, time points, diffusion weightings) make one 4-D file,
with per-volume values in the sidecar and, for diffusion, .bval and .bvec files.
Siemens mosaics are cut into their slices. Voxels are int16
when all values are integers within range, float32 otherwise. Sidecars use BIDS
field names (RepetitionTime and EchoTime in seconds, FlipAngle in degrees) and
contain no patient-identifying attributes unless --include-patient is given.

Exit status: 0 success, 1 some series failed, 2 invalid usage or configuration.";

/// Runs `prism-convert`; `Err` is a failure of the run as a whole (arguments, output folder).
pub fn run(cli: &ConvertCli, reporter: &mut Reporter) -> Result<Summary> {
    check_template(&cli.template)?;
    let items = expand_inputs(&cli.inputs, &mut std::io::stdin().lock())?;
    if let Some(item) = items.iter().find(|i| i.source == InputSource::Nifti) {
        return Err(Error::file(&item.path, "is NIfTI already; prism-convert reads DICOM only"));
    }
    if cli.list {
        return list_series(&items, reporter);
    }

    let Some(out_dir) = &cli.output_dir else {
        return Err(Error::invalid("--output-dir is required unless --list is given"));
    };
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let options = DicomOptions {
        allow_nonuniform: cli.allow_nonuniform,
        include_patient: cli.include_patient,
    };
    let sink = RowSink::stdout(&["id", "path", "nifti", "sidecar"])?;
    let mut used_names = HashSet::new();
    run_batch(&items, sink, reporter, cli.keep_going, |item, reporter| {
        let (volumes, info) = load_dicom_input(item, &options)?;
        for warning in &info.warnings {
            reporter.warn(&format!("{}: {warning}", item.id));
        }
        let name = unique_name(&file_name(&cli.template, &info), &mut used_names);
        let (nifti, sidecar) = write_outputs(out_dir, &name, &volumes, &info, cli.overwrite)?;
        Ok(vec![item.path.display().to_string(), nifti.display().to_string(), sidecar.display().to_string()])
    })
}

/// Rejects templates that could name a file outside the output folder or with unsafe characters.
fn check_template(template: &str) -> Result<()> {
    let mut rest = template.to_string();
    for placeholder in PLACEHOLDERS {
        rest = rest.replace(placeholder, "");
    }
    let safe = rest.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if template.is_empty() || !safe {
        return Err(Error::invalid(format!(
            "--template {template:?}: use letters, digits, '.', '-', '_' and the placeholders {}",
            PLACEHOLDERS.join(", ")
        )));
    }
    Ok(())
}

/// Fills the template; every substituted value is reduced to safe characters.
pub fn file_name(template: &str, info: &SeriesInfo) -> String {
    let number = info.number.map_or_else(|| "na".to_string(), |n| n.to_string());
    let name = template
        .replace("{series_number}", &number)
        .replace("{description}", &sanitize(&info.description))
        .replace("{id}", &sanitize(&info.id))
        .replace("{series_uid}", &sanitize(&info.series_uid));
    let name = name.trim_matches(|c| c == '_' || c == '.').to_string();
    if name.is_empty() {
        sanitize(&info.id)
    } else {
        name
    }
}

/// Appends `_2`, `_3`, ... when an earlier series of this run took the name.
fn unique_name(name: &str, used: &mut HashSet<String>) -> String {
    let mut candidate = name.to_string();
    let mut n = 2;
    while !used.insert(candidate.clone()) {
        candidate = format!("{name}_{n}");
        n += 1;
    }
    candidate
}

/// Writes `name.nii.gz` (4-D for several volumes), `name.json` and, for diffusion
/// series, `name.bval` and `name.bvec`.
fn write_outputs(dir: &Path, name: &str, volumes: &[Volume], info: &SeriesInfo, overwrite: bool) -> Result<(PathBuf, PathBuf)> {
    let nifti = dir.join(format!("{name}.nii.gz"));
    let sidecar = dir.join(format!("{name}.json"));
    let gradients = ["bval", "bvec"].map(|ext| dir.join(format!("{name}.{ext}")));
    for path in [&nifti, &sidecar].into_iter().chain(&gradients) {
        if !overwrite && path.exists() {
            return Err(Error::file(path, "exists already; pass --overwrite to replace it"));
        }
    }

    // Codes 0 tell readers that a placeholder affine does not place the scan.
    let code = if info.placeholder_geometry { 0 } else { 1 };
    let options = WriteOptions {
        dtype: output_dtype(volumes),
        sform_code: code,
        qform_code: code,
        descrip: format!("{TOOL} {}", info.id),
        ..Default::default()
    };
    write_volumes(&nifti, volumes, &options)?;
    write_sidecar(&sidecar, &info.metadata)?;
    write_bval_bvec(dir, name, &info.metadata)?;
    Ok((nifti, sidecar))
}

/// int16 when every voxel is an integer in range, else float32.
pub fn output_dtype(volumes: &[Volume]) -> OutputDtype {
    let range = f32::from(i16::MIN)..=f32::from(i16::MAX);
    let mut values = volumes.iter().flat_map(|v| v.data.iter());
    if values.all(|v| v.fract() == 0.0 && range.contains(v)) {
        OutputDtype::Int16
    } else {
        OutputDtype::Float32
    }
}

/// `--list`: one line per series on standard output, read from the headers only.
fn list_series(items: &[InputItem], reporter: &mut Reporter) -> Result<Summary> {
    let sink = RowSink::stdout(&["id", "path", "description", "files", "dims", "orientation"])?;
    run_batch(items, sink, reporter, true, |item, _| {
        let InputSource::DicomSeries { files, series_id, .. } = &item.source else {
            return Err(Error::file(&item.path, "not a DICOM series"));
        };
        let mut scan = dicom::scan_files(files);
        if let Some(error) = scan.unreadable.pop() {
            return Err(error);
        }
        let series = scan
            .series
            .iter()
            .find(|s| &s.id == series_id)
            .or(scan.series.first())
            .ok_or_else(|| Error::file(&item.path, "no DICOM image series"))?;
        let volumes = series.volume_count();
        let dims = match volumes {
            1 => format!("{}x{}x{}", series.columns, series.rows, series.image_count()),
            n => format!("{}x{}x{}x{n}", series.columns, series.rows, series.image_count() / n),
        };
        let orientation = series
            .orientation()
            .map_or_else(|| "unknown".to_string(), |o| dicom::metadata::acquisition_plane(&o).to_string());
        Ok(vec![
            item.path.display().to_string(),
            series.description.clone(),
            series.files.len().to_string(),
            dims,
            orientation,
        ])
    })
}
