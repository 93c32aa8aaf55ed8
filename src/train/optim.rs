//! AdamW as torch.optim.AdamW (torch 2.x, amsgrad off, the single-tensor CPU path), over named
//! candle `Var`s, with a weight-decay flag per parameter and state that exports and imports by
//! parameter name. Also gradient clipping by global norm as torch.nn.utils.clip_grad_norm_.
//!
//! One step for a parameter p with gradient g, at that parameter's step count t (1-based):
//!
//! ```text
//! p ← p · (1 − lr·wd)                         (only for parameters with weight decay)
//! m ← m + (1 − β1)(g − m)                     (torch's lerp_)
//! v ← v·β2 + ((1 − β2)·g)·g                   (torch's mul_ then addcmul_)
//! p ← p + (−lr / (1 − β1ᵗ))·m / (√v / √(1 − β2ᵗ) + ε)
//! ```
//!
//! The scalar factors are computed in f64 and the tensor operations run in the parameter's dtype
//! in the same order as torch, so f32 results agree with torch to rounding. A parameter without a
//! gradient in the `GradStore` is skipped and its step count does not advance, as torch skips
//! parameters whose `.grad` is None.

use std::collections::{BTreeMap, HashSet};

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Hyper-parameters of [`AdamW`], with torch's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay, applied to parameters whose [`Param::weight_decay`] is set.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

/// One named parameter and whether weight decay applies to it.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
    pub weight_decay: bool,
}

impl Param {
    /// Wraps `var` with the usual grouping: weight decay for tensors of rank 2 and above
    /// (convolution and linear weights), none for biases and norm scales (rank 0 and 1).
    pub fn new(name: impl Into<String>, var: Var) -> Param {
        let weight_decay = var.rank() >= 2;
        Param::with_weight_decay(name, var, weight_decay)
    }

    pub fn with_weight_decay(name: impl Into<String>, var: Var, weight_decay: bool) -> Param {
        Param {
            name: name.into(),
            var,
            weight_decay,
        }
    }
}

/// Optimizer state of one parameter, as torch keeps it in `optimizer.state[p]`.
#[derive(Debug, Clone)]
pub struct ParamState {
    /// Number of steps that updated this parameter.
    pub step: u64,
    /// First moment (torch's `exp_avg`).
    pub exp_avg: Tensor,
    /// Second moment (torch's `exp_avg_sq`).
    pub exp_avg_sq: Tensor,
}

/// The full state of an [`AdamW`] by parameter name, for checkpoints.
#[derive(Debug, Clone)]
pub struct AdamWState {
    /// The learning rate in effect when the state was exported.
    pub lr: f64,
    pub params: BTreeMap<String, ParamState>,
}

/// AdamW over a fixed, named set of parameters; see the module documentation.
pub struct AdamW {
    config: AdamWConfig,
    params: Vec<Param>,
    states: Vec<ParamState>,
}

impl AdamW {
    /// Creates the optimizer with zero moments. Parameter names must be unique and the
    /// parameters floating point.
    pub fn new(params: Vec<Param>, config: AdamWConfig) -> Result<AdamW> {
        let mut seen = HashSet::new();
        for param in &params {
            if !seen.insert(param.name.as_str()) {
                return Err(Error::invalid(format!(
                    "AdamW: parameter name {} appears twice; give each parameter its own name",
                    param.name
                )));
            }
            if !param.var.dtype().is_float() {
                return Err(Error::invalid(format!(
                    "AdamW: parameter {} is {:?}, expected a floating-point dtype",
                    param.name,
                    param.var.dtype()
                )));
            }
        }

        let states = params
            .iter()
            .map(|param| zero_state(&param.var))
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            config,
            params,
            states,
        })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    pub fn lr(&self) -> f64 {
        self.config.lr
    }

    /// Sets the learning rate for the following steps (a scheduler's job).
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Updates every parameter that has a gradient in `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        for (param, state) in self.params.iter().zip(self.states.iter_mut()) {
            let Some(grad) = grads.get(param.var.as_tensor()) else {
                continue;
            };
            let grad = grad.to_dtype(param.var.dtype())?;
            update_param(&self.config, param, state, &grad)?;
        }
        Ok(())
    }

    /// Copies the state out, keyed by parameter name.
    pub fn export_state(&self) -> AdamWState {
        let params = self
            .params
            .iter()
            .zip(&self.states)
            .map(|(param, state)| (param.name.clone(), state.clone()))
            .collect();
        AdamWState {
            lr: self.config.lr,
            params,
        }
    }

    /// Replaces the state with `state`, which must name exactly this optimizer's parameters
    /// with moments of their shapes. Otherwise nothing changes, and the error lists every
    /// mismatch.
    pub fn import_state(&mut self, state: &AdamWState) -> Result<()> {
        let problems = self.state_mismatches(state);
        if !problems.is_empty() {
            return Err(Error::invalid(format!(
                "AdamW state does not match the optimizer: {}",
                problems.join("; ")
            )));
        }

        let mut imported = Vec::with_capacity(self.params.len());
        for param in &self.params {
            let saved = &state.params[&param.name];
            let device = param.var.device();
            let dtype = param.var.dtype();
            imported.push(ParamState {
                step: saved.step,
                exp_avg: saved.exp_avg.to_device(device)?.to_dtype(dtype)?,
                exp_avg_sq: saved.exp_avg_sq.to_device(device)?.to_dtype(dtype)?,
            });
        }
        self.states = imported;
        self.config.lr = state.lr;
        Ok(())
    }

    fn state_mismatches(&self, state: &AdamWState) -> Vec<String> {
        let mut problems = Vec::new();
        for param in &self.params {
            let Some(saved) = state.params.get(&param.name) else {
                problems.push(format!("missing {}", param.name));
                continue;
            };
            let dims = param.var.dims();
            for (moment, tensor) in [
                ("exp_avg", &saved.exp_avg),
                ("exp_avg_sq", &saved.exp_avg_sq),
            ] {
                if tensor.dims() != dims {
                    problems.push(format!(
                        "{}.{moment} has shape {:?}, expected {:?}",
                        param.name,
                        tensor.dims(),
                        dims
                    ));
                }
            }
        }
        let names: HashSet<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
        for name in state.params.keys() {
            if !names.contains(name.as_str()) {
                problems.push(format!("unexpected {name}"));
            }
        }
        problems
    }
}

fn zero_state(var: &Var) -> Result<ParamState> {
    let zeros = var.zeros_like()?;
    Ok(ParamState {
        step: 0,
        exp_avg: zeros.clone(),
        exp_avg_sq: zeros,
    })
}

fn update_param(
    config: &AdamWConfig,
    param: &Param,
    state: &mut ParamState,
    grad: &Tensor,
) -> Result<()> {
    let AdamWConfig {
        lr,
        beta1,
        beta2,
        eps,
        weight_decay,
    } = *config;
    state.step += 1;

    let mut value = param.var.as_tensor().detach();
    if param.weight_decay && weight_decay != 0.0 {
        value = value.affine(1.0 - lr * weight_decay, 0.0)?;
    }

    // torch's lerp_ with a weight below 0.5 computes self + weight·(end − self).
    let exp_avg = (&state.exp_avg + (grad - &state.exp_avg)?.affine(1.0 - beta1, 0.0)?)?;
    let exp_avg_sq =
        (state.exp_avg_sq.affine(beta2, 0.0)? + (grad.affine(1.0 - beta2, 0.0)? * grad)?)?;

    // Python evaluates these with float ** float, that is C pow().
    let step = state.step as f64;
    let step_size = lr / (1.0 - beta1.powf(step));
    let bias_correction2_sqrt = (1.0 - beta2.powf(step)).powf(0.5);

    let divisor = Tensor::new(bias_correction2_sqrt, grad.device())?.to_dtype(grad.dtype())?;
    let denom = exp_avg_sq
        .sqrt()?
        .broadcast_div(&divisor)?
        .affine(1.0, eps)?;
    let updated = (value + (exp_avg.affine(-step_size, 0.0)? / denom)?)?;

    param.var.set(&updated)?;
    state.exp_avg = exp_avg;
    state.exp_avg_sq = exp_avg_sq;
    Ok(())
}

/// Scales the gradients of `vars` in `grads` so that their global L2 norm is at most
/// `max_norm`, as torch.nn.utils.clip_grad_norm_: each gradient is multiplied by
/// min(1, max_norm / (norm + 1e-6)). Returns the norm before clipping. Vars without a
/// gradient are left out, and a non-finite norm is returned without clipping.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[&Var], max_norm: f64) -> Result<f64> {
    let mut sum_of_squares = 0.0f64;
    for var in vars {
        if let Some(grad) = grads.get(var.as_tensor()) {
            // The norm of each gradient in its own dtype, then their norm, as torch stacks them.
            let norm = grad.sqr()?.sum_all()?.sqrt()?.to_dtype(DType::F64)?;
            sum_of_squares += norm.to_scalar::<f64>()?.powi(2);
        }
    }
    let total_norm = sum_of_squares.sqrt();
    if !total_norm.is_finite() {
        return Ok(total_norm);
    }

    let coefficient = (max_norm / (total_norm + 1e-6)).min(1.0);
    for var in vars {
        if let Some(grad) = grads.get(var.as_tensor()) {
            let clipped = grad.affine(coefficient, 0.0)?;
            grads.insert(var.as_tensor(), clipped);
        }
    }
    Ok(total_norm)
}
