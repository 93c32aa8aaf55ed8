//! The pretraining data pipeline: the manifest of training images ([`manifest`]),
//! loading and preparing them once ([`dataset`]), cutting and augmenting crops
//! ([`sample`]), the inpainting corruption ([`corrupt`]) and the background loader
//! that makes reproducible batches ([`loader`]).
//!
//! Conventions: volumes are `Array3<f32>` indexed `[i, j, k]` on a RAS+ 1 mm grid; a
//! batch is `[batch, i, j, k]` in memory and `[batch, 1, D, H, W]` as a tensor, with
//! D, H, W = i, j, k.

pub mod corrupt;
pub mod dataset;
pub mod loader;
pub mod manifest;
pub mod sample;

pub use corrupt::{corrupt_batch, CorruptConfig, Cuboid, Fill, SampleCorruption};
pub use dataset::{Dataset, Prepared};
pub use loader::{
    make_batch, split_by_subject, validation_batches, Batch, BatchTensors, Holdout, Loader,
    LoaderConfig, Split,
};
pub use manifest::{
    read_manifest, scan_folder, write_manifest, BodyPart, ManifestEntry, SourceKind,
};
pub use sample::{AxisAugment, CropWindow};
