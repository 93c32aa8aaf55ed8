//! Expansion of command-line inputs into the deterministic list of scans a tool
//! processes, each with a unique id for its output row.
//!
//! An input argument is one of:
//! - a NIfTI file (`.nii`, `.nii.gz`; the extension is matched case-sensitively),
//!   optionally with a volume suffix: `scan.nii.gz:2` selects volume 2 (0-based) of
//!   a 4-D file;
//! - a directory, searched recursively for NIfTI files. Hidden files and
//!   directories (name starting with `.`) are skipped. Symbolic links are
//!   followed (datalad and git-annex datasets consist of them), except a link
//!   back to a directory being searched, which would be a loop;
//! - `@list.txt`, a list file: one input per line, blank lines and lines
//!   starting with `#` skipped, relative paths resolved against the list file's
//!   directory. Lines are taken as paths (files with an optional volume suffix,
//!   or directories), never as nested `@` lists. A file whose name starts with
//!   `@` can be named as `./@name`;
//! - `-`, a list in the same form read from standard input, with relative paths
//!   resolved against the working directory.
//!
//! Order: arguments in the order given, each directory's files sorted by the
//! bytes of their path. An input that occurs twice (same absolute path and
//! volume) is kept at its first position only.
//!
//! Ids: the file name without `.nii`/`.nii.gz`, plus `_vN` when a volume was
//! chosen. When several inputs get the same id, each of them gets its parent
//! directory's name prefixed (`sub-01_anat_T1w`), one more directory per round,
//! until no two ids are equal. Colliding inputs in one directory (`x.nii` and
//! `x.nii.gz`), which no prefix separates, are numbered instead: the first keeps
//! the id and the later ones get `_2`, `_3`, ... in list order.
//!
//! DICOM: a directory is also searched for DICOM files (any file other than
//! NIfTI that has the `DICM` marker, see [`crate::io::dicom::is_dicom_file`]).
//! All DICOM files found under one directory argument are grouped into series
//! together, so an input list may mix NIfTI files and DICOM folders; each series
//! becomes one input whose path is the folder of its first file and whose id is the
//! series id (`<SeriesNumber>_<SeriesDescription>`, see [`crate::io::dicom`]), made
//! unique with parent folder names like any other id. A single DICOM file can also
//! be named directly. A DICOM file whose header cannot be parsed becomes an input of
//! its own that fails when loaded, so `--keep-going` processes the rest. Within a
//! directory the NIfTI files come first, then the DICOM series in order of folder
//! and id.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::{Component, Path, PathBuf};

use crate::io::dicom::{self, DicomOptions, PerVolume, SequenceMetadata, SeriesInfo};
use crate::volume::Volume;
use crate::{Error, Result};

/// One scan to process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputItem {
    /// Path as given (or as found under a directory, or resolved from a list file);
    /// for a DICOM series, the folder of its first file.
    pub path: PathBuf,
    /// Volume of a 4-D image (0-based), when the input named one with `:N`; for a
    /// 4-D DICOM series, the volume `--volume` chose.
    pub volume: Option<usize>,
    /// Unique id, used as the first column of the output row.
    pub id: String,
    /// Source of the voxels.
    pub source: InputSource,
}

/// The file format of an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSource {
    /// A NIfTI file: `path` (and `volume`) of the [`InputItem`].
    Nifti,
    /// A DICOM series made of `files`.
    DicomSeries {
        files: Vec<PathBuf>,
        series_uid: String,
        /// Series id from the scan, before it was made unique among all inputs.
        series_id: String,
        /// Number of volumes, from the headers (more than 1 for a 4-D series).
        volumes: usize,
    },
}

impl InputItem {
    /// Returns the files this input is read from.
    pub fn source_files(&self) -> Vec<&Path> {
        match &self.source {
            InputSource::Nifti => vec![self.path.as_path()],
            InputSource::DicomSeries { files, .. } => files.iter().map(PathBuf::as_path).collect(),
        }
    }
}

/// Loads the volume of one input: a NIfTI file or a DICOM series (with default
/// [`DicomOptions`]); of a 4-D input, volume `item.volume`, else `default_volume`.
pub fn load_input(item: &InputItem, default_volume: Option<usize>) -> Result<Volume> {
    match &item.source {
        InputSource::Nifti => Ok(crate::io::load_volume(&item.path, nifti_volume(item, default_volume)?)?.0),
        InputSource::DicomSeries { .. } => Ok(load_input_with_metadata(item, default_volume)?.0),
    }
}

/// Picks the volume of a NIfTI input: its own `:N`, else `default_volume` (the
/// `--volume` option) when the file is 4-D. A 3-D file ignores the option, so one
/// option serves a list that mixes 3-D scans and 4-D series.
pub fn nifti_volume(item: &InputItem, default_volume: Option<usize>) -> Result<Option<usize>> {
    if item.volume.is_some() || default_volume.is_none() {
        return Ok(item.volume);
    }
    let header = crate::io::read_header(&item.path)?;
    Ok(if header.n_volumes() > 1 { default_volume } else { None })
}

/// Loads the volume of one input as [`load_input`] does, with its acquisition
/// metadata: from the DICOM headers, or for a NIfTI file from the JSON sidecar
/// next to it (`scan.nii.gz` → `scan.json`; `None` when there is none).
pub fn load_input_with_metadata(item: &InputItem, default_volume: Option<usize>) -> Result<(Volume, Option<SequenceMetadata>)> {
    match &item.source {
        InputSource::Nifti => {
            let volume = crate::io::load_volume(&item.path, nifti_volume(item, default_volume)?)?.0;
            Ok((volume, nifti_sidecar(&item.path)?))
        }
        InputSource::DicomSeries { .. } => {
            let (volumes, info) = load_dicom_input(item, &DicomOptions::default())?;
            let index = dicom_volume(item, item.volume.or(default_volume), volumes.len())?;
            let mut metadata = info.metadata;
            if let Some(te) = metadata.echo_time.as_ref().and_then(|te| te.get(index)) {
                metadata.echo_time = Some(PerVolume::Series(te));
            }
            let volume = volumes.into_iter().nth(index).ok_or_else(|| Error::file(&item.path, "no volume loaded"))?;
            Ok((volume, Some(metadata)))
        }
    }
}

/// Picks the volume of a DICOM series with `count` volumes, with the rules and
/// messages of a 4-D NIfTI file: a 3-D series ignores the choice, a 4-D series
/// needs one.
fn dicom_volume(item: &InputItem, volume: Option<usize>, count: usize) -> Result<usize> {
    match volume {
        _ if count == 1 => Ok(0),
        None => Err(Error::file(
            &item.path,
            format!(
                "DICOM series {} is 4-D with {count} volumes; choose one with --volume N (N from 0 to {})",
                item.id,
                count - 1
            ),
        )),
        Some(v) if v >= count => Err(Error::file(
            &item.path,
            format!("volume {v} requested, but DICOM series {} has {count} volumes (valid: 0 to {})", item.id, count - 1),
        )),
        Some(v) => Ok(v),
    }
}

/// Reads `scan.json` next to `scan.nii(.gz)`, filling the acquisition plane and
/// sequence family when the sidecar (written by dcm2niix, say) lacks them.
fn nifti_sidecar(path: &Path) -> Result<Option<SequenceMetadata>> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = name.strip_suffix(".nii.gz").or_else(|| name.strip_suffix(".nii")).unwrap_or(&name);
    let sidecar = path.with_file_name(format!("{stem}.json"));
    if !sidecar.is_file() {
        return Ok(None);
    }

    let mut meta = dicom::read_sidecar(&sidecar)?;
    if meta.acquisition_plane.is_none() {
        let orientation = meta.image_orientation_patient_dicom;
        meta.acquisition_plane = orientation.map(|o| dicom::metadata::acquisition_plane(&o).to_string());
    }
    if meta.sequence_family.is_none() {
        meta.sequence_family = Some(dicom::metadata::sequence_family(&meta).to_string());
    }
    Ok(Some(meta))
}

/// Loads every volume of a DICOM input with its series information; a NIfTI input
/// is an error.
pub fn load_dicom_input(item: &InputItem, options: &DicomOptions) -> Result<(Vec<Volume>, SeriesInfo)> {
    let InputSource::DicomSeries { files, series_id, .. } = &item.source else {
        return Err(Error::file(&item.path, "not a DICOM series"));
    };
    let (volumes, mut info) = dicom::load_series_files(files, series_id, options)?;
    info.id = item.id.clone();
    Ok((volumes, info))
}

/// Splits `scan.nii.gz:2` into the path and the volume index.
///
/// A suffix counts only when the text after the last `:` is all ASCII digits and
/// the text before it ends in `.nii` or `.nii.gz`, so Windows drive letters and
/// file names with colons pass through unchanged as paths. A suffix too large for
/// `usize` is rejected.
pub fn parse_volume_spec(arg: &str) -> Result<(PathBuf, Option<usize>)> {
    let Some((path, suffix)) = arg.rsplit_once(':') else {
        return Ok((PathBuf::from(arg), None));
    };
    let is_index = !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit());
    if !is_index || !has_nifti_extension(path) {
        return Ok((PathBuf::from(arg), None));
    }

    let volume = suffix
        .parse::<usize>()
        .map_err(|_| Error::invalid(format!("{arg}: volume index {suffix} is too large")))?;
    Ok((PathBuf::from(path), Some(volume)))
}

/// Expands the command-line inputs into the list of scans, in deterministic order
/// with unique ids (the rules are in the module documentation).
///
/// `stdin` is read only when an argument is `-`, and at most once. Errors name
/// the offending path: a missing path, a directory without NIfTI files, a file
/// without a NIfTI extension.
pub fn expand_inputs(args: &[String], stdin: &mut dyn BufRead) -> Result<Vec<InputItem>> {
    let mut found = Vec::new();
    let mut stdin_used = false;

    for arg in args {
        if arg == "-" {
            if stdin_used {
                return Err(Error::invalid(
                    "'-' (read the input list from standard input) was given more than once",
                ));
            }
            stdin_used = true;
            let lines = read_list_lines(stdin, Path::new("<stdin>"))?;
            expand_list(&lines, Path::new("."), "<stdin>", &mut found)?;
        } else if let Some(list) = arg.strip_prefix('@') {
            let list_path = Path::new(list);
            let file = std::fs::File::open(list_path).map_err(|e| Error::io(list_path, e))?;
            let lines = read_list_lines(&mut std::io::BufReader::new(file), list_path)?;
            let base = list_path.parent().unwrap_or(Path::new(""));
            expand_list(&lines, base, list, &mut found)?;
        } else {
            expand_path_arg(arg, &mut found)?;
        }
    }

    let unique = remove_duplicates(found)?;
    Ok(assign_ids(unique))
}

/// A scan found before ids are assigned.
struct Found {
    path: PathBuf,
    volume: Option<usize>,
    source: InputSource,
}

impl Found {
    fn nifti(path: PathBuf, volume: Option<usize>) -> Self {
        Found { path, volume, source: InputSource::Nifti }
    }
}

fn has_nifti_extension(name: &str) -> bool {
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}

/// Matches the extension on the raw bytes of the name, so a file whose name is not
/// valid UTF-8 (`caf\xe9.nii.gz` from a Latin-1 system) is still found.
fn is_nifti_path(path: &Path) -> bool {
    path.file_name().is_some_and(|name| {
        let bytes = name.as_encoded_bytes();
        bytes.ends_with(b".nii") || bytes.ends_with(b".nii.gz")
    })
}

/// Returns the non-comment lines of a list, trimmed, with their 1-based line numbers.
fn read_list_lines(reader: &mut dyn BufRead, source: &Path) -> Result<Vec<(usize, String)>> {
    let mut lines = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Error::io(source, e))?;
        let entry = line.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        lines.push((index + 1, entry.to_string()));
    }
    Ok(lines)
}

fn expand_list(
    lines: &[(usize, String)],
    base: &Path,
    source: &str,
    found: &mut Vec<Found>,
) -> Result<()> {
    for (line_number, entry) in lines {
        let (path, volume) = parse_volume_spec(entry)?;
        let path = if path.is_relative() && base != Path::new(".") {
            base.join(path)
        } else {
            path
        };
        expand_path(&path, volume, found).map_err(|e| listed_in(e, source, *line_number))?;
    }
    Ok(())
}

/// Adds where a failing entry was listed to its error message.
fn listed_in(error: Error, source: &str, line_number: usize) -> Error {
    match error {
        Error::File { path, message } => Error::File {
            path,
            message: format!("{message} (listed in {source} line {line_number})"),
        },
        other => other,
    }
}

fn expand_path_arg(arg: &str, found: &mut Vec<Found>) -> Result<()> {
    let (path, volume) = parse_volume_spec(arg)?;
    expand_path(&path, volume, found)
}

fn expand_path(path: &Path, volume: Option<usize>, found: &mut Vec<Found>) -> Result<()> {
    // fs::metadata follows symbolic links, so a link to a scan counts as a scan.
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::file(path, "not found"));
        }
        Err(e) => return Err(Error::io(path, e)),
    };

    if metadata.is_dir() {
        if volume.is_some() {
            return Err(Error::file(
                path,
                "a volume suffix (:N) needs a NIfTI file, not a directory",
            ));
        }
        return expand_directory(path, found);
    }

    if !is_nifti_path(path) && volume.is_none() && dicom::is_dicom_file(path) {
        return add_dicom_series(path, &[path.to_path_buf()], found);
    }
    if !is_nifti_path(path) {
        return Err(Error::file(
            path,
            "not a NIfTI file name (.nii, .nii.gz) and not a DICOM file",
        ));
    }
    found.push(Found::nifti(path.to_path_buf(), volume));
    Ok(())
}

/// Groups DICOM files into series and adds one input per series, plus one per
/// unreadable file (its load reports the parse error).
fn add_dicom_series(source: &Path, files: &[PathBuf], found: &mut Vec<Found>) -> Result<()> {
    let scan = dicom::scan_files(files);
    if scan.series.is_empty() && scan.unreadable.is_empty() {
        return Err(Error::file(source, "DICOM file without an image (or a DICOMDIR)"));
    }

    let mut series: Vec<Found> = scan
        .series
        .into_iter()
        .map(|s| Found {
            path: folder_of(&s.files[0]),
            volume: None,
            source: InputSource::DicomSeries {
                volumes: s.volume_count(),
                files: s.files,
                series_uid: s.series_uid,
                series_id: s.id,
            },
        })
        .collect();
    series.sort_by(|a, b| (&a.path, base_id(a)).cmp(&(&b.path, base_id(b))));
    found.extend(series);

    for error in scan.unreadable {
        let file = match &error {
            Error::File { path, .. } | Error::Io { path, .. } => path.clone(),
            _ => continue,
        };
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        found.push(Found {
            path: folder_of(&file),
            volume: None,
            source: InputSource::DicomSeries {
                files: vec![file],
                series_uid: String::new(),
                series_id: dicom::sanitize(&name),
                volumes: 1,
            },
        });
    }
    Ok(())
}

fn folder_of(file: &Path) -> PathBuf {
    file.parent().map_or_else(|| file.to_path_buf(), Path::to_path_buf)
}

fn expand_directory(dir: &Path, found: &mut Vec<Found>) -> Result<()> {
    let mut files = Vec::new();
    let mut others = Vec::new();
    let mut ancestors = Vec::new();
    walk_directory(dir, &mut ancestors, &mut files, &mut others)?;
    let dicom_files: Vec<PathBuf> = others.into_iter().filter(|p| dicom::is_dicom_file(p)).collect();

    if files.is_empty() && dicom_files.is_empty() {
        return Err(Error::file(
            dir,
            "no NIfTI files (.nii, .nii.gz) or DICOM files in this directory or below (hidden files and directories are skipped)",
        ));
    }

    files.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    found.extend(files.into_iter().map(|path| Found::nifti(path, None)));
    if !dicom_files.is_empty() {
        add_dicom_series(dir, &dicom_files, found)?;
    }
    Ok(())
}

/// Collects NIfTI files under `dir` into `files` and other regular files into
/// `others`. `ancestors` contains the canonical paths of the
/// directories on the current descent, so a symbolic link back to one of them is
/// skipped instead of recursing forever.
fn walk_directory(
    dir: &Path,
    ancestors: &mut Vec<PathBuf>,
    files: &mut Vec<PathBuf>,
    others: &mut Vec<PathBuf>,
) -> Result<()> {
    let canonical = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    if ancestors.contains(&canonical) {
        return Ok(());
    }
    ancestors.push(canonical);

    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.file_name().as_encoded_bytes().starts_with(b".") {
            continue;
        }

        let path = entry.path();
        let metadata = match std::fs::metadata(&path) {
            Ok(metadata) => metadata,
            // A dangling symbolic link is not a scan.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&path, e)),
        };

        if metadata.is_dir() {
            walk_directory(&path, ancestors, files, others)?;
        } else if metadata.is_file() && is_nifti_path(&path) {
            files.push(path);
        } else if metadata.is_file() {
            others.push(path);
        }
    }

    ancestors.pop();
    Ok(())
}

/// Drops later occurrences of the same scan and volume (for DICOM, the same folder
/// and series). Two paths name the same
/// scan when their directories resolve to the same canonical directory and the
/// file names are equal. The file itself is not resolved, because in git-annex
/// datasets distinct scans with equal content are links to one object.
fn remove_duplicates(found: Vec<Found>) -> Result<Vec<Found>> {
    let mut seen = HashSet::new();
    let mut unique = Vec::with_capacity(found.len());
    for item in found {
        let series = match &item.source {
            InputSource::Nifti => None,
            InputSource::DicomSeries { series_uid, series_id, .. } => Some((series_uid.clone(), series_id.clone())),
        };
        if seen.insert((identity(&item.path)?, item.volume, series)) {
            unique.push(item);
        }
    }
    Ok(unique)
}

/// Returns the canonical directory of `path` joined with its file name.
fn identity(path: &Path) -> Result<PathBuf> {
    let absolute = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
    let (Some(dir), Some(name)) = (absolute.parent(), absolute.file_name()) else {
        return Ok(absolute);
    };
    let dir = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    Ok(dir.join(name))
}

/// Returns the file name without `.nii.gz`/`.nii`, plus `_vN` for a chosen volume.
fn base_id(item: &Found) -> String {
    if let InputSource::DicomSeries { series_id, .. } = &item.source {
        return series_id.clone();
    }
    let name = item
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name
        .strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))
        .unwrap_or(&name)
        .to_string();
    match item.volume {
        Some(volume) => format!("{stem}_v{volume}"),
        None => stem,
    }
}

/// Returns the names of the directories above the file, nearest first. They come
/// from the absolute path, so that `scan.nii` in the working directory also has
/// parents, with `..` applied lexically (`b/../a/x.nii` has parent `a`).
fn parent_names(path: &Path) -> Vec<String> {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let Some(parent) = absolute.parent() else {
        return Vec::new();
    };

    let mut names = Vec::new();
    for component in parent.components() {
        match component {
            Component::Normal(name) => names.push(name.to_string_lossy().into_owned()),
            Component::ParentDir => {
                names.pop();
            }
            _ => {}
        }
    }
    names.reverse();
    names
}

fn id_with_parents(base: &str, parents: &[String], depth: usize) -> String {
    let mut parts: Vec<&str> = parents[..depth].iter().rev().map(String::as_str).collect();
    parts.push(base);
    parts.join("_")
}

fn assign_ids(found: Vec<Found>) -> Vec<InputItem> {
    let bases: Vec<String> = found.iter().map(base_id).collect();
    // A DICOM series' path is its folder, which is the first name to prefix.
    let parents: Vec<Vec<String>> = found
        .iter()
        .map(|f| match f.source {
            InputSource::Nifti => parent_names(&f.path),
            InputSource::DicomSeries { .. } => parent_names(&f.path.join("series")),
        })
        .collect();
    let mut depths = vec![0usize; found.len()];

    // Each round prefixes one more directory to every member of a colliding group
    // that still has one; rounds stop when no group can grow. Depth is bounded by
    // the number of parents, so the loop ends.
    let mut ids = loop {
        let ids: Vec<String> = (0..found.len())
            .map(|i| id_with_parents(&bases[i], &parents[i], depths[i]))
            .collect();
        let mut grew = false;
        for members in colliding_groups(&ids) {
            // Members in one directory never differ by prefixes; they get numbers.
            if members.iter().all(|&i| parents[i] == parents[members[0]]) {
                continue;
            }
            for i in members {
                if depths[i] < parents[i].len() {
                    depths[i] += 1;
                    grew = true;
                }
            }
        }
        if !grew {
            break ids;
        }
    };

    number_remaining_duplicates(&mut ids);

    found
        .into_iter()
        .zip(ids)
        .map(|(f, id)| InputItem {
            path: f.path,
            volume: f.volume,
            id,
            source: f.source,
        })
        .collect()
}

/// Returns the index lists of ids that occur more than once, in first-occurrence order.
fn colliding_groups(ids: &[String]) -> Vec<Vec<usize>> {
    let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut order = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let members = groups.entry(id.as_str()).or_default();
        if members.is_empty() {
            order.push(id.as_str());
        }
        members.push(i);
    }
    order
        .into_iter()
        .filter_map(|id| groups.remove(id))
        .filter(|members| members.len() > 1)
        .collect()
}

/// Gives the second and later holders of an id `_2`, `_3`, ... (skipping numbers
/// whose result is already taken).
fn number_remaining_duplicates(ids: &mut [String]) {
    let mut taken: HashSet<String> = ids.iter().cloned().collect();
    for members in colliding_groups(ids) {
        let base = ids[members[0]].clone();
        let mut counter = 2;
        for &i in &members[1..] {
            while taken.contains(&format!("{base}_{counter}")) {
                counter += 1;
            }
            let id = format!("{base}_{counter}");
            taken.insert(id.clone());
            ids[i] = id;
            counter += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_spec_splits_nifti_suffix() {
        let (path, volume) = parse_volume_spec("scan.nii.gz:2").unwrap();
        assert_eq!(path, PathBuf::from("scan.nii.gz"));
        assert_eq!(volume, Some(2));

        let (path, volume) = parse_volume_spec("dir/scan.nii:10").unwrap();
        assert_eq!(path, PathBuf::from("dir/scan.nii"));
        assert_eq!(volume, Some(10));
    }

    #[test]
    fn volume_spec_leaves_other_colons() {
        for arg in [
            "C:/data/scan.nii.gz",
            "scan:2",
            "scan.nii.gz:x",
            "scan.nii.gz:",
            "a:b/scan.nii",
        ] {
            let (path, volume) = parse_volume_spec(arg).unwrap();
            assert_eq!(path, PathBuf::from(arg), "{arg}");
            assert_eq!(volume, None, "{arg}");
        }
    }

    #[test]
    fn volume_spec_rejects_overflowing_index() {
        let result = parse_volume_spec("scan.nii:99999999999999999999999");
        assert!(result.is_err());
    }

    fn found(path: &str, volume: Option<usize>) -> Found {
        Found::nifti(PathBuf::from(path), volume)
    }

    #[test]
    fn ids_prefix_parents_until_unique() {
        let items = assign_ids(vec![
            found("/d/sub-01/anat/T1w.nii.gz", None),
            found("/d/sub-02/anat/T1w.nii.gz", None),
            found("/d/other.nii", None),
        ]);
        let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["sub-01_anat_T1w", "sub-02_anat_T1w", "other"]);
    }

    #[test]
    fn parent_names_apply_parent_dir_lexically() {
        let names = parent_names(Path::new("/r/b/../a/x.nii"));
        assert_eq!(names, ["a", "r"]);
    }

    #[test]
    fn ids_add_volume_suffix() {
        let items = assign_ids(vec![found("/d/bold.nii.gz", Some(3))]);
        assert_eq!(items[0].id, "bold_v3");
    }

    #[test]
    fn ids_number_inseparable_duplicates() {
        let items = assign_ids(vec![found("/d/x.nii", None), found("/d/x.nii.gz", None)]);
        assert_eq!(items[0].id, "x");
        assert_eq!(items[1].id, "x_2");
    }
}
