//! Training infrastructure shared by the training tools (fine-tuning and self-supervised
//! pretraining): the optimizer, learning-rate schedule, checkpointable random source,
//! checkpoints, stop signals, the per-step log and the loop that drives them.
//!
//! A tool builds a [`TrainState`] from its model's named `Var`s and one [`NamedOptimizer`] per
//! parameter set, then calls [`run`] with a closure that does one step (forward, `backward()`,
//! `AdamW::step` on each optimizer) and returns the named losses. The loop handles resuming,
//! logging, checkpoints and stopping; [`RunOutcome::exit`] gives the process exit code.

pub mod checkpoint;
pub mod init;
pub mod log;
pub mod optim;
pub mod progress;
pub mod rng;
pub mod run;
pub mod schedule;
pub mod signals;
pub mod state;

pub use checkpoint::{CheckpointKind, LoadedCheckpoint, PendingCheckpoint};
pub use log::{LogColumns, LogRow, TrainLog, LOG_FILE};
pub use optim::{clip_grad_norm, AdamW, AdamWConfig, AdamWState, Param, ParamState};
pub use progress::StepProgress;
pub use rng::{RngState, TrainRng};
pub use run::{run, BestMetric, Goal, Losses, Metrics, RunConfig, RunOutcome, StopReason};
pub use schedule::WarmupCosine;
pub use signals::StopSignal;
pub use state::{named_vars, BestRecord, NamedOptimizer, TrainState};
