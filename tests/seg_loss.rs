//! Checks prism::seg::loss against MONAI 1.4.0's DiceCELoss and torch autograd: value, terms
//! and d(loss)/d(logits) stored in tests/data/seg_loss/dice_ce_reference.safetensors by
//! make_reference.py beside it, for logits and targets from two crops of a real T1 scan and
//! tissue map.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use prism::seg::loss::{dice_ce_loss, dice_ce_loss_with, DiceCeOptions};

/// Allowed |actual − expected| relative to |expected| (a scalar) or to max |expected| (a
/// gradient), for candle in f32 and f64 against torch in f64.
const F32_TOLERANCE: f64 = 1e-5;
const F64_TOLERANCE: f64 = 1e-10;

fn reference() -> HashMap<String, Tensor> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/seg_loss/dice_ce_reference.safetensors"
    );
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{path}: {e}; regenerate it with make_reference.py"))
}

fn scalar(tensors: &HashMap<String, Tensor>, name: &str) -> f64 {
    tensors[name]
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()[0]
}

fn relative_error(actual: f64, expected: f64) -> f64 {
    (actual - expected).abs() / expected.abs()
}

/// Max |actual − expected| over max |expected|.
fn max_relative_error(actual: &Tensor, expected: &Tensor) -> f64 {
    let actual = actual.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let expected = expected
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap();
    let difference = (actual - &expected).unwrap().abs().unwrap().max(0).unwrap();
    let scale = expected.abs().unwrap().max(0).unwrap();
    difference.to_scalar::<f64>().unwrap() / scale.to_scalar::<f64>().unwrap()
}

/// Loss value and d(loss)/d(logits) computed by candle in `dtype`.
fn loss_and_gradient(tensors: &HashMap<String, Tensor>, dtype: DType) -> (f64, Tensor) {
    let logits = Var::from_tensor(&tensors["logits"].to_dtype(dtype).unwrap()).unwrap();
    let loss = dice_ce_loss(logits.as_tensor(), &tensors["targets"]).unwrap();
    let gradients = loss.backward().unwrap();
    let gradient = gradients.get(logits.as_tensor()).unwrap().clone();
    (
        loss.to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap(),
        gradient,
    )
}

#[test]
fn dice_ce_value_matches_monai_f64() {
    let tensors = reference();
    let (loss, _) = loss_and_gradient(&tensors, DType::F64);
    assert!(relative_error(loss, scalar(&tensors, "loss")) < F64_TOLERANCE);
}

#[test]
fn dice_ce_gradient_matches_torch_f64() {
    let tensors = reference();
    let (_, gradient) = loss_and_gradient(&tensors, DType::F64);
    assert_eq!(gradient.dims(), tensors["grad"].dims());
    assert!(max_relative_error(&gradient, &tensors["grad"]) < F64_TOLERANCE);
}

#[test]
fn dice_ce_value_matches_monai_f32() {
    let tensors = reference();
    let (loss, _) = loss_and_gradient(&tensors, DType::F32);
    assert!(relative_error(loss, scalar(&tensors, "loss")) < F32_TOLERANCE);
}

#[test]
fn dice_ce_gradient_matches_torch_f32() {
    let tensors = reference();
    let (_, gradient) = loss_and_gradient(&tensors, DType::F32);
    let error = max_relative_error(&gradient, &tensors["grad"]);
    assert!(error < F32_TOLERANCE, "relative gradient error {error:e}");
}

#[test]
fn dice_ce_terms_match_monai() {
    let tensors = reference();
    let logits = tensors["logits"].to_dtype(DType::F64).unwrap();
    let terms = dice_ce_loss_with(&logits, &tensors["targets"], &DiceCeOptions::default()).unwrap();
    let dice = terms.dice.to_scalar::<f64>().unwrap();
    let cross_entropy = terms.cross_entropy.to_scalar::<f64>().unwrap();
    assert!(relative_error(dice, scalar(&tensors, "dice")) < F64_TOLERANCE);
    assert!(relative_error(cross_entropy, scalar(&tensors, "cross_entropy")) < F64_TOLERANCE);
}

#[test]
fn dice_ce_accepts_u32_and_channel_targets() {
    let tensors = reference();
    let logits = tensors["logits"].to_dtype(DType::F64).unwrap();
    let targets = &tensors["targets"];
    let expected = scalar(&tensors, "loss");

    let as_u32 = dice_ce_loss(&logits, &targets.to_dtype(DType::U32).unwrap()).unwrap();
    assert!(relative_error(as_u32.to_scalar::<f64>().unwrap(), expected) < F64_TOLERANCE);

    let with_channel = dice_ce_loss(&logits, &targets.unsqueeze(1).unwrap()).unwrap();
    assert!(relative_error(with_channel.to_scalar::<f64>().unwrap(), expected) < F64_TOLERANCE);
}

#[test]
fn dice_ce_of_perfect_prediction_is_small() {
    // Logits of ±20 give softmax probabilities within 1e-17 of the one-hot targets, so
    // Dice and cross-entropy are both near 0, except for class 3, which is absent and not
    // predicted: 1 − 1e-5 / (Σp + 1e-5) is near 0 because Σp ≈ 4e-18 · voxels.
    let tensors = reference();
    let targets = &tensors["targets"];
    let classes = Tensor::arange(0i64, 4, &Device::Cpu)
        .unwrap()
        .reshape((1, 4, 1, 1, 1))
        .unwrap();
    let one_hot = targets
        .unsqueeze(1)
        .unwrap()
        .broadcast_eq(&classes)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let logits = one_hot.affine(40.0, -20.0).unwrap();
    let terms = dice_ce_loss_with(&logits, targets, &DiceCeOptions::default()).unwrap();
    assert!(terms.dice.to_scalar::<f64>().unwrap() < 1e-6);
    assert!(terms.cross_entropy.to_scalar::<f64>().unwrap() < 1e-6);
}

#[test]
fn dice_ce_rejects_out_of_range_target() {
    let tensors = reference();
    let logits = tensors["logits"].narrow(1, 0, 2).unwrap();
    let error = dice_ce_loss(&logits, &tensors["targets"]).unwrap_err();
    assert!(
        error.to_string().contains("outside the 2 classes"),
        "{error}"
    );
}

#[test]
fn dice_ce_rejects_mismatched_shapes() {
    let tensors = reference();
    let targets = tensors["targets"].narrow(3, 0, 5).unwrap();
    assert!(dice_ce_loss(&tensors["logits"], &targets).is_err());
}
