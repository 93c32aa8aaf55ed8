//! Checks the operations that pretraining adds to prism::ops against torch 2.15 (outputs and
//! autograd gradients stored in tests/data/ops/pretrain_ops_reference.safetensors by
//! make_pretrain_ops_reference.py beside it), and the backward passes of the pretraining
//! network's operations against central finite differences in f64.
//!
//! Layer norm and instance norm go through the custom op StandardizeRows whenever a gradient is
//! needed, and tests/ops_grad.rs already checks that path in f64 against finite differences.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use prism::ops::{
    conv_transpose3d_strided, modulated_conv3d, upsample_portable, upsample_trilinear_x2,
    window_attention,
};

const UPSAMPLE_CASES: [&str; 3] = [
    "upsample_odd",
    "upsample_batch",
    "upsample_single_voxel_axes",
];

/// Case name, whether it has a style, whether it demodulates. All use padding 1.
const MODCONV_CASES: [(&str, bool, bool); 3] = [
    ("modconv_demodulated", true, true),
    ("modconv_modulated", true, false),
    ("modconv_without_style", false, false),
];

/// Allowed max |actual - expected| relative to max |expected|, per dtype.
const F32_TOLERANCE: f64 = 1e-4;
const F64_TOLERANCE: f64 = 1e-10;

struct Fixture(HashMap<String, Tensor>);

impl Fixture {
    fn load() -> Self {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/ops/pretrain_ops_reference.safetensors"
        );
        let tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap_or_else(|e| {
            panic!("{path}: {e}; regenerate it with make_pretrain_ops_reference.py")
        });
        Self(tensors)
    }

    fn get(&self, case: &str, name: &str, dtype: DType) -> Tensor {
        let key = format!("{case}.{name}");
        let tensor = self
            .0
            .get(&key)
            .unwrap_or_else(|| panic!("fixture has no tensor {key}"));
        tensor.to_dtype(dtype).unwrap()
    }
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// max |actual - expected| / max |expected|, after checking that the shapes agree.
fn relative_error(actual: &Tensor, expected: &Tensor) -> f64 {
    assert_eq!(
        actual.dims(),
        expected.dims(),
        "shape differs from the reference"
    );
    let (a, e) = (values(actual), values(expected));
    let scale = e
        .iter()
        .fold(0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    let diff = a
        .iter()
        .zip(&e)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => F64_TOLERANCE,
        _ => F32_TOLERANCE,
    }
}

fn assert_matches(label: &str, actual: &Tensor, expected: &Tensor, dtype: DType) {
    let error = relative_error(actual, expected);
    assert!(
        error <= tolerance(dtype),
        "{label} ({dtype:?}): relative error {error:e}"
    );
}

/// Runs `f` on the fixture inputs `names` of `case` as variables, in f32 and f64, and compares
/// the output and the gradients of sum(out * upstream) with torch's.
fn check_against_torch(case: &str, names: &[&str], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let fixture = Fixture::load();
    for dtype in [DType::F32, DType::F64] {
        let vars: Vec<Var> = names
            .iter()
            .map(|n| Var::from_tensor(&fixture.get(case, n, dtype)).unwrap())
            .collect();
        let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let out = f(&tensors).unwrap();
        assert_eq!(out.dtype(), dtype, "{case}: output dtype");
        let expected = fixture.get(case, "out", DType::F64);
        assert_matches(&format!("{case} output"), &out, &expected, dtype);

        let loss = (out * fixture.get(case, "upstream", dtype))
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in names.iter().zip(&vars) {
            let grad = grads
                .get(var)
                .unwrap_or_else(|| panic!("{case}: no gradient for {name}"));
            let expected = fixture.get(case, &format!("grad_{name}"), DType::F64);
            assert_matches(&format!("{case} grad_{name}"), grad, &expected, dtype);
        }
    }
}

/// Compares candle's backward gradients of sum(f(inputs) * r), r fixed pseudo-random, with
/// central differences at up to 16 positions of every input (f64, step 1e-6).
fn check_finite_differences(
    case: &str,
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) {
    const STEP: f64 = 1e-6;
    const TOLERANCE: f64 = 1e-6;

    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&tensors).unwrap();
    let upstream = pseudo_random(out.dims(), 99);
    let loss_of = |t: &[Tensor]| -> f64 {
        let loss = (f(t).unwrap() * &upstream).unwrap().sum_all().unwrap();
        loss.to_scalar::<f64>().unwrap()
    };
    let grads = (out * &upstream)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();

    for (index, var) in vars.iter().enumerate() {
        let grad = values(
            grads
                .get(var)
                .unwrap_or_else(|| panic!("{case}: no gradient for input {index}")),
        );
        let base = values(&inputs[index]);
        let positions = sample_positions(base.len(), 16);
        for position in positions {
            let shifted = |delta: f64| -> f64 {
                let mut perturbed = base.clone();
                perturbed[position] += delta;
                let mut t = inputs.to_vec();
                t[index] = Tensor::from_vec(perturbed, inputs[index].dims(), &Device::Cpu).unwrap();
                loss_of(&t)
            };
            let numeric = (shifted(STEP) - shifted(-STEP)) / (2.0 * STEP);
            let analytic = grad[position];
            assert!(
                (numeric - analytic).abs() <= TOLERANCE * (1.0 + analytic.abs()),
                "{case}: input {index} position {position}: backward {analytic}, finite difference {numeric}"
            );
        }
    }
}

/// Up to `count` positions spread evenly over 0..len, first and last included.
fn sample_positions(len: usize, count: usize) -> Vec<usize> {
    if len <= count {
        return (0..len).collect();
    }
    (0..count).map(|i| i * (len - 1) / (count - 1)).collect()
}

/// Deterministic values in [-1, 1) from a 64-bit linear congruential generator, as f64.
fn pseudo_random(dims: &[usize], seed: u64) -> Tensor {
    let count: usize = dims.iter().product();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data: Vec<f64> = (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(data, dims, &Device::Cpu).unwrap()
}

#[test]
fn upsample_matches_torch() {
    for case in UPSAMPLE_CASES {
        check_against_torch(case, &["x"], |t| upsample_trilinear_x2(&t[0]));
    }
}

#[test]
fn upsample_portable_matches_torch() {
    for case in UPSAMPLE_CASES {
        check_against_torch(case, &["x"], |t| upsample_portable(&t[0]));
    }
}

#[test]
fn upsample_kernel_matches_portable() {
    // Larger than the fixture, so every plane has interior samples on all three axes.
    let x = pseudo_random(&[2, 3, 7, 6, 9], 41);
    let kernel = upsample_trilinear_x2(&x).unwrap();
    let portable = upsample_portable(&x).unwrap();
    assert_eq!(kernel.dims(), [2, 3, 14, 12, 18]);
    assert_matches("upsample output", &kernel, &portable, DType::F64);

    let upstream = pseudo_random(kernel.dims(), 42);
    let grad_of = |f: fn(&Tensor) -> Result<Tensor>| {
        let x = Var::from_tensor(&x).unwrap();
        let loss = (f(&x).unwrap() * &upstream).unwrap().sum_all().unwrap();
        loss.backward().unwrap().get(&x).unwrap().clone()
    };
    let kernel_grad = grad_of(upsample_trilinear_x2);
    let portable_grad = grad_of(upsample_portable);
    assert_matches(
        "upsample gradient",
        &kernel_grad,
        &portable_grad,
        DType::F64,
    );
}

#[test]
fn upsample_accepts_noncontiguous_input() {
    let x = pseudo_random(&[1, 2, 3, 4, 5], 43)
        .permute((0, 1, 4, 3, 2))
        .unwrap();
    assert!(!x.is_contiguous());
    let kernel = upsample_trilinear_x2(&x).unwrap();
    let portable = upsample_portable(&x).unwrap();
    assert_matches("permuted input", &kernel, &portable, DType::F64);
}

#[test]
fn upsample_keeps_constant_volume() {
    let x = Tensor::full(2.5f32, (1, 1, 3, 2, 4), &Device::Cpu).unwrap();
    let out = values(&upsample_trilinear_x2(&x).unwrap());
    assert_eq!(out.len(), 8 * 24);
    for value in out {
        assert_eq!(value, 2.5);
    }
}

#[test]
fn upsample_rejects_rank4_input() {
    let x = pseudo_random(&[2, 3, 4, 5], 44);
    assert!(upsample_trilinear_x2(&x).is_err());
}

#[test]
fn upsample_finite_differences() {
    let x = pseudo_random(&[2, 2, 3, 4, 5], 45);
    check_finite_differences("upsample", std::slice::from_ref(&x), |t| {
        upsample_trilinear_x2(&t[0])
    });
    check_finite_differences("upsample portable", &[x], |t| upsample_portable(&t[0]));
}

#[test]
fn modulated_conv3d_matches_torch() {
    for (case, has_style, demodulate) in MODCONV_CASES {
        let names: &[&str] = if has_style {
            &["x", "w", "style"]
        } else {
            &["x", "w"]
        };
        check_against_torch(case, names, |t| {
            modulated_conv3d(&t[0], &t[1], t.get(2), 1, demodulate)
        });
    }
}

#[test]
fn modulated_conv3d_finite_differences() {
    let fixture = Fixture::load();
    for (case, has_style, demodulate) in MODCONV_CASES {
        let mut inputs = vec![
            fixture.get(case, "x", DType::F64),
            fixture.get(case, "w", DType::F64),
        ];
        if has_style {
            inputs.push(fixture.get(case, "style", DType::F64));
        }
        check_finite_differences(case, &inputs, |t| {
            modulated_conv3d(&t[0], &t[1], t.get(2), 1, demodulate)
        });
    }
}

#[test]
fn modulated_conv3d_rejects_invalid_shapes() {
    let x = pseudo_random(&[2, 3, 4, 4, 4], 51);
    let w = pseudo_random(&[4, 3, 3, 3, 3], 52);
    let style_wrong_batch = pseudo_random(&[1, 3], 53);
    let style_wrong_channels = pseudo_random(&[2, 4], 54);
    let weight_wrong_channels = pseudo_random(&[4, 2, 3, 3, 3], 55);
    let style = pseudo_random(&[2, 3], 56);

    assert!(
        modulated_conv3d(&x, &w, Some(&style_wrong_batch), 1, true).is_err(),
        "style with the wrong batch size accepted"
    );
    assert!(
        modulated_conv3d(&x, &w, Some(&style_wrong_channels), 1, true).is_err(),
        "style with the wrong channel count accepted"
    );
    assert!(
        modulated_conv3d(&x, &weight_wrong_channels, Some(&style), 1, true).is_err(),
        "weight with the wrong input channel count accepted"
    );
}

#[test]
fn conv_transpose3d_strided_finite_differences() {
    let x = pseudo_random(&[2, 3, 2, 3, 2], 61);
    let w = pseudo_random(&[3, 2, 2, 2, 2], 62);
    let b = pseudo_random(&[2], 63);
    check_finite_differences("conv_transpose3d_strided", &[x, w, b], |t| {
        conv_transpose3d_strided(&t[0], &t[1], Some(&t[2]))
    });
}

#[test]
fn window_attention_finite_differences() {
    // 5 windows of 7 tokens, 2 heads of width 3, 3 window classes. In f64 the CPU path runs the
    // custom op AttentionWeights, whose backward pass gives the gradients of Q, K and the bias.
    let (windows, tokens, heads, head_dim, classes) = (5, 7, 2, 3, 3);
    let qkv = pseudo_random(&[windows, tokens, 3, heads, head_dim], 71);
    let bias = pseudo_random(&[classes, heads, tokens, tokens], 72);
    let class = Tensor::new(&[2u32, 0, 2, 1, 0], &Device::Cpu).unwrap();
    check_finite_differences("window_attention", &[qkv, bias], |t| {
        window_attention(&t[0], &t[1], &class, 0.4)
    });
}
