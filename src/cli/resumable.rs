//! Resumable CSV outputs shared by the batch tools: choosing this job's inputs, opening
//! `-o FILE` so a rerun continues it, and refusing to mix rows computed with other settings.
//!
//! A run writes rows to `FILE.partial` and its settings to `FILE.partial.json`; when every
//! input succeeded, `FILE` and `FILE.json` replace them (see [`finish_sidecars`]). A rerun
//! compares its settings with both sidecars before it keeps any earlier row.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::cli::args::BatchArgs;
use crate::cli::inputs::{expand_inputs, InputItem, InputSource};
use crate::cli::output::RowSink;
use crate::cli::progress::{Reporter, Summary};
use crate::cli::provenance::{sidecar_path, write_sidecar};
use crate::cli::shard::resolve_shard;
use crate::error::{Error, Result};

/// Expands the inputs of `batch` and keeps this job's shard (`--shard` or the SLURM array).
pub fn select_items(batch: &BatchArgs, reporter: &mut Reporter) -> Result<Vec<InputItem>> {
    let items = expand_inputs(&batch.inputs, &mut std::io::stdin().lock())?;
    let choice = resolve_shard(batch.shard, |name| std::env::var(name).ok())?;
    if let Some(w) = &choice.warning {
        reporter.warn(w);
    }
    Ok(match choice.shard {
        Some((shard, _)) => shard.select(&items),
        None => items,
    })
}

/// After a run into `-o FILE` in which no input failed, writes `FILE.json` and removes
/// `FILE.partial.json`.
pub fn finish_sidecars(output: Option<&Path>, record: &Value, summary: &Summary) -> Result<()> {
    let Some(output) = output else { return Ok(()) };
    if summary.failed > 0 {
        return Ok(());
    }
    write_sidecar(output, record)?;
    let partial = sidecar_path(&partial_path(output));
    std::fs::remove_file(&partial).or_else(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Ok(()),
        _ => Err(Error::io(&partial, e)),
    })
}

/// `-o -` means standard output, as for most Unix tools.
pub fn output_file(batch: &BatchArgs) -> Option<&Path> {
    batch.output.as_deref().filter(|p| *p != Path::new("-"))
}

/// Expands one value to all three axes, or takes three values.
pub fn three<T: Copy + std::fmt::Display>(flag: &str, values: &[T], valid: impl Fn(T) -> bool) -> Result<[T; 3]> {
    let out = match values {
        [v] => [*v; 3],
        [a, b, c] => [*a, *b, *c],
        _ => return Err(Error::invalid(format!("{flag} takes one value or three (i,j,k), got {}", values.len()))),
    };
    if let Some(bad) = out.iter().find(|v| !valid(**v)) {
        return Err(Error::invalid(format!("{flag}: invalid value {bad}")));
    }
    Ok(out)
}


pub fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}


/// Opens `-o FILE` for this run; `settings` names the keys of the record's
/// `details.settings` that rows of one file must share. It rejects an output that is also an input, and rows
/// of earlier runs made with other settings (compared through the provenance sidecars
/// of `FILE` and `FILE.partial`). It then checks that kept rows still name the same
/// scans and records this run's settings beside `FILE.partial`.
pub fn open_output(
    path: &Path,
    header: &[&str],
    items: &[InputItem],
    overwrite: bool,
    record: &Value,
    settings: &[&str],
) -> Result<RowSink> {
    let inputs: Vec<&Path> = items.iter().flat_map(|i| i.source_files()).collect();
    crate::io::atomic::reject_output_over_input(path, &inputs)?;
    if !overwrite {
        check_settings(path, path, record, settings)?;
        check_settings(path, &partial_path(path), record, settings)?;
    }

    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    let sink = RowSink::file(path, header, &ids, overwrite)?;
    check_resumed_paths(path, &sink, items)?;
    write_sidecar(&partial_path(path), record)?;
    Ok(sink)
}

/// Fails when the sidecar of `earlier` (an output of an earlier run) records other
/// values of the `settings` keys than `record`, since its rows would not be comparable with new ones.
fn check_settings(output: &Path, earlier: &Path, record: &Value, settings: &[&str]) -> Result<()> {
    let sidecar = sidecar_path(earlier);
    let Ok(text) = std::fs::read_to_string(&sidecar) else {
        return Ok(());
    };
    let old: Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(&sidecar, format!("invalid provenance record ({e}); delete it or pass --overwrite")))?;
    let (old, new) = (&old["details"]["settings"], &record["details"]["settings"]);
    let differing: Vec<&str> = settings
        .iter()
        .copied()
        .filter(|key| old[*key] != new[*key])
        .collect();
    if differing.is_empty() {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "{}: its rows were computed with other settings ({}; see {}), so new rows would not be \
         comparable; write to a new file or pass --overwrite",
        output.display(),
        differing.join(", "),
        sidecar.display()
    )))
}


/// Fails when a row kept from an earlier run pairs an id and a path differently
/// from the current inputs.
///
/// Ids come from file names and get parent folders prefixed only when two inputs
/// share a name, so another input list can give a scan a new id, or an id to another
/// scan. Resuming by id would then skip a scan or process one twice.
fn check_resumed_paths(output: &Path, sink: &RowSink, items: &[InputItem]) -> Result<()> {
    // The series of one DICOM folder and the volumes of one 4-D file share a path
    // (their ids differ by series or `_vN`), so only 3-D NIfTI inputs pair one path
    // with one id.
    let current: Vec<(String, &str)> = items
        .iter()
        .filter(|i| matches!(i.source, InputSource::Nifti) && i.volume.is_none())
        .map(|i| (i.path.display().to_string(), i.id.as_str()))
        .collect();
    for row in sink.resumed_rows() {
        let (Some(old_id), Some(old_path)) = (row.first(), row.get(1)) else {
            continue;
        };
        for (path, id) in &current {
            if (id == old_id) != (path == old_path) {
                return Err(Error::invalid(format!(
                    "{}: an earlier run wrote id '{old_id}' for {old_path}, but now id '{id}' names {path}; \
                     the input list changed how scans are named, so write to a new file or pass --overwrite",
                    output.display()
                )));
            }
        }
    }
    Ok(())
}
