//! Everything a training run carries from step to step and saves in a checkpoint: the step
//! count, the model's variables by name, the named optimizers with their schedules, the random
//! source, the best validation result and whatever the tool adds.

use std::collections::{BTreeMap, HashSet};

use candle_core::Var;
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use super::optim::AdamW;
use super::rng::TrainRng;
use super::schedule::WarmupCosine;
use crate::error::{Error, Result};

/// An optimizer with its name (the log column `lr.NAME`) and an optional schedule that the
/// loop applies before every step.
pub struct NamedOptimizer {
    pub name: String,
    pub optimizer: AdamW,
    pub schedule: Option<WarmupCosine>,
}

/// The best validation result so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestRecord {
    pub metric: String,
    pub value: f64,
    /// Step after which the validation ran.
    pub step: u64,
}

/// The mutable state of a run; see the module documentation.
pub struct TrainState {
    /// Number of completed training steps.
    pub step: u64,
    /// Seconds spent in the training loop over all sessions of the run.
    pub elapsed_s: f64,
    /// Model variables by name, in checkpoint order.
    pub model: Vec<(String, Var)>,
    pub optimizers: Vec<NamedOptimizer>,
    pub rng: TrainRng,
    pub best: Option<BestRecord>,
    /// Tool-specific state saved in the checkpoint's JSON (for example a data-sampler position).
    pub extra: serde_json::Value,
}

impl TrainState {
    /// Creates the state at step 0. Model and optimizer names must be unique.
    pub fn new(
        model: Vec<(String, Var)>,
        optimizers: Vec<NamedOptimizer>,
        seed: u64,
    ) -> Result<TrainState> {
        reject_duplicates(
            "model variable",
            model.iter().map(|(name, _)| name.as_str()),
        )?;
        reject_duplicates("optimizer", optimizers.iter().map(|o| o.name.as_str()))?;
        Ok(TrainState {
            step: 0,
            elapsed_s: 0.0,
            model,
            optimizers,
            rng: TrainRng::new(seed),
            best: None,
            extra: serde_json::Value::Null,
        })
    }

    /// Returns the optimizer called `name`.
    pub fn optimizer_mut(&mut self, name: &str) -> Result<&mut AdamW> {
        self.optimizers
            .iter_mut()
            .find(|o| o.name == name)
            .map(|o| &mut o.optimizer)
            .ok_or_else(|| Error::invalid(format!("no optimizer called {name} in this run")))
    }

    /// Sets each scheduled optimizer's learning rate for the step about to run.
    pub fn apply_schedules(&mut self) {
        for named in &mut self.optimizers {
            if let Some(schedule) = &named.schedule {
                named.optimizer.set_lr(schedule.lr(self.step));
            }
        }
    }

    /// Returns each optimizer's current learning rate by name.
    pub fn learning_rates(&self) -> BTreeMap<String, f64> {
        self.optimizers
            .iter()
            .map(|o| (o.name.clone(), o.optimizer.lr()))
            .collect()
    }
}

/// Lists the variables of `varmap` by name, sorted, for [`TrainState::new`].
pub fn named_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap
        .data()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

fn reject_duplicates<'a>(what: &str, names: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut seen = HashSet::new();
    for name in names {
        if !seen.insert(name) {
            return Err(Error::invalid(format!(
                "{what} name {name} appears twice; names must be unique"
            )));
        }
    }
    Ok(())
}
