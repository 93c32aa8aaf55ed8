//! Parts of PRISM's self-supervised pretraining.

pub mod synth;
