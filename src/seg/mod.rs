//! Segmentation: training data for fine-tuning SwinUNETR from PRISM weights, the
//! patch augmentations that feed it, and its loss.
//!
//! - [`dataset`]: case lists from a CSV or an nnU-Net v2 raw dataset, loading onto a
//!   common RAS+ grid, and the train/validation split.
//! - [`augment`]: random patches (foreground-forced, flipped, rotated and scaled,
//!   intensity-jittered) and their assembly into candle batches.
//! - [`loss`]: MONAI's DiceCE loss, differentiable in candle.

pub mod augment;
pub mod dataset;
pub mod loss;
