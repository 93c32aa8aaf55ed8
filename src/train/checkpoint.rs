//! Training checkpoints: the `last` and `best` state of a run in its output directory.
//!
//! A checkpoint is two files. `KIND-stepNNNNNNNN.safetensors` contains the model variables
//! (`model.NAME`) and the optimizer moments (`optimizer.OPT.exp_avg.NAME`,
//! `optimizer.OPT.exp_avg_sq.NAME`). `KIND.json` contains the step, the elapsed time, the
//! optimizers' per-parameter step counts, learning rates and schedules, the random source's
//! state, the best result, the run's configuration, the tool's extra state and the name of
//! the tensor file.
//!
//! `KIND.json` is the commit point. A save writes the tensor file under a name no other file
//! has, then replaces `KIND.json` by an atomic rename (each file written to a temporary file
//! beside it, synced, renamed, and the directory synced). A save killed at any point before
//! that rename leaves the previous checkpoint whole. The next save removes tensor files that
//! no JSON names.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use tempfile::NamedTempFile;

use super::optim::{AdamWConfig, AdamWState, ParamState};
use super::rng::{RngState, TrainRng};
use super::schedule::WarmupCosine;
use super::state::{BestRecord, TrainState};
use crate::error::{Error, Result};
use crate::io::atomic::temp_file_beside;

const FORMAT: &str = "prism-train-checkpoint/1";
/// safetensors metadata key with the step, checked against the JSON when loading.
const STEP_KEY: &str = "prism_train_step";
/// Mismatches listed by name in a load error before the rest are counted.
const LISTED_MISMATCHES: usize = 6;

/// The two checkpoints of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointKind {
    /// The most recent state, for resuming.
    Last,
    /// The state with the best validation metric.
    Best,
}

impl CheckpointKind {
    pub fn name(self) -> &'static str {
        match self {
            CheckpointKind::Last => "last",
            CheckpointKind::Best => "best",
        }
    }

    /// Returns the path of the checkpoint's JSON in `dir`.
    pub fn json_path(self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.json", self.name()))
    }
}

/// Facts about a loaded checkpoint besides the state it restored.
#[derive(Debug, Clone)]
pub struct LoadedCheckpoint {
    /// The checkpoint's JSON file.
    pub path: PathBuf,
    pub step: u64,
    /// The configuration of the run that saved it.
    pub config: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointJson {
    format: String,
    step: u64,
    elapsed_s: f64,
    /// File name of the tensor file, in the same directory.
    tensors: String,
    optimizers: BTreeMap<String, OptimizerJson>,
    rng: RngState,
    best: Option<BestRecord>,
    config: serde_json::Value,
    extra: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize)]
struct OptimizerJson {
    lr: f64,
    config: AdamWConfig,
    schedule: Option<WarmupCosine>,
    /// Per-parameter step counts, which differ when some parameters missed gradients.
    steps: BTreeMap<String, u64>,
}

/// A checkpoint whose files are written but not yet committed (see the module documentation).
/// Dropping it without [`PendingCheckpoint::commit`] removes the new tensor file and keeps the
/// previous checkpoint.
pub struct PendingCheckpoint {
    dir: PathBuf,
    kind: CheckpointKind,
    json: Option<NamedTempFile>,
    tensors_path: Option<PathBuf>,
}

/// Saves `state` as the `kind` checkpoint in `dir` and returns the JSON's path.
pub fn save(
    dir: &Path,
    kind: CheckpointKind,
    state: &TrainState,
    config: &serde_json::Value,
) -> Result<PathBuf> {
    prepare(dir, kind, state, config)?.commit()
}

/// Writes the tensor file and a temporary JSON, without touching the current checkpoint.
pub fn prepare(
    dir: &Path,
    kind: CheckpointKind,
    state: &TrainState,
    config: &serde_json::Value,
) -> Result<PendingCheckpoint> {
    let tensors_path = write_tensors(dir, kind, state)?;
    let mut pending = PendingCheckpoint {
        dir: dir.to_path_buf(),
        kind,
        json: None,
        tensors_path: Some(tensors_path.clone()),
    };

    let tensors_name = tensors_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let json = checkpoint_json(state, config, tensors_name);
    let json_path = kind.json_path(dir);
    let text = serde_json::to_string_pretty(&json)
        .map_err(|e| Error::file(&json_path, format!("failed to encode the checkpoint: {e}")))?;

    let mut temp = temp_file_beside(&json_path)?;
    temp.write_all(text.as_bytes())
        .and_then(|()| temp.write_all(b"\n"))
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| Error::io(temp.path(), e))?;
    pending.json = Some(temp);
    Ok(pending)
}

impl PendingCheckpoint {
    /// Renames the JSON into place, syncs the directory and removes tensor files of this kind
    /// that the new JSON does not name. Returns the JSON's path.
    pub fn commit(mut self) -> Result<PathBuf> {
        let json_path = self.kind.json_path(&self.dir);
        let Some(temp) = self.json.take() else {
            return Err(Error::file(&json_path, "checkpoint was already committed"));
        };
        temp.persist(&json_path)
            .map_err(|e| Error::io(&json_path, e.error))?;
        sync_dir(&self.dir)?;

        let keep = self.tensors_path.take();
        remove_stale_tensors(&self.dir, self.kind, keep.as_deref());
        Ok(json_path)
    }
}

impl Drop for PendingCheckpoint {
    fn drop(&mut self) {
        if let Some(path) = self.tensors_path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

fn checkpoint_json(
    state: &TrainState,
    config: &serde_json::Value,
    tensors: String,
) -> CheckpointJson {
    let optimizers = state
        .optimizers
        .iter()
        .map(|named| {
            let exported = named.optimizer.export_state();
            let steps = exported
                .params
                .iter()
                .map(|(name, param)| (name.clone(), param.step))
                .collect();
            let json = OptimizerJson {
                lr: exported.lr,
                config: *named.optimizer.config(),
                schedule: named.schedule,
                steps,
            };
            (named.name.clone(), json)
        })
        .collect();

    CheckpointJson {
        format: FORMAT.to_string(),
        step: state.step,
        elapsed_s: state.elapsed_s,
        tensors,
        optimizers,
        rng: state.rng.state(),
        best: state.best.clone(),
        config: config.clone(),
        extra: state.extra.clone(),
    }
}

/// Returns every tensor of the checkpoint by its name in the file, on the CPU.
fn checkpoint_tensors(state: &TrainState) -> Result<Vec<(String, Tensor)>> {
    let mut tensors = Vec::new();
    for (name, var) in &state.model {
        tensors.push((model_key(name), var.as_tensor().to_device(&Device::Cpu)?));
    }
    for named in &state.optimizers {
        for (param, saved) in named.optimizer.export_state().params {
            let (avg_key, sq_key) = moment_keys(&named.name, &param);
            tensors.push((avg_key, saved.exp_avg.to_device(&Device::Cpu)?));
            tensors.push((sq_key, saved.exp_avg_sq.to_device(&Device::Cpu)?));
        }
    }
    Ok(tensors)
}

fn model_key(name: &str) -> String {
    format!("model.{name}")
}

fn moment_keys(optimizer: &str, param: &str) -> (String, String) {
    (
        format!("optimizer.{optimizer}.exp_avg.{param}"),
        format!("optimizer.{optimizer}.exp_avg_sq.{param}"),
    )
}

/// Writes the tensor file under a fresh name and returns its path.
// NOTE: the file is encoded in memory first, so a save briefly needs the checkpoint's size
// (12 bytes per f32 parameter: value and two moments) in host memory on top of the model.
fn write_tensors(dir: &Path, kind: CheckpointKind, state: &TrainState) -> Result<PathBuf> {
    let tensors = checkpoint_tensors(state)?;
    let metadata = HashMap::from([(STEP_KEY.to_string(), state.step.to_string())]);
    let bytes =
        safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(metadata))
            .map_err(|e| Error::file(dir, format!("failed to encode checkpoint tensors: {e}")))?;

    let mut path = dir.join(format!("{}-step{:08}.safetensors", kind.name(), state.step));
    let mut temp = temp_file_beside(&path)?;
    temp.write_all(&bytes)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| Error::io(temp.path(), e))?;

    // The same step can be saved twice (a periodic save, then the final one), and the file
    // the current JSON names must survive until the new JSON replaces it.
    for attempt in 1.. {
        match temp.persist_noclobber(&path) {
            Ok(_) => break,
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                temp = e.file;
                path = dir.join(format!(
                    "{}-step{:08}-{attempt}.safetensors",
                    kind.name(),
                    state.step
                ));
            }
            Err(e) => return Err(Error::io(&path, e.error)),
        }
    }
    Ok(path)
}

fn remove_stale_tensors(dir: &Path, kind: CheckpointKind, keep: Option<&Path>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{}-step", kind.name());
    // Temporary files left by saves that were killed before their rename.
    let temp_prefixes = [format!(".{prefix}"), format!(".{}.json.", kind.name())];
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale_tensors = name.starts_with(&prefix) && name.ends_with(".safetensors");
        let stale_temp =
            temp_prefixes.iter().any(|p| name.starts_with(p.as_str())) && name.ends_with(".tmp");
        if (stale_tensors || stale_temp) && Some(entry.path().as_path()) != keep {
            // A file that cannot be removed only costs disk space, and the next save retries.
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

/// Returns whether `dir` has a `kind` checkpoint.
pub fn exists(dir: &Path, kind: CheckpointKind) -> bool {
    kind.json_path(dir).is_file()
}

/// Returns the step of the `kind` checkpoint in `dir`, `None` when there is none, without
/// reading its tensors.
pub fn saved_step(dir: &Path, kind: CheckpointKind) -> Result<Option<u64>> {
    let json_path = kind.json_path(dir);
    if !json_path.is_file() {
        return Ok(None);
    }
    Ok(Some(read_json(&json_path)?.step))
}

/// Returns the run configuration saved in the `kind` checkpoint in `dir`.
pub fn saved_config(dir: &Path, kind: CheckpointKind) -> Result<serde_json::Value> {
    let json_path = kind.json_path(dir);
    if !json_path.is_file() {
        return Err(Error::file(dir, format!("no {} checkpoint in this folder", kind.name())));
    }
    Ok(read_json(&json_path)?.config)
}

/// Restores `state` from the `kind` checkpoint in `dir`; `Ok(None)` when there is none.
///
/// Every model variable and optimizer moment must be in the file with the shape and dtype of
/// `state`, and the file must hold nothing else. Otherwise `state` is left unchanged and the
/// error, one line naming the file, lists the mismatches. The optimizers' hyper-parameters and
/// schedules stay those of `state`, because the JSON's copies only record what the run used.
pub fn load(
    dir: &Path,
    kind: CheckpointKind,
    state: &mut TrainState,
) -> Result<Option<LoadedCheckpoint>> {
    let json_path = kind.json_path(dir);
    if !json_path.is_file() {
        return Ok(None);
    }
    let json = read_json(&json_path)?;
    let tensors_path = dir.join(&json.tensors);
    let tensors = read_tensors(&tensors_path, json.step)?;

    let problems = mismatches(state, &json, &tensors);
    if !problems.is_empty() {
        return Err(Error::file(
            &tensors_path,
            format!(
                "checkpoint does not match this model: {}; start in a new output directory or use the configuration that wrote it",
                summarize(&problems)
            ),
        ));
    }

    restore(state, &json, &tensors).map_err(|e| Error::file(&tensors_path, e.to_string()))?;
    Ok(Some(LoadedCheckpoint {
        path: json_path,
        step: json.step,
        config: json.config,
    }))
}

fn read_json(path: &Path) -> Result<CheckpointJson> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let json: CheckpointJson = serde_json::from_str(&text)
        .map_err(|e| Error::file(path, format!("invalid checkpoint JSON: {e}")))?;
    if json.format != FORMAT {
        return Err(Error::file(
            path,
            format!("checkpoint format is {}, expected {FORMAT}", json.format),
        ));
    }
    Ok(json)
}

fn read_tensors(path: &Path, step: u64) -> Result<HashMap<String, Tensor>> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::file(path, format!("invalid safetensors file: {e}")))?;
    let saved_step = metadata.metadata().as_ref().and_then(|m| m.get(STEP_KEY));
    if saved_step != Some(&step.to_string()) {
        return Err(Error::file(
            path,
            format!(
                "tensor file is from step {}, but its JSON is from step {step}",
                saved_step.map_or("(unknown)", |s| s.as_str())
            ),
        ));
    }
    candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| Error::file(path, format!("invalid safetensors file: {e}")))
}

/// Lists every difference between what `state` needs and what the checkpoint holds.
fn mismatches(
    state: &TrainState,
    json: &CheckpointJson,
    tensors: &HashMap<String, Tensor>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expected: HashMap<String, (Vec<usize>, DType)> = HashMap::new();
    for (name, var) in &state.model {
        expected.insert(model_key(name), (var.dims().to_vec(), var.dtype()));
    }

    for named in &state.optimizers {
        let Some(saved) = json.optimizers.get(&named.name) else {
            problems.push(format!("missing optimizer {}", named.name));
            continue;
        };
        for param in named.optimizer.params() {
            if !saved.steps.contains_key(&param.name) {
                problems.push(format!(
                    "missing step count of {} in optimizer {}",
                    param.name, named.name
                ));
            }
            let (avg_key, sq_key) = moment_keys(&named.name, &param.name);
            let shape = (param.var.dims().to_vec(), param.var.dtype());
            expected.insert(avg_key, shape.clone());
            expected.insert(sq_key, shape);
        }
    }
    for name in json.optimizers.keys() {
        if !state.optimizers.iter().any(|o| &o.name == name) {
            problems.push(format!("unexpected optimizer {name}"));
        }
    }

    let mut names: Vec<&String> = expected.keys().collect();
    names.sort();
    for name in names {
        let (dims, dtype) = &expected[name];
        match tensors.get(name) {
            None => problems.push(format!("missing {name}")),
            Some(t) if t.dims() != dims.as_slice() => problems.push(format!(
                "{name} has shape {:?}, expected {dims:?}",
                t.dims()
            )),
            Some(t) if t.dtype() != *dtype => {
                problems.push(format!("{name} is {:?}, expected {dtype:?}", t.dtype()))
            }
            Some(_) => {}
        }
    }
    let mut unexpected: Vec<&String> = tensors
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    unexpected.sort();
    problems.extend(
        unexpected
            .into_iter()
            .map(|name| format!("unexpected {name}")),
    );
    problems
}

fn summarize(problems: &[String]) -> String {
    let mut text = problems[..problems.len().min(LISTED_MISMATCHES)].join("; ");
    if problems.len() > LISTED_MISMATCHES {
        text.push_str(&format!(
            "; and {} more",
            problems.len() - LISTED_MISMATCHES
        ));
    }
    text
}

/// Copies the checkpoint into `state`, after [`mismatches`] has checked every name and shape.
fn restore(
    state: &mut TrainState,
    json: &CheckpointJson,
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    for (name, var) in &state.model {
        var.set(&tensors[&model_key(name)].to_device(var.device())?)?;
    }

    for named in &mut state.optimizers {
        let saved = &json.optimizers[&named.name];
        let mut params = BTreeMap::new();
        for param in named.optimizer.params() {
            let (avg_key, sq_key) = moment_keys(&named.name, &param.name);
            let param_state = ParamState {
                step: saved.steps[&param.name],
                exp_avg: tensors[&avg_key].clone(),
                exp_avg_sq: tensors[&sq_key].clone(),
            };
            params.insert(param.name.clone(), param_state);
        }
        named.optimizer.import_state(&AdamWState {
            lr: saved.lr,
            params,
        })?;
    }

    state.step = json.step;
    state.elapsed_s = json.elapsed_s;
    state.rng = TrainRng::from_state(json.rng.clone());
    state.best = json.best.clone();
    state.extra = json.extra.clone();
    Ok(())
}
