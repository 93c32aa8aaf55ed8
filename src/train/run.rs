//! The training loop shared by the tools. It calls the tool's step and validation closures,
//! applies learning-rate schedules, writes the log and keeps the `last` and `best`
//! checkpoints. It resumes from `last` and stops at `max_steps`, at `max_time` or on a stop
//! signal. Nothing in it depends on what the model is or what the losses mean.
//!
//! One iteration: apply schedules → step closure (forward, backward, optimizer steps) →
//! `state.step += 1` → validation if due → log row → `best` checkpoint if the metric improved
//! → `last` checkpoint if due. Stop conditions are checked between iterations, and every stop
//! saves `last` first.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::checkpoint::{self, CheckpointKind};
use super::log::{LogColumns, LogRow, TrainLog, LOG_FILE};
use super::progress::StepProgress;
use super::signals::{signal_name, StopSignal};
use super::state::{BestRecord, TrainState};
use crate::cli::Exit;
use crate::error::{Error, Result};

/// Loss terms of one step by name (`total`, `dice`, ...).
pub type Losses = BTreeMap<String, f64>;
/// Validation metrics by name.
pub type Metrics = BTreeMap<String, f64>;

/// Whether a larger or a smaller metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    Minimize,
    Maximize,
}

/// The validation metric that selects the `best` checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BestMetric {
    pub name: String,
    pub goal: Goal,
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Directory for the checkpoints and the log; created when missing.
    pub dir: PathBuf,
    /// Total number of training steps, counted over all sessions.
    pub max_steps: u64,
    /// Wall-clock limit of this session; the run saves and stops at the first step boundary
    /// after it.
    pub max_time: Option<Duration>,
    /// Steps between `last` checkpoints; 0 saves only when the run stops.
    pub checkpoint_every: u64,
    /// Steps between validations; 0 never validates.
    pub validate_every: u64,
    /// Metric that selects the `best` checkpoint; `None` keeps no `best`.
    pub best: Option<BestMetric>,
    /// Continue from the `last` checkpoint in `dir` when there is one. Without it, an existing
    /// checkpoint is an error, so a run never overwrites another by accident.
    pub resume: bool,
    /// Names of the loss terms the step closure returns and of the validation metrics.
    pub losses: Vec<String>,
    pub metrics: Vec<String>,
    /// The tool's configuration, saved in every checkpoint.
    pub config: serde_json::Value,
}

/// The cause that stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    MaxSteps,
    MaxTime,
    Signal(i32),
}

/// The end of a run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Completed steps.
    pub step: u64,
    pub stop: StopReason,
    /// JSON of the `last` checkpoint, saved at `step`.
    pub checkpoint: PathBuf,
    pub best: Option<BestRecord>,
}

impl RunOutcome {
    /// Maps the outcome to the process exit code: 0 when `max_steps` was reached, 3
    /// ([`Exit::Interrupted`]) when a signal or `max_time` stopped the run with steps left, so
    /// a job script can requeue it with `resume`.
    pub fn exit(&self) -> Exit {
        match self.stop {
            StopReason::MaxSteps => Exit::Success,
            StopReason::MaxTime | StopReason::Signal(_) => Exit::Interrupted,
        }
    }
}

/// Runs the training loop; see the module documentation.
///
/// `train_step` runs one step on `state` (its `step` is the number of steps completed before)
/// and returns the loss terms. `validate` is called after every `validate_every`-th step.
/// Both may use `state.rng` and `state.extra`, which the checkpoints save.
pub fn run<S, V>(
    config: &RunConfig,
    state: &mut TrainState,
    stop: &StopSignal,
    progress: &mut StepProgress,
    mut train_step: S,
    mut validate: V,
) -> Result<RunOutcome>
where
    S: FnMut(&mut TrainState) -> Result<Losses>,
    V: FnMut(&mut TrainState) -> Result<Metrics>,
{
    let mut log = open_run(config, state, progress)?;
    let mut saved_step =
        checkpoint::exists(&config.dir, CheckpointKind::Last).then_some(state.step);

    let session_start = Instant::now();
    let elapsed_before = state.elapsed_s;
    progress.start(state.step, config.max_steps);
    let stop_reason = loop {
        if let Some(reason) = stop_reason(config, stop, state.step, session_start) {
            break reason;
        }

        state.apply_schedules();
        let learning_rates = state.learning_rates();
        let losses = train_step(state)?;
        reject_non_finite(&losses, state.step)?;
        state.step += 1;
        state.elapsed_s = elapsed_before + session_start.elapsed().as_secs_f64();

        let metrics = if is_due(state.step, config.validate_every) {
            Some(validate(state)?)
        } else {
            None
        };
        log.append(&LogRow {
            step: state.step,
            elapsed_s: state.elapsed_s,
            learning_rates: &learning_rates,
            losses: &losses,
            metrics: metrics.as_ref(),
        })?;
        progress.step(state.step, &losses, &learning_rates);

        if let Some(metrics) = &metrics {
            update_best(config, state, metrics, progress)?;
        }
        if is_due(state.step, config.checkpoint_every) {
            checkpoint::save(&config.dir, CheckpointKind::Last, state, &config.config)?;
            saved_step = Some(state.step);
        }
    };

    let checkpoint = CheckpointKind::Last.json_path(&config.dir);
    if saved_step != Some(state.step) {
        checkpoint::save(&config.dir, CheckpointKind::Last, state, &config.config)?;
    }
    progress.finish();
    progress.info(&stop_message(stop_reason, state.step, &checkpoint));
    Ok(RunOutcome {
        step: state.step,
        stop: stop_reason,
        checkpoint,
        best: state.best.clone(),
    })
}

/// Creates the run directory, resumes from `last` if asked, and opens the log.
fn open_run(
    config: &RunConfig,
    state: &mut TrainState,
    progress: &mut StepProgress,
) -> Result<TrainLog> {
    fs::create_dir_all(&config.dir).map_err(|e| Error::io(&config.dir, e))?;
    let columns = LogColumns {
        optimizers: state.optimizers.iter().map(|o| o.name.clone()).collect(),
        losses: config.losses.clone(),
        metrics: config.metrics.clone(),
    };
    let log_path = config.dir.join(LOG_FILE);

    let last_json = CheckpointKind::Last.json_path(&config.dir);
    if !config.resume {
        if last_json.exists() {
            return Err(Error::file(
                &last_json,
                "a checkpoint of an earlier run is here; resume it or choose another output directory",
            ));
        }
        return TrainLog::create(&log_path, columns);
    }

    let Some(loaded) = checkpoint::load(&config.dir, CheckpointKind::Last, state)? else {
        return TrainLog::create(&log_path, columns);
    };
    progress.info(&format!(
        "resumed from {} at step {}",
        loaded.path.display(),
        loaded.step
    ));
    if loaded.config != config.config {
        progress.warn("the configuration differs from the one saved in the checkpoint; continuing with the new one");
    }
    TrainLog::resume(&log_path, columns, loaded.step)
}

fn stop_reason(
    config: &RunConfig,
    stop: &StopSignal,
    step: u64,
    session_start: Instant,
) -> Option<StopReason> {
    if step >= config.max_steps {
        return Some(StopReason::MaxSteps);
    }
    if let Some(signal) = stop.received() {
        return Some(StopReason::Signal(signal));
    }
    match config.max_time {
        Some(limit) if session_start.elapsed() >= limit => Some(StopReason::MaxTime),
        _ => None,
    }
}

fn is_due(step: u64, every: u64) -> bool {
    every > 0 && step.is_multiple_of(every)
}

/// Fails on a NaN or infinite loss, because the update it came with has spoiled the weights.
/// The `last` checkpoint on disk is from before that update.
fn reject_non_finite(losses: &Losses, step: u64) -> Result<()> {
    match losses.iter().find(|(_, value)| !value.is_finite()) {
        Some((name, value)) => Err(Error::invalid(format!(
            "loss {name} is {value} at step {}; lower the learning rate or resume from the last checkpoint",
            step + 1
        ))),
        None => Ok(()),
    }
}

/// Records a better validation result and saves it as the `best` checkpoint.
fn update_best(
    config: &RunConfig,
    state: &mut TrainState,
    metrics: &Metrics,
    progress: &mut StepProgress,
) -> Result<()> {
    let Some(best) = &config.best else {
        return Ok(());
    };
    let Some(&value) = metrics.get(&best.name) else {
        return Err(Error::invalid(format!(
            "validation returned no metric {} to select the best checkpoint by",
            best.name
        )));
    };

    let improved = match &state.best {
        None => true,
        Some(record) => match best.goal {
            Goal::Minimize => value < record.value,
            Goal::Maximize => value > record.value,
        },
    };
    if improved {
        state.best = Some(BestRecord {
            metric: best.name.clone(),
            value,
            step: state.step,
        });
        let path = checkpoint::save(&config.dir, CheckpointKind::Best, state, &config.config)?;
        progress.info(&format!(
            "{} = {value} at step {}: saved {}",
            best.name,
            state.step,
            path.display()
        ));
    }
    Ok(())
}

fn stop_message(reason: StopReason, step: u64, checkpoint: &std::path::Path) -> String {
    let why = match reason {
        StopReason::MaxSteps => "finished".to_string(),
        StopReason::MaxTime => "time limit reached".to_string(),
        StopReason::Signal(signal) => format!("stopped by {}", signal_name(signal)),
    };
    format!("{why} at step {step}; checkpoint {}", checkpoint.display())
}
