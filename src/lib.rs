//! PRISM toolkit library: MRI I/O, preprocessing, the PRISM networks in candle,
//! and the plumbing shared by the `prism-*` command-line tools.
//!
//! Module map:
//! - [`geometry`], [`volume`]: voxel-to-world conventions and the in-memory image.
//! - [`io`]: reading and writing image files (NIfTI).
//! - [`preprocess`]: reorientation, resampling, intensity normalization, crop and pad.
//! - [`ops`]: differentiable 3-D tensor operations candle lacks (convolution, norms).
//! - [`model`]: the networks (PRISM's Swin encoder, its pretraining network, SwinUNETR).
//! - [`pretrain`]: PRISM's self-supervised pretraining (objective, data pipeline, synthetic contrasts).
//! - [`seg`]: segmentation (sliding-window inference, prediction on whole scans).
//! - [`train`]: optimizers, schedules, checkpoints and the loop shared by the training tools.
//! - [`weights`]: checkpoint loading and conversion.
//! - [`device`]: compute device selection.
//! - [`alloc`]: the memory allocator every binary uses.
//! - [`cli`]: inputs, sharding, resumable outputs, progress and exit codes for the tools.

pub mod error;
pub mod geometry;
pub mod volume;

pub use error::{Error, Result};
pub use geometry::Affine;
pub use volume::Volume;
pub mod alloc;
pub mod cli;
pub mod device;
pub mod embed;
pub mod io;
pub mod model;
pub mod ops;
pub mod preprocess;
pub mod pretrain;
pub mod seg;
pub mod train;
pub mod weights;
