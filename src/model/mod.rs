//! The networks, one file per architecture, with modules named after the
//! checkpoint tensors they load.

pub mod swin;

pub use swin::{SwinConfig, SwinEncoder};
