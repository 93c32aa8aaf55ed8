//! Segmentation with PRISM's SwinUNETR: sliding-window inference, prediction on whole scans
//! mapped back to their own grid, training data and losses, and evaluation metrics.

pub mod predict;
pub mod sliding;
pub mod qc;
