//! Self-supervised pretraining as PRISM does it: the objective and its three optimizer steps,
//! the trainable network, and the data pipeline (manifest, crops, corruption, background
//! loading, synthetic sequences).

pub mod data;
pub mod objective;
pub mod synth;
pub mod train;
