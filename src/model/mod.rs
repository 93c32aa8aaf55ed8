//! The networks, one file per architecture, with modules named after the
//! checkpoint tensors they load.

pub mod prism_pretrain;
pub mod swin;
pub mod swin_unetr;
pub mod unet_blocks;

pub use prism_pretrain::{PretrainConfig, PrismPretrain};
pub use swin::{SwinConfig, SwinEncoder};
pub use swin_unetr::{SwinUnetr, SwinUnetrConfig};
