//! Segmentation: label maps predicted with PRISM's SwinUNETR and their evaluation
//! against reference label maps.

pub mod metrics;
