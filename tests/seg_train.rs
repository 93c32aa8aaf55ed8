//! Starting points of SwinUNETR fine-tuning: a PRISM encoder checkpoint with a fresh decoder,
//! and which parameters each `--freeze` choice keeps fixed.

use std::path::Path;

use candle_core::{Device, Tensor};
use prism::model::SwinUnetrConfig;
use prism::seg::train::{build, frozen_copy, Freeze, Init};
use prism::weights::{infer_swin_config, load_encoder, Checkpoint};
use rand::SeedableRng;

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

#[test]
fn encoder_checkpoint_starts_swin_unetr_encoder() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/encoder_w6/encoder.safetensors");
    let checkpoint = Checkpoint::read(&path).unwrap();
    let encoder_tensors = checkpoint.encoder_tensors(&path).unwrap();
    let encoder = infer_swin_config(&encoder_tensors, &path).unwrap();
    let config = SwinUnetrConfig { encoder, out_channels: 3 };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let trainable = build(&config, Init::Checkpoint(&path), &Device::Cpu, &mut rng).unwrap();

    // Every encoder tensor comes from the checkpoint (relative-position indices are rebuilt).
    let stored = encoder_tensors.keys().filter(|k| !k.ends_with("relative_position_index")).count();
    assert_eq!(trainable.loaded, stored);

    // The network's encoder computes what the checkpoint's encoder computes.
    let reference = load_encoder(&path, &Device::Cpu).unwrap();
    let net = frozen_copy(&trainable, &Device::Cpu).unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, 1, 64, 64, 64), &Device::Cpu).unwrap();
    let got = net.encoder().forward(&x).unwrap();
    let want = reference.forward(&x).unwrap();
    for (s, (g, w)) in got.iter().zip(&want).enumerate() {
        let diff = max_abs(&(g - w).unwrap());
        assert_eq!(diff, 0.0, "stage {s}");
    }

    // The decoder starts fresh, not at zero: the logits vary over space.
    let logits = net.forward(&x).unwrap();
    assert_eq!(logits.dims(), &[1, 3, 64, 64, 64]);
    let spread = max_abs(&logits.broadcast_sub(&logits.mean_all().unwrap()).unwrap());
    assert!(spread > 0.0);
}

#[test]
fn freeze_selects_encoder_parts() {
    let decoder = "decoder5.transp_conv.conv.weight";
    let embed = "swinViT.patch_embed.proj.weight";
    let stage1 = "swinViT.layers1.0.blocks.0.attn.qkv.weight";
    let stage1_conv = "swinViT.layers1c.0.layer.conv1.conv.weight";
    let stage3 = "swinViT.layers3.0.blocks.1.mlp.linear1.weight";

    for name in [decoder, embed, stage1, stage3] {
        assert!(!Freeze::None.is_frozen(name), "none: {name}");
    }
    for name in [embed, stage1, stage1_conv, stage3] {
        assert!(Freeze::Encoder.is_frozen(name), "all: {name}");
    }
    assert!(!Freeze::Encoder.is_frozen(decoder));

    let two = Freeze::Stages(2);
    assert!(two.is_frozen(embed));
    assert!(two.is_frozen(stage1));
    assert!(two.is_frozen(stage1_conv));
    assert!(!two.is_frozen(stage3));
    assert!(!two.is_frozen(decoder));
}
