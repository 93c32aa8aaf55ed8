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

/// One small encoder (embed_dim 3, window 3) saved by PyTorch in each accepted layout.
fn layouts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/layouts")
}

fn assert_matches_layout_outputs(file: &str) {
    let dir = layouts_dir();
    let encoder = weights::load_encoder(&dir.join(file), &Device::Cpu).unwrap();
    let cfg = encoder.config();
    assert_eq!(cfg.embed_dim, 3, "{file}: embed_dim");
    assert_eq!(cfg.window_size, 3, "{file}: window");
    assert_eq!(cfg.depths, vec![2, 2, 2, 2], "{file}: depths");
    assert_eq!(cfg.num_heads, vec![3, 3, 3, 3], "{file}: heads");
    assert!(cfg.use_v2, "{file}: v2 blocks");

    let outputs = candle_core::safetensors::load(dir.join("outputs.safetensors"), &Device::Cpu).unwrap();
    let stages = encoder.forward(&outputs["input"]).unwrap();
    for (s, got) in stages.iter().enumerate() {
        let want = &outputs[&format!("stage{s}")];
        let diff = max_abs(&(got - want).unwrap());
        assert!(diff <= 1e-4 * max_abs(want), "{file} stage {s}: max |diff| {diff}");
    }
}

#[test]
fn loads_prism_pretraining_checkpoint() {
    assert_matches_layout_outputs("prism_checkpoint.pt");
}

#[test]
fn loads_dataparallel_state_dict() {
    assert_matches_layout_outputs("dataparallel_state_dict.pt");
}

#[test]
fn loads_bare_state_dict() {
    assert_matches_layout_outputs("bare_state_dict.pt");
}

#[test]
fn loads_safetensors() {
    assert_matches_layout_outputs("encoder.safetensors");
}

#[test]
fn converted_safetensors_gives_same_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("converted.safetensors");
    let cfg = weights::convert_to_safetensors(&layouts_dir().join("prism_checkpoint.pt"), &out).unwrap();
    assert_eq!(cfg.embed_dim, 3);
    let converted = weights::load_encoder(&out, &Device::Cpu).unwrap();
    let outputs = candle_core::safetensors::load(layouts_dir().join("outputs.safetensors"), &Device::Cpu).unwrap();
    let got = converted.forward(&outputs["input"]).unwrap();
    let diff = max_abs(&(&got[4] - &outputs["stage4"]).unwrap());
    assert!(diff <= 1e-4 * max_abs(&outputs["stage4"]), "converted stage 4: {diff}");
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "only the converted file remains");
}

#[test]
fn missing_tensor_is_named_in_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tensors = candle_core::safetensors::load(layouts_dir().join("encoder.safetensors"), &Device::Cpu).unwrap();
    tensors.remove("layers2.0.blocks.1.mlp.linear1.bias");
    let path = tmp.path().join("broken.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let err = weights::load_encoder(&path, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("layers2.0.blocks.1.mlp.linear1.bias"), "{err}");
    assert!(err.contains("broken.safetensors"), "{err}");
}

#[test]
fn misshaped_tensor_reports_both_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tensors = candle_core::safetensors::load(layouts_dir().join("encoder.safetensors"), &Device::Cpu).unwrap();
    tensors.insert("layers1.0.blocks.0.norm2.weight".into(), Tensor::zeros(5, candle_core::DType::F32, &Device::Cpu).unwrap());
    let path = tmp.path().join("misshaped.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let err = weights::load_encoder(&path, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("layers1.0.blocks.0.norm2.weight"), "{err}");
    assert!(err.contains("[5]") && err.contains("[3]"), "{err}");
}

#[test]
fn non_checkpoint_file_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notes.pt");
    std::fs::write(&path, b"these are not weights").unwrap();
    let err = weights::load_encoder(&path, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("notes.pt"), "{err}");
}
