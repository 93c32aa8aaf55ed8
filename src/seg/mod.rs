//! Segmentation with PRISM's SwinUNETR: inference on whole scans, the data and loss for
//! fine-tuning, evaluation metrics, and quality-control pictures.
//!
//! - [`sliding`]: MONAI-style sliding-window inference with Gaussian blending, streamed slab
//!   by slab so memory stays bounded.
//! - [`predict`]: one scan in, its label map (and class probabilities) on its own grid out.
//! - [`qc`]: orthogonal slices with the labels overlaid, as PNG.
//! - [`dataset`]: case lists from a CSV or an nnU-Net v2 raw dataset, loading onto a
//!   common RAS+ grid, and the train/validation split.
//! - [`augment`]: random patches (foreground-forced, flipped, rotated and scaled,
//!   intensity-jittered) and their assembly into candle batches.
//! - [`loss`]: MONAI's DiceCE loss, differentiable in candle.
//! - [`metrics`]: Dice, HD95 and volume differences between label maps.
//! - [`train`]: the trainable network, one DiceCE step, validation Dice and the export.

pub mod augment;
pub mod dataset;
pub mod loss;
pub mod metrics;
pub mod predict;
pub mod qc;
pub mod sliding;
pub mod train;
