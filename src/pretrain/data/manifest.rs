//! The pretraining manifest: a CSV that lists the images (or anatomies to render) with
//! their subject, body part and acquisition parameters.
//!
//! The columns may come in any order after a header row, and only `path` is required.
//! A column the reader does not know is an error, so a typo cannot drop a value silently.
//!
//! | column | content |
//! | --- | --- |
//! | `path` | NIfTI file or DICOM folder, relative to the manifest's folder unless absolute; for `source = tissue`, several files separated by `;` |
//! | `subject` | subject id; rows of one subject stay on one side of a split (empty: the file name without extension) |
//! | `body_part` | `head`, `neck`, `chest`, `upper_abdomen`, `lower_abdomen`, `knee` or `unknown` (empty: unknown) |
//! | `tr_ms`, `te_ms` | repetition and echo time in milliseconds (empty: missing) |
//! | `flip_deg` | flip angle in degrees (empty: missing) |
//! | `family` | free text such as `T1w`, `T2w`, `FLAIR` (may be empty) |
//! | `source` | `scan` (an image, the default), `labels` (an integer label map) or `tissue` (tissue probability maps on one grid) |
//!
//! [`scan_folder`] builds a manifest from a folder of NIfTI files and their BIDS JSON
//! sidecars.

use std::collections::HashSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// Columns of a manifest, in the order [`write_manifest`] writes them.
pub const COLUMNS: [&str; 8] = [
    "path",
    "subject",
    "body_part",
    "tr_ms",
    "te_ms",
    "flip_deg",
    "family",
    "source",
];

/// Separator of the files of a `tissue` row in the `path` column.
pub const PATH_SEPARATOR: char = ';';

/// Body region of a scan, with the class index of PRISM's body-part classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BodyPart {
    Head,
    Neck,
    Chest,
    UpperAbdomen,
    LowerAbdomen,
    Knee,
    #[default]
    Unknown,
}

impl BodyPart {
    /// All body parts in class-index order.
    pub const ALL: [BodyPart; 7] = [
        BodyPart::Head,
        BodyPart::Neck,
        BodyPart::Chest,
        BodyPart::UpperAbdomen,
        BodyPart::LowerAbdomen,
        BodyPart::Knee,
        BodyPart::Unknown,
    ];

    /// Class index, 0..=6 in the order of [`BodyPart::ALL`].
    pub fn index(self) -> u32 {
        BodyPart::ALL.iter().position(|p| *p == self).unwrap_or(6) as u32
    }

    /// Name as written in a manifest.
    pub fn name(self) -> &'static str {
        match self {
            BodyPart::Head => "head",
            BodyPart::Neck => "neck",
            BodyPart::Chest => "chest",
            BodyPart::UpperAbdomen => "upper_abdomen",
            BodyPart::LowerAbdomen => "lower_abdomen",
            BodyPart::Knee => "knee",
            BodyPart::Unknown => "unknown",
        }
    }

    /// Parses a manifest name (case-insensitive); empty text is `Unknown`.
    pub fn parse(text: &str) -> Option<BodyPart> {
        if text.is_empty() {
            return Some(BodyPart::Unknown);
        }
        BodyPart::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(text))
    }

    /// Maps a DICOM BodyPartExamined value (0018,0015), as dcm2niix copies it into
    /// sidecars, to a body part; values outside the table are `Unknown`.
    pub fn from_dicom(value: &str) -> BodyPart {
        let upper = value
            .trim()
            .to_ascii_uppercase()
            .replace([' ', '_', '-'], "");
        match upper.as_str() {
            "HEAD" | "BRAIN" | "SKULL" | "HEADNECK" | "IAC" | "ORBIT" | "SELLA" => BodyPart::Head,
            "NECK" | "CSPINE" | "LARYNX" | "THYROID" => BodyPart::Neck,
            "CHEST" | "THORAX" | "BREAST" | "HEART" | "LUNG" | "TSPINE" | "CHESTABDOMEN" => {
                BodyPart::Chest
            }
            "ABDOMEN" | "LIVER" | "PANCREAS" | "KIDNEY" | "SPLEEN" | "GALLBLADDER" | "STOMACH" => {
                BodyPart::UpperAbdomen
            }
            "PELVIS" | "PROSTATE" | "BLADDER" | "UTERUS" | "OVARY" | "RECTUM" | "HIP"
            | "LSPINE" | "ABDOMENPELVIS" => BodyPart::LowerAbdomen,
            "KNEE" => BodyPart::Knee,
            _ => BodyPart::Unknown,
        }
    }
}

impl fmt::Display for BodyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Content of a row's files, which decides how a training sample is made from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceKind {
    /// An MR image, used as it is.
    #[default]
    Scan,
    /// An integer label map, rendered with a new random contrast at every draw.
    Labels,
    /// Tissue probability maps (one file per tissue, on one grid), rendered like labels.
    Tissue,
}

impl SourceKind {
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Scan => "scan",
            SourceKind::Labels => "labels",
            SourceKind::Tissue => "tissue",
        }
    }

    /// Parses a manifest name (case-insensitive); empty text is `Scan`.
    pub fn parse(text: &str) -> Option<SourceKind> {
        match text.to_ascii_lowercase().as_str() {
            "" | "scan" => Some(SourceKind::Scan),
            "labels" => Some(SourceKind::Labels),
            "tissue" => Some(SourceKind::Tissue),
            _ => None,
        }
    }
}

/// One manifest row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ManifestEntry {
    /// Files of the row: one NIfTI file or DICOM folder, or one file per tissue for
    /// [`SourceKind::Tissue`]. Relative paths in a manifest are stored resolved against
    /// the manifest's folder.
    pub paths: Vec<PathBuf>,
    pub subject: String,
    pub body_part: BodyPart,
    /// Repetition time in milliseconds.
    pub tr_ms: Option<f64>,
    /// Echo time in milliseconds.
    pub te_ms: Option<f64>,
    /// Flip angle in degrees.
    pub flip_deg: Option<f64>,
    /// Sequence family as free text (`T1w`, `FLAIR`, ...); empty when unknown.
    pub family: String,
    pub source: SourceKind,
}

impl ManifestEntry {
    /// Builds a scan entry for `path` with the subject taken from its file name and
    /// every other field unknown.
    pub fn scan(path: impl Into<PathBuf>) -> ManifestEntry {
        let path = path.into();
        ManifestEntry {
            subject: file_stem(&path),
            paths: vec![path],
            ..ManifestEntry::default()
        }
    }

    /// Returns the files of the row joined as in the `path` column, for messages and ids.
    pub fn path_text(&self) -> String {
        let texts: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
        texts.join(&PATH_SEPARATOR.to_string())
    }
}

/// Reads a manifest CSV. Fails with the file, line and column on a missing `path`
/// column, an unknown or repeated column, an empty path, a value that does not parse,
/// or a `scan`/`labels` row with more than one file.
pub fn read_manifest(path: &Path) -> Result<Vec<ManifestEntry>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| csv_error(path, e))?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| csv_error(path, e))?
        .iter()
        .map(str::to_string)
        .collect();
    let columns = Columns::find(path, &header)?;
    let folder = path.parent().unwrap_or(Path::new(""));

    let mut entries = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(path, e))?;
        let line = record.position().map_or(0, |p| p.line());
        let row = Row {
            manifest: path,
            line,
            record: &record,
            columns: &columns,
        };
        entries.push(row.entry(folder)?);
    }
    Ok(entries)
}

/// Writes `entries` as a manifest CSV with every column, atomically. Paths under the
/// manifest's folder are written relative to it, so the folder can be moved as a whole.
pub fn write_manifest(entries: &[ManifestEntry], path: &Path) -> Result<()> {
    let folder = path.parent().unwrap_or(Path::new(""));
    let mut writer = csv::Writer::from_writer(Vec::new());
    let write_error = |e: csv::Error| Error::file(path, format!("cannot encode manifest: {e}"));
    writer.write_record(COLUMNS).map_err(write_error)?;

    for entry in entries {
        let paths: Vec<String> = entry
            .paths
            .iter()
            .map(|p| relative_to(p, folder).display().to_string())
            .collect();
        let number = |value: Option<f64>| value.map(|v| v.to_string()).unwrap_or_default();
        let record = [
            paths.join(&PATH_SEPARATOR.to_string()),
            entry.subject.clone(),
            entry.body_part.name().to_string(),
            number(entry.tr_ms),
            number(entry.te_ms),
            number(entry.flip_deg),
            entry.family.clone(),
            entry.source.name().to_string(),
        ];
        writer.write_record(&record).map_err(write_error)?;
    }

    let bytes = writer
        .into_inner()
        .map_err(|e| Error::file(path, format!("cannot encode manifest: {}", e.error())))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::file(path, "a manifest value is not valid UTF-8"))?;
    crate::io::atomic::write_text(path, &text)
}

/// Positions of the known columns in the header.
struct Columns {
    positions: [Option<usize>; 8],
}

impl Columns {
    fn find(path: &Path, header: &[String]) -> Result<Columns> {
        let mut seen = HashSet::new();
        let mut positions = [None; 8];
        for (position, name) in header.iter().enumerate() {
            if !seen.insert(name.as_str()) {
                return Err(Error::file(
                    path,
                    format!("line 1: column '{name}' appears twice; remove one"),
                ));
            }
            let Some(known) = COLUMNS.iter().position(|c| c == name) else {
                return Err(Error::file(
                    path,
                    format!(
                        "line 1: unknown column '{name}'; the columns are {}",
                        COLUMNS.join(", ")
                    ),
                ));
            };
            positions[known] = Some(position);
        }
        if positions[0].is_none() {
            return Err(Error::file(
                path,
                "line 1: no 'path' column in the header; add one",
            ));
        }
        Ok(Columns { positions })
    }
}

/// One data row being parsed, for messages that name its line and column.
struct Row<'a> {
    manifest: &'a Path,
    line: u64,
    record: &'a csv::StringRecord,
    columns: &'a Columns,
}

impl Row<'_> {
    fn entry(&self, folder: &Path) -> Result<ManifestEntry> {
        let source = self.parse("source", SourceKind::parse, "scan, labels or tissue")?;
        let body_part = self.parse(
            "body_part",
            BodyPart::parse,
            "head, neck, chest, upper_abdomen, lower_abdomen, knee or unknown",
        )?;
        let paths = self.paths(folder, source)?;
        let subject = match self.text("subject") {
            "" => file_stem(&paths[0]),
            subject => subject.to_string(),
        };

        Ok(ManifestEntry {
            subject,
            body_part,
            tr_ms: self.number("tr_ms")?,
            te_ms: self.number("te_ms")?,
            flip_deg: self.number("flip_deg")?,
            family: self.text("family").to_string(),
            source,
            paths,
        })
    }

    /// Text of `column`, empty when the manifest lacks the column.
    fn text(&self, column: &str) -> &str {
        let known = COLUMNS.iter().position(|c| *c == column);
        let position = known.and_then(|k| self.columns.positions[k]);
        position.and_then(|p| self.record.get(p)).unwrap_or("")
    }

    fn error(&self, column: &str, message: String) -> Error {
        Error::file(
            self.manifest,
            format!("line {}, column '{column}': {message}", self.line),
        )
    }

    fn parse<T>(&self, column: &str, parse: impl Fn(&str) -> Option<T>, valid: &str) -> Result<T> {
        let text = self.text(column);
        parse(text)
            .ok_or_else(|| self.error(column, format!("invalid value '{text}'; give {valid}")))
    }

    /// Parses a non-negative finite number; empty text is `None`.
    fn number(&self, column: &str) -> Result<Option<f64>> {
        let text = self.text(column);
        if text.is_empty() {
            return Ok(None);
        }
        match text.parse::<f64>() {
            Ok(value) if value.is_finite() && value >= 0.0 => Ok(Some(value)),
            _ => Err(self.error(
                column,
                format!("invalid value '{text}'; give a non-negative number or leave it empty"),
            )),
        }
    }

    fn paths(&self, folder: &Path, source: SourceKind) -> Result<Vec<PathBuf>> {
        let text = self.text("path");
        let parts: Vec<&str> = text.split(PATH_SEPARATOR).map(str::trim).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(self.error("path", format!("empty file name in '{text}'; give a path")));
        }
        if parts.len() > 1 && source != SourceKind::Tissue {
            return Err(self.error(
                "path",
                format!(
                    "{} files in '{text}', but only a tissue row has several; give one file or set source to tissue",
                    parts.len()
                ),
            ));
        }
        Ok(parts
            .iter()
            .map(|p| resolve(folder, Path::new(p)))
            .collect())
    }
}

/// Lists every `.nii`/`.nii.gz` file under `dir` (recursively, sorted by path, hidden
/// files and folders skipped) as a scan entry. Fails when there is none.
///
/// A BIDS or dcm2niix JSON sidecar beside a file (same name, `.json`) fills `tr_ms`
/// and `te_ms` from RepetitionTime and EchoTime (seconds there), `flip_deg` from
/// FlipAngle (degrees) and `body_part` from BodyPartExamined. The subject is the
/// BIDS `sub-<label>` folder or file-name prefix when there is one, else the file name
/// without extension. The family is the BIDS suffix (`T1w` in `sub-01_T1w.nii.gz`).
pub fn scan_folder(dir: &Path) -> Result<Vec<ManifestEntry>> {
    if !dir.is_dir() {
        return Err(Error::file(
            dir,
            "folder not found; give a folder that contains NIfTI files",
        ));
    }
    let mut files = Vec::new();
    let mut visited = HashSet::new();
    collect_nifti_files(dir, &mut visited, &mut files)?;
    if files.is_empty() {
        return Err(Error::file(
            dir,
            "no .nii or .nii.gz file found in this folder or below",
        ));
    }
    files.sort();
    files
        .iter()
        .map(|file| entry_from_file(dir, file))
        .collect()
}

fn collect_nifti_files(
    dir: &Path,
    visited: &mut HashSet<PathBuf>,
    files: &mut Vec<PathBuf>,
) -> Result<()> {
    // Symbolic links are followed, but a folder reached twice (a link loop) is searched once.
    let canonical = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    if !visited.insert(canonical) {
        return Ok(());
    }
    let listing = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for item in listing {
        let path = item.map_err(|e| Error::io(dir, e))?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_nifti_files(&path, visited, files)?;
        } else if name.ends_with(".nii") || name.ends_with(".nii.gz") {
            files.push(path);
        }
    }
    Ok(())
}

fn entry_from_file(dir: &Path, file: &Path) -> Result<ManifestEntry> {
    let stem = file_stem(file);
    let mut entry = ManifestEntry::scan(file);
    entry.subject = bids_subject(dir, file).unwrap_or_else(|| stem.clone());
    if stem.starts_with("sub-") {
        entry.family = stem.rsplit('_').next().unwrap_or_default().to_string();
    }

    let sidecar = file.with_file_name(format!("{stem}.json"));
    if sidecar.is_file() {
        apply_sidecar(&sidecar, &mut entry)?;
    }
    Ok(entry)
}

/// Finds the `sub-<label>` folder of `file` under `dir`, or else the `sub-<label>` prefix of its name.
fn bids_subject(dir: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(dir).unwrap_or(file);
    let folders = relative.parent().into_iter().flat_map(Path::components);
    let folder = folders
        .filter_map(|c| c.as_os_str().to_str())
        .find(|name| name.starts_with("sub-") && name.len() > 4);
    if let Some(folder) = folder {
        return Some(folder.to_string());
    }
    let stem = file_stem(file);
    let prefix = stem
        .split('_')
        .next()
        .filter(|p| p.starts_with("sub-") && p.len() > 4);
    prefix.map(str::to_string)
}

/// Fills acquisition parameters and body part from a BIDS/dcm2niix JSON sidecar.
fn apply_sidecar(sidecar: &Path, entry: &mut ManifestEntry) -> Result<()> {
    let text = std::fs::read_to_string(sidecar).map_err(|e| Error::io(sidecar, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(sidecar, format!("invalid JSON sidecar: {e}")))?;
    let number = |key: &str| {
        json.get(key)
            .and_then(serde_json::Value::as_f64)
            .filter(|v| v.is_finite() && *v >= 0.0)
    };

    entry.tr_ms = number("RepetitionTime").map(seconds_to_ms);
    entry.te_ms = number("EchoTime").map(seconds_to_ms);
    entry.flip_deg = number("FlipAngle");
    if let Some(part) = json
        .get("BodyPartExamined")
        .and_then(serde_json::Value::as_str)
    {
        entry.body_part = BodyPart::from_dicom(part);
    }
    Ok(())
}

/// Converts seconds to milliseconds, rounded to 1e-6 ms so that a sidecar's `2.3` gives
/// exactly `2300` rather than the product's binary rounding.
fn seconds_to_ms(seconds: f64) -> f64 {
    (seconds * 1e9).round() / 1e6
}

/// Resolves a manifest path against the manifest's folder (unchanged when absolute).
fn resolve(folder: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        folder.join(path)
    }
}

/// Writes `path` relative to `folder` when it lies under it (by its components), so
/// that [`resolve`] gives `path` back.
fn relative_to(path: &Path, folder: &Path) -> PathBuf {
    if folder.as_os_str().is_empty() {
        return path.to_path_buf();
    }
    match path.strip_prefix(folder) {
        Ok(relative)
            if !relative.as_os_str().is_empty()
                && relative
                    .components()
                    .all(|c| matches!(c, Component::Normal(_))) =>
        {
            relative.to_path_buf()
        }
        _ => path.to_path_buf(),
    }
}

/// File name without `.nii.gz`, `.nii` or the last extension.
pub(crate) fn file_stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(stem) = name
        .strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))
    {
        return stem.to_string();
    }
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or(name)
}

fn csv_error(path: &Path, error: csv::Error) -> Error {
    let line = error.position().map(|p| p.line());
    match error.into_kind() {
        csv::ErrorKind::Io(io) => Error::io(path, io),
        kind => {
            let message = match kind {
                csv::ErrorKind::UnequalLengths {
                    expected_len, len, ..
                } => {
                    format!("{len} fields, but the header has {expected_len}; quote values that contain commas")
                }
                csv::ErrorKind::Utf8 { .. } => "text is not valid UTF-8".to_string(),
                other => format!("invalid CSV: {other:?}"),
            };
            match line {
                Some(line) => Error::file(path, format!("line {line}: {message}")),
                None => Error::file(path, message),
            }
        }
    }
}
