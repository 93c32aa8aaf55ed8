//! Self-supervised pretraining of PRISM: the training data pipeline ([`data`]) and the
//! synthetic multi-contrast generator it draws from ([`synth`]).

pub mod data;
pub mod synth;
