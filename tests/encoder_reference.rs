//! The PRISM encoder against MONAI 1.4.0's outputs for the same weights and inputs.
//!
//! The reference encoder has embed_dim 6 and every parameter moved off its initial
//! value, so a tensor that is skipped or mis-wired changes the result. Its inputs are
//! two z-scored crops of the Colin27 T1 scan, one with odd sizes (45×53×61).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use prism::weights;

fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/encoder_w6")
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

fn check_case(encoder: &prism::model::SwinEncoder, outputs: &std::collections::HashMap<String, Tensor>, case: &str) {
    let input = &outputs[&format!("{case}.input")];
    let stages = encoder.forward(input).unwrap();
    assert_eq!(stages.len(), 5);
    for (s, got) in stages.iter().enumerate() {
        let want = &outputs[&format!("{case}.stage{s}")];
        assert_eq!(got.dims(), want.dims(), "{case} stage {s} shape");
        let diff = max_abs(&(got - want).unwrap());
        let scale = max_abs(want);
        assert!(diff <= 1e-4 * scale, "{case} stage {s}: max |diff| {diff} > 1e-4 x {scale}");
    }
    let emb = prism::model::swin::global_average(&stages[4]).unwrap();
    let want = &outputs[&format!("{case}.embedding")];
    let diff = max_abs(&(emb - want).unwrap());
    assert!(diff <= 1e-4 * max_abs(want), "{case} embedding: max |diff| {diff}");
}

#[test]
fn encoder_matches_monai_on_both_crops() {
    let dir = reference_dir();
    let encoder = weights::load_encoder(&dir.join("encoder.safetensors"), &Device::Cpu).unwrap();
    let outputs = candle_core::safetensors::load(dir.join("outputs.safetensors"), &Device::Cpu).unwrap();
    check_case(&encoder, &outputs, "case0");
    check_case(&encoder, &outputs, "case1");
}

#[test]
fn pretraining_checkpoint_gives_same_encoder() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/encoder_w6/encoder_checkpoint.pt");
    if !shared.exists() {
        eprintln!("skipped: {} is absent", shared.display());
        return;
    }
    let encoder = weights::load_encoder(&shared, &Device::Cpu).unwrap();
    let outputs = candle_core::safetensors::load(reference_dir().join("outputs.safetensors"), &Device::Cpu).unwrap();
    check_case(&encoder, &outputs, "case1");
}
