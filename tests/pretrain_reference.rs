//! Checks the pretraining network against a PyTorch build of it on MONAI 1.4.0 (weights,
//! input and outputs in tests/data/pretrain/network_reference.safetensors, made by
//! make_network_reference.py beside it): reconstruction, synthesis under a style, every head.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use prism::model::prism_pretrain::{PretrainConfig, PrismPretrain};
use prism::model::SwinConfig;

/// Allowed max |ours − torch| relative to max |torch|.
const TOLERANCE: f32 = 1e-4;

struct Reference {
    net: PrismPretrain,
    tensors: HashMap<String, Tensor>,
}

fn reference() -> Reference {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pretrain/network_reference.safetensors");
    let all = candle_core::safetensors::load(path, &Device::Cpu).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut weights = HashMap::new();
    let mut tensors = HashMap::new();
    for (name, tensor) in all {
        let tensor = tensor.to_dtype(DType::F32).unwrap();
        match name.strip_prefix("weights.") {
            Some(bare) => weights.insert(bare.to_string(), tensor),
            None => tensors.insert(name, tensor),
        };
    }
    let encoder = SwinConfig {
        embed_dim: 6,
        depths: vec![1, 1, 1, 1],
        num_heads: vec![1, 2, 4, 8],
        ..SwinConfig::prism_base()
    };
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let net = PrismPretrain::load(&PretrainConfig::around(encoder), vb).unwrap();
    Reference { net, tensors }
}

impl Reference {
    fn get(&self, name: &str) -> &Tensor {
        self.tensors.get(name).unwrap_or_else(|| panic!("reference has no {name}"))
    }
}

fn assert_close(label: &str, ours: &Tensor, torch: &Tensor) {
    assert_eq!(ours.dims(), torch.dims(), "{label}: shape");
    let scale: f32 = torch.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    let diff: f32 = (ours - torch).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    assert!(diff <= TOLERANCE * scale, "{label}: max difference {diff}, max |torch| {scale}");
}

/// Keeps every second voxel along each spatial axis, as the reference stores full-size images.
fn every_second(x: &Tensor) -> Tensor {
    let mut y = x.clone();
    for axis in 2..5 {
        let n = y.dim(axis).unwrap();
        let even: Vec<u32> = (0..n as u32).step_by(2).collect();
        let even = Tensor::new(even.as_slice(), &Device::Cpu).unwrap();
        y = y.index_select(&even, axis).unwrap();
    }
    y
}

#[test]
fn reconstruction_and_heads_match_pytorch() {
    let r = reference();
    let encoded = r.net.encode(r.get("input"), None).unwrap();
    assert_close("latent", &encoded.latent, r.get("out.latent"));
    let heads = r.net.heads(&encoded).unwrap();
    assert_close("meta_head", &heads.sequence_parameters, r.get("out.meta"));
    assert_close("part_head", &heads.body_part_logits, r.get("out.part"));
    assert_close("str_contrastive_head", &heads.structure_projection, r.get("out.str_projection"));
    assert_close("disc_head", &r.net.discriminate(&encoded).unwrap(), r.get("out.disc"));
    let recon = r.net.decode(&encoded.latent, None).unwrap();
    assert_close("reconstruction", &every_second(&recon), r.get("out.recon"));
}

#[test]
fn synthesis_under_a_style_matches_pytorch() {
    let r = reference();
    let w = r.net.style(r.get("z")).unwrap();
    assert_close("style mapping", &w, r.get("style"));
    let encoded = r.net.encode(r.get("input"), Some(&w)).unwrap();
    assert_close("mixed latent", &encoded.latent, r.get("out.synthetic_latent"));
    assert_close("seq_contrastive_head", &r.net.heads(&encoded).unwrap().sequence_projection, r.get("out.seq_projection"));
    let synthetic = r.net.decode(&encoded.latent, Some(&w)).unwrap();
    assert_close("synthesized image", &every_second(&synthetic), r.get("out.synthetic"));
}
