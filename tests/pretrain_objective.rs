//! Checks the pretraining loss terms against MONAI 1.4.0 and torch (values and input gradients
//! in tests/data/pretrain/loss_reference.json, made by make_loss_reference.py beside it) and
//! against cases with an analytic result.

use candle_core::{DType, Device, Tensor, Var};
use prism::pretrain::objective::{cross_entropy, fake_loss, nt_xent, real_loss, sequence_loss, softplus};
use serde_json::Value;

fn reference() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pretrain/loss_reference.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn matrix(value: &Value) -> Tensor {
    let rows: Vec<Vec<f64>> = serde_json::from_value(value.clone()).unwrap();
    let (r, c) = (rows.len(), rows[0].len());
    Tensor::from_vec(rows.concat(), (r, c), &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap()
}

#[test]
fn nt_xent_matches_monai_contrastive_loss_and_gradients() {
    let cases = reference();
    let mut checked = 0;
    for (name, case) in cases.as_object().unwrap() {
        if !name.starts_with("nt_xent") {
            continue;
        }
        let a = Var::from_tensor(&matrix(&case["a"])).unwrap();
        let b = Var::from_tensor(&matrix(&case["b"])).unwrap();
        let temperature = case["temperature"].as_f64().unwrap();
        let loss = nt_xent(a.as_tensor(), b.as_tensor(), temperature).unwrap();
        let value = loss.to_scalar::<f64>().unwrap();
        let expected = case["loss"].as_f64().unwrap();
        // MONAI keeps the temperature in an f32 tensor (0.1 becomes 0.10000000149), hence 1e-7.
        assert!((value - expected).abs() < 1e-7 * expected.abs(), "{name}: {value} vs MONAI {expected}");

        let grads = loss.backward().unwrap();
        let grad_a = grads.get(a.as_tensor()).unwrap();
        let grad_b = grads.get(b.as_tensor()).unwrap();
        assert!(max_abs_diff(grad_a, &matrix(&case["grad_a"])) < 1e-7, "{name}: gradient of a");
        assert!(max_abs_diff(grad_b, &matrix(&case["grad_b"])) < 1e-7, "{name}: gradient of b");
        checked += 1;
    }
    assert_eq!(checked, 3);
}

#[test]
fn nt_xent_is_lower_for_matching_pairs() {
    let a = Tensor::new(&[[1f32, 0.0, 0.0], [0.0, 1.0, 0.0]], &Device::Cpu).unwrap();
    let swapped = Tensor::new(&[[0f32, 1.0, 0.0], [1.0, 0.0, 0.0]], &Device::Cpu).unwrap();
    let matched: f32 = nt_xent(&a, &a, 0.5).unwrap().to_scalar().unwrap();
    let mismatched: f32 = nt_xent(&a, &swapped, 0.5).unwrap().to_scalar().unwrap();
    assert!(matched < mismatched, "{matched} vs {mismatched}");
}

#[test]
fn softplus_matches_torch_without_overflow() {
    let case = &reference()["softplus"];
    let x: Vec<f64> = serde_json::from_value(case["x"].clone()).unwrap();
    let expected: Vec<f64> = serde_json::from_value(case["y"].clone()).unwrap();
    let y = softplus(&Tensor::new(x.as_slice(), &Device::Cpu).unwrap()).unwrap().to_vec1::<f64>().unwrap();
    for (got, want) in y.iter().zip(&expected) {
        assert!((got - want).abs() < 1e-12 * want.abs().max(1.0), "{got} vs torch {want}");
    }
}

#[test]
fn adversarial_losses_are_softplus_means() {
    let logits = Tensor::new(&[[2.0f64], [-1.0]], &Device::Cpu).unwrap();
    let real: f64 = real_loss(&logits).unwrap().to_scalar().unwrap();
    let fake: f64 = fake_loss(&logits).unwrap().to_scalar().unwrap();
    let sp = |x: f64| (1.0 + x.exp()).ln();
    assert!((real - (sp(-2.0) + sp(1.0)) / 2.0).abs() < 1e-12);
    assert!((fake - (sp(2.0) + sp(-1.0)) / 2.0).abs() < 1e-12);
}

#[test]
fn cross_entropy_matches_torch() {
    let case = &reference()["cross_entropy"];
    let logits = matrix(&case["logits"]);
    let classes: Vec<u32> = serde_json::from_value(case["classes"].clone()).unwrap();
    let classes = Tensor::new(classes.as_slice(), &Device::Cpu).unwrap();
    let loss: f64 = cross_entropy(&logits, &classes).unwrap().to_scalar().unwrap();
    assert!((loss - case["loss"].as_f64().unwrap()).abs() < 1e-12);
}

#[test]
fn sequence_loss_ignores_missing_values() {
    let pred = Tensor::new(&[[2.0f32, 0.3, 1.0], [5.0, 5.0, 5.0]], &Device::Cpu).unwrap();
    // Sample 0: TR 1500 ms (pred 2 s → error 0.5), TE missing, FA 45° (pred 1 → error 0.5).
    // Sample 1: everything missing, so its wild predictions add nothing.
    let target = Tensor::new(&[[1500f32, 0.0, 45.0], [0.0, 0.0, 0.0]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1f32, 0.0, 1.0], [0.0, 0.0, 0.0]], &Device::Cpu).unwrap();
    let loss: f32 = sequence_loss(&pred, &target, &mask, [1000.0, 100.0, 90.0]).unwrap().to_scalar().unwrap();
    // Batch mean over both samples: (0.5 + 0.5) / 2.
    assert!((loss - 0.5).abs() < 1e-6, "{loss}");

    let pred = Var::from_tensor(&pred).unwrap();
    let loss = sequence_loss(pred.as_tensor(), &target, &mask, [1000.0, 100.0, 90.0]).unwrap();
    let grad = loss.backward().unwrap().get(pred.as_tensor()).unwrap().to_dtype(DType::F32).unwrap();
    let grad = grad.to_vec2::<f32>().unwrap();
    assert_eq!(grad[1], vec![0.0, 0.0, 0.0]);
    assert_eq!(grad[0][1], 0.0);
    assert!(grad[0][0] > 0.0);
    assert!(grad[0][2] > 0.0);
}
