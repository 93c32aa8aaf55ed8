//! SwinUNETR (v2) against MONAI 1.4.0's logits for the same weights and inputs.
//!
//! The reference network has feature size 12, four classes and every parameter moved off its
//! initial value, so a block that is skipped or mis-wired changes the logits. Its inputs are two
//! z-scored 64³ crops of the Colin27 T1 scan. The 26 MB state dict lives in the shared
//! reference data beside the repository; without it the test prints a note and passes.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use prism::weights;

fn reference_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/swinunetr_f12");
    if dir.join("swinunetr_state_dict.pt").exists() {
        Some(dir)
    } else {
        eprintln!("skipped: {} is absent", dir.display());
        None
    }
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

#[test]
fn swin_unetr_matches_monai_logits_on_both_crops() {
    let Some(dir) = reference_dir() else { return };
    let net = weights::load_swin_unetr(&dir.join("swinunetr_state_dict.pt"), &Device::Cpu).unwrap();
    assert_eq!(net.config().out_channels, 4);
    assert_eq!(net.config().encoder.embed_dim, 12);

    let outputs = candle_core::safetensors::load(dir.join("outputs.safetensors"), &Device::Cpu).unwrap();
    for case in ["case0", "case1"] {
        let logits = net.forward(&outputs[&format!("{case}.input")]).unwrap();
        let want = &outputs[&format!("{case}.logits")];
        assert_eq!(logits.dims(), want.dims(), "{case} shape");
        let diff = max_abs(&(logits - want).unwrap());
        let scale = max_abs(want);
        assert!(diff <= 1e-4 * scale, "{case}: max |diff| {diff} > 1e-4 x {scale}");
    }
}

#[test]
fn swin_unetr_config_is_inferred_from_state_dict() {
    let Some(dir) = reference_dir() else { return };
    let ckpt = weights::Checkpoint::read(&dir.join("swinunetr_state_dict.pt")).unwrap();
    assert!(ckpt.has_segmentation_head());
    let cfg = weights::infer_swin_unetr_config(&ckpt.unwrapped(), &dir).unwrap();
    assert_eq!(cfg.encoder.depths, vec![2, 2, 2, 2]);
    assert_eq!(cfg.encoder.num_heads, vec![3, 6, 12, 24]);
    assert_eq!(cfg.encoder.window_size, 7);
    assert_eq!(cfg.encoder.in_chans, 1);
    assert!(cfg.encoder.use_v2);
}

#[test]
fn swin_unetr_rejects_input_not_multiple_of_32() {
    let Some(dir) = reference_dir() else { return };
    let net = weights::load_swin_unetr(&dir.join("swinunetr_state_dict.pt"), &Device::Cpu).unwrap();
    let x = Tensor::zeros((1, 1, 32, 32, 48), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = net.forward(&x).unwrap_err().to_string();
    assert!(err.contains("multiple of 32"), "{err}");
}

#[test]
fn encoder_only_checkpoint_is_not_a_swin_unetr() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/encoder_w6/encoder.safetensors");
    let err = weights::load_swin_unetr(&path, &Device::Cpu).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("out.conv.conv.weight"), "{err}");
}
