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

/// Returns the folder of one small encoder (embed_dim 3, window 3) saved by PyTorch in each accepted layout.
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

    // The output gets the permissions of any new file (0666 narrowed by the umask).
    use std::os::unix::fs::PermissionsExt;
    let plain = tmp.path().join("plain");
    std::fs::File::create(&plain).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), mode(&plain));
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
    assert!(err.contains("[5]"), "{err}");
    assert!(err.contains("[3]"), "{err}");
}

#[test]
fn non_checkpoint_file_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notes.pt");
    std::fs::write(&path, b"these are not weights").unwrap();
    let err = weights::load_encoder(&path, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("notes.pt"), "{err}");
}

#[test]
fn window_spanning_input_equals_whole_volume() {
    use prism::embed::{embed_tensor, EmbedOptions, Pooling};
    let dir = reference_dir();
    let encoder = weights::load_encoder(&dir.join("encoder.safetensors"), &Device::Cpu).unwrap();
    let outputs = candle_core::safetensors::load(dir.join("outputs.safetensors"), &Device::Cpu).unwrap();
    let input = &outputs["case0.input"]; // 64×64×96
    for pooling in [Pooling::LastStage, Pooling::MultiScale] {
        let whole = EmbedOptions { pooling, ..EmbedOptions::default() };
        let windowed = EmbedOptions { roi: Some([64, 64, 96]), ..whole.clone() };
        let a = embed_tensor(&encoder, input, &whole).unwrap();
        let b = embed_tensor(&encoder, input, &windowed).unwrap();
        assert_eq!(a, b, "{pooling:?}");
    }
    let reference = outputs["case0.embedding"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let whole = embed_tensor(&encoder, input, &EmbedOptions::default()).unwrap();
    let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (got, want) in whole.iter().zip(&reference) {
        assert!((got - want).abs() <= 1e-4 * scale, "{got} vs {want}");
    }
}

#[test]
fn overlapping_windows_average_aligned_features() {
    use prism::embed::{embed_tensor, EmbedOptions};
    let dir = reference_dir();
    let encoder = weights::load_encoder(&dir.join("encoder.safetensors"), &Device::Cpu).unwrap();
    let outputs = candle_core::safetensors::load(dir.join("outputs.safetensors"), &Device::Cpu).unwrap();
    let input = &outputs["case0.input"];
    // 64-voxel windows with half overlap: starts 0 and 32 along k (96 voxels).
    let opts = EmbedOptions { roi: Some([64, 64, 64]), overlap: 0.5, ..EmbedOptions::default() };
    let got = embed_tensor(&encoder, input, &opts).unwrap();

    // The same by hand: the two windows' last-stage maps (2×2×2 cells each) placed at
    // k-cells 0..2 and 1..3, averaged where they overlap, then the spatial mean.
    let first = encoder.forward(&input.narrow(4, 0, 64).unwrap().contiguous().unwrap()).unwrap();
    let second = encoder.forward(&input.narrow(4, 32, 64).unwrap().contiguous().unwrap()).unwrap();
    let (a, b) = (&first[4], &second[4]);
    let cell = |t: &Tensor, k: usize| t.narrow(4, k, 1).unwrap();
    let k0 = cell(a, 0);
    let k1 = ((cell(a, 1) + cell(b, 0)).unwrap() / 2.0).unwrap();
    let k2 = cell(b, 1);
    let stitched = Tensor::cat(&[k0, k1, k2], 4).unwrap();
    let want = prism::model::swin::global_average(&stitched).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{g} vs {w}");
    }
}
