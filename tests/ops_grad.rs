//! Checks prism::ops against torch 2.15 (outputs and autograd gradients stored in
//! tests/data/ops/ops_reference.safetensors by make_ops_reference.py beside it) and candle's
//! backward passes against central finite differences in f64.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use prism::ops::{
    conv3d, conv3d_portable, conv3d_with_config, gelu_erf, instance_norm3d, layer_norm, leaky_relu,
    pad3d, softmax_last_dim, Conv3dConfig,
};

const CONV_CASES: [&str; 10] = [
    "conv_k3_s1_p1_batch2_bias",
    "conv_k3_s2_p1_odd",
    "conv_patch_embed_k2_s2",
    "conv_anisotropic",
    "conv_k2_s1_p3_wide_padding",
    "conv_k3_s3_p2",
    "conv_k1_pointwise",
    "conv_k3_many_chunks",
    "conv_k3_wide_output",
    "conv_k2_s2_wide_output",
];

/// Allowed max |actual - expected| relative to max |expected|, per dtype.
const F32_TOLERANCE: f64 = 1e-4;
const F64_TOLERANCE: f64 = 1e-10;

struct Fixture(HashMap<String, Tensor>);

impl Fixture {
    fn load() -> Self {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/ops/ops_reference.safetensors"
        );
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{path}: {e}; regenerate it with make_ops_reference.py"));
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

    fn has(&self, case: &str, name: &str) -> bool {
        self.0.contains_key(&format!("{case}.{name}"))
    }

    fn conv_config(&self, case: &str) -> Conv3dConfig {
        let axes = |name| -> [usize; 3] {
            let values = self.get(case, name, DType::I64).to_vec1::<i64>().unwrap();
            std::array::from_fn(|axis| values[axis] as usize)
        };
        Conv3dConfig {
            stride: axes("stride"),
            padding: axes("padding"),
        }
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

/// Which conv3d implementation a test runs.
#[derive(Clone, Copy, Debug)]
enum ConvPath {
    Dispatched,
    Portable,
}

fn run_conv(
    path: ConvPath,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    config: &Conv3dConfig,
) -> Result<Tensor> {
    match path {
        ConvPath::Dispatched => conv3d_with_config(x, w, b, config),
        ConvPath::Portable => conv3d_portable(x, w, b, config),
    }
}

fn check_conv_forward(path: ConvPath, dtype: DType) {
    let fixture = Fixture::load();
    for case in CONV_CASES {
        let x = fixture.get(case, "x", dtype);
        let w = fixture.get(case, "w", dtype);
        let b = fixture
            .has(case, "b")
            .then(|| fixture.get(case, "b", dtype));
        let out = run_conv(path, &x, &w, b.as_ref(), &fixture.conv_config(case)).unwrap();
        assert_eq!(out.dtype(), dtype, "{case}: output dtype");
        assert_matches(
            &format!("{case} {path:?} output"),
            &out,
            &fixture.get(case, "out", DType::F64),
            dtype,
        );
    }
}

fn check_conv_backward(path: ConvPath, dtype: DType) {
    let fixture = Fixture::load();
    for case in CONV_CASES {
        let x = Var::from_tensor(&fixture.get(case, "x", dtype)).unwrap();
        let w = Var::from_tensor(&fixture.get(case, "w", dtype)).unwrap();
        let b = fixture
            .has(case, "b")
            .then(|| Var::from_tensor(&fixture.get(case, "b", dtype)).unwrap());
        let out = run_conv(path, &x, &w, b.as_deref(), &fixture.conv_config(case)).unwrap();
        let loss = (out * fixture.get(case, "upstream", dtype))
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();

        let mut params = vec![("x", &x), ("w", &w)];
        if let Some(b) = &b {
            params.push(("b", b));
        }
        for (name, var) in params {
            let grad = grads
                .get(var)
                .unwrap_or_else(|| panic!("{case}: no gradient for {name}"));
            let expected = fixture.get(case, &format!("grad_{name}"), DType::F64);
            assert_matches(
                &format!("{case} {path:?} grad_{name}"),
                grad,
                &expected,
                dtype,
            );
        }
    }
}

#[test]
fn conv3d_forward_matches_torch_f32() {
    check_conv_forward(ConvPath::Dispatched, DType::F32);
}

#[test]
fn conv3d_forward_matches_torch_f64() {
    check_conv_forward(ConvPath::Dispatched, DType::F64);
}

#[test]
fn conv3d_portable_forward_matches_torch() {
    check_conv_forward(ConvPath::Portable, DType::F32);
    check_conv_forward(ConvPath::Portable, DType::F64);
}

#[test]
fn conv3d_gradients_match_torch_f32() {
    check_conv_backward(ConvPath::Dispatched, DType::F32);
}

#[test]
fn conv3d_gradients_match_torch_f64() {
    check_conv_backward(ConvPath::Dispatched, DType::F64);
}

#[test]
fn conv3d_portable_gradients_match_torch() {
    check_conv_backward(ConvPath::Portable, DType::F32);
    check_conv_backward(ConvPath::Portable, DType::F64);
}

#[test]
fn conv3d_finite_differences() {
    let fixture = Fixture::load();
    for case in [
        "conv_k3_s1_p1_batch2_bias",
        "conv_k3_s2_p1_odd",
        "conv_k2_s1_p3_wide_padding",
    ] {
        let config = fixture.conv_config(case);
        let mut inputs = vec![
            fixture.get(case, "x", DType::F64),
            fixture.get(case, "w", DType::F64),
        ];
        if fixture.has(case, "b") {
            inputs.push(fixture.get(case, "b", DType::F64));
        }
        check_finite_differences(case, &inputs, |t| {
            conv3d_with_config(&t[0], &t[1], t.get(2), &config)
        });
    }
}

#[test]
fn conv3d_matches_portable_on_noncontiguous_input() {
    let x = pseudo_random(&[1, 5, 6, 3, 4], 11)
        .permute((0, 1, 4, 3, 2))
        .unwrap();
    let w = pseudo_random(&[3, 5, 3, 3, 3], 12);
    assert!(!x.is_contiguous());
    let fast = conv3d(&x, &w, None, 1, 1).unwrap();
    let portable = conv3d_portable(&x, &w, None, &Conv3dConfig::new(1, 1)).unwrap();
    assert_matches("permuted input", &fast, &portable, DType::F64);
}

#[test]
fn conv3d_skips_gradient_of_constant_input() {
    let x = pseudo_random(&[1, 2, 4, 4, 4], 13);
    let w = Var::from_tensor(&pseudo_random(&[3, 2, 2, 2, 2], 14)).unwrap();
    let loss = conv3d(&x, &w, None, 2, 0).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    assert!(grads.get(&x).is_none(), "constant input got a gradient");
    assert!(grads.get(&w).is_some(), "weight got no gradient");
}

#[test]
fn conv3d_rejects_invalid_shapes() {
    let x = pseudo_random(&[1, 2, 4, 4, 4], 15);
    let w = pseudo_random(&[3, 2, 3, 3, 3], 16);
    let wrong_channels = pseudo_random(&[3, 4, 3, 3, 3], 17);
    let wrong_bias = pseudo_random(&[2], 18);
    let rank4 = pseudo_random(&[2, 4, 4, 4], 19);

    assert!(
        conv3d(&x, &wrong_channels, None, 1, 1).is_err(),
        "channel mismatch accepted"
    );
    assert!(
        conv3d(&x, &w, Some(&wrong_bias), 1, 1).is_err(),
        "bias of wrong size accepted"
    );
    assert!(
        conv3d(&rank4, &w, None, 1, 1).is_err(),
        "rank-4 input accepted"
    );
    assert!(conv3d(&x, &w, None, 0, 1).is_err(), "stride 0 accepted");
    assert!(
        conv3d(&x.narrow(2, 0, 1).unwrap(), &w, None, 1, 0).is_err(),
        "kernel larger than input accepted"
    );
    assert!(
        conv3d(&x.to_dtype(DType::F32).unwrap(), &w, None, 1, 1).is_err(),
        "mixed dtypes accepted"
    );
}

#[test]
fn layer_norm_matches_torch() {
    let fixture = Fixture::load();
    for dtype in [DType::F32, DType::F64] {
        let [x, w, b] = ["x", "w", "b"].map(|name| fixture.get("layer_norm", name, dtype));
        let expected = fixture.get("layer_norm", "out", DType::F64);
        let fused = layer_norm(&x, Some(&w), Some(&b), 1e-5).unwrap();
        assert_matches("layer_norm fused", &fused, &expected, dtype);

        let x = Var::from_tensor(&x).unwrap();
        let composed = layer_norm(&x, Some(&w), Some(&b), 1e-5).unwrap();
        assert_matches("layer_norm composed", &composed, &expected, dtype);
    }
    check_torch_gradients("layer_norm", &["x", "w", "b"], |t| {
        layer_norm(&t[0], Some(&t[1]), Some(&t[2]), 1e-5)
    });
}

#[test]
fn layer_norm_finite_differences() {
    let fixture = Fixture::load();
    let inputs = ["x", "w", "b"].map(|name| fixture.get("layer_norm", name, DType::F64));
    check_finite_differences("layer_norm", &inputs, |t| {
        layer_norm(&t[0], Some(&t[1]), Some(&t[2]), 1e-5)
    });
    check_finite_differences("layer_norm without affine", &inputs[..1], |t| {
        layer_norm(&t[0], None, None, 1e-5)
    });
}

#[test]
fn instance_norm3d_matches_torch() {
    let fixture = Fixture::load();
    for dtype in [DType::F32, DType::F64] {
        let x = fixture.get("instance_norm3d", "x", dtype);
        let expected = fixture.get("instance_norm3d", "out", DType::F64);
        assert_matches(
            "instance_norm3d fused",
            &instance_norm3d(&x, 1e-5).unwrap(),
            &expected,
            dtype,
        );
        let x = Var::from_tensor(&x).unwrap();
        assert_matches(
            "instance_norm3d composed",
            &instance_norm3d(&x, 1e-5).unwrap(),
            &expected,
            dtype,
        );
    }
    check_torch_gradients("instance_norm3d", &["x"], |t| instance_norm3d(&t[0], 1e-5));
}

#[test]
fn instance_norm3d_finite_differences() {
    let x = Fixture::load().get("instance_norm3d", "x", DType::F64);
    check_finite_differences("instance_norm3d", &[x], |t| instance_norm3d(&t[0], 1e-5));
}

#[test]
fn softmax_matches_torch() {
    let fixture = Fixture::load();
    for dtype in [DType::F32, DType::F64] {
        let x = fixture.get("softmax", "x", dtype);
        let expected = fixture.get("softmax", "out", DType::F64);
        assert_matches(
            "softmax fused",
            &softmax_last_dim(&x).unwrap(),
            &expected,
            dtype,
        );
        let x = Var::from_tensor(&x).unwrap();
        assert_matches(
            "softmax composed",
            &softmax_last_dim(&x).unwrap(),
            &expected,
            dtype,
        );
    }
    check_torch_gradients("softmax", &["x"], |t| softmax_last_dim(&t[0]));
}

#[test]
fn softmax_finite_differences() {
    // Scaled down from the fixture so that no probability saturates at 0 or 1.
    let x = (Fixture::load().get("softmax", "x", DType::F64) * 0.1).unwrap();
    check_finite_differences("softmax", &[x], |t| softmax_last_dim(&t[0]));
}

#[test]
fn leaky_relu_matches_torch() {
    let fixture = Fixture::load();
    let x = fixture.get("leaky_relu", "x", DType::F32);
    assert_matches(
        "leaky_relu",
        &leaky_relu(&x, 0.01).unwrap(),
        &fixture.get("leaky_relu", "out", DType::F64),
        DType::F32,
    );
    check_torch_gradients("leaky_relu", &["x"], |t| leaky_relu(&t[0], 0.01));
}

#[test]
fn leaky_relu_gradient_at_zero_is_slope() {
    let x = Var::from_tensor(&Tensor::new(&[0f64], &Device::Cpu).unwrap()).unwrap();
    let grads = leaky_relu(&x, 0.2)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let grad = values(grads.get(&x).unwrap());
    assert_eq!(grad, vec![0.2]);
}

#[test]
fn leaky_relu_finite_differences() {
    let x = Fixture::load().get("leaky_relu", "x", DType::F64);
    check_finite_differences("leaky_relu", &[x], |t| leaky_relu(&t[0], 0.01));
}

#[test]
fn gelu_erf_matches_torch() {
    let fixture = Fixture::load();
    let x = fixture.get("gelu_erf", "x", DType::F32);
    assert_matches(
        "gelu_erf",
        &gelu_erf(&x).unwrap(),
        &fixture.get("gelu_erf", "out", DType::F64),
        DType::F32,
    );
    // Candle 0.11.1's gelu_erf backward rounds 1/√(2π) to 0.398942, a relative error of 7e-7.
    check_torch_gradients_within("gelu_erf", &["x"], 1e-6, |t| gelu_erf(&t[0]));
}

#[test]
fn gelu_erf_finite_differences() {
    let x = Fixture::load().get("gelu_erf", "x", DType::F64);
    check_finite_differences("gelu_erf", &[x], |t| gelu_erf(&t[0]));
}

#[test]
fn pad3d_places_input_inside_zeros() {
    let x = pseudo_random(&[2, 3, 4, 5], 21);
    let padded = pad3d(&x, [(1, 0), (0, 2), (3, 1)]).unwrap();
    assert_eq!(padded.dims(), [2, 4, 6, 9]);

    let inner = padded
        .narrow(1, 1, 3)
        .unwrap()
        .narrow(2, 0, 4)
        .unwrap()
        .narrow(3, 3, 5)
        .unwrap();
    assert_eq!(values(&inner), values(&x), "input not at the padded offset");

    let total_abs: f64 = values(&padded).iter().map(|v| v.abs()).sum();
    let inner_abs: f64 = values(&x).iter().map(|v| v.abs()).sum();
    assert_eq!(total_abs, inner_abs, "padding is not zero");
}

#[test]
fn pad3d_finite_differences() {
    let x = pseudo_random(&[1, 2, 3, 4, 2], 22);
    check_finite_differences("pad3d", &[x], |t| pad3d(&t[0], [(1, 2), (0, 1), (2, 0)]));
}

#[test]
fn pad3d_rejects_rank2_input() {
    let x = pseudo_random(&[3, 4], 23);
    assert!(pad3d(&x, [(1, 1); 3]).is_err());
}

/// Compares candle's gradients of sum(f(inputs) * upstream) with torch's autograd for `case`.
fn check_torch_gradients(case: &str, names: &[&str], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    check_torch_gradients_within(case, names, F64_TOLERANCE, f)
}

/// Same as [`check_torch_gradients`] with a looser tolerance for the f64 gradients.
fn check_torch_gradients_within(
    case: &str,
    names: &[&str],
    f64_tolerance: f64,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) {
    let fixture = Fixture::load();
    for dtype in [DType::F32, DType::F64] {
        let vars: Vec<Var> = names
            .iter()
            .map(|n| Var::from_tensor(&fixture.get(case, n, dtype)).unwrap())
            .collect();
        let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let loss = (f(&tensors).unwrap() * fixture.get(case, "upstream", dtype))
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in names.iter().zip(&vars) {
            let grad = grads
                .get(var)
                .unwrap_or_else(|| panic!("{case}: no gradient for {name}"));
            let expected = fixture.get(case, &format!("grad_{name}"), DType::F64);
            let error = relative_error(grad, &expected);
            let allowed = if dtype == DType::F64 {
                f64_tolerance
            } else {
                F32_TOLERANCE
            };
            assert!(
                error <= allowed,
                "{case} grad_{name} ({dtype:?}): relative error {error:e}"
            );
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

/// Runs `f` on `x` as a constant (fused inference kernels) and as a variable (composed ops).
fn fused_and_composed(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> (Vec<f64>, Vec<f64>) {
    let fused = f(x).unwrap();
    let composed = f(Var::from_tensor(x).unwrap().as_tensor()).unwrap();
    (values(&fused), values(&composed))
}

#[test]
fn softmax_fused_matches_composed() {
    // Row lengths with and without a partial 16-lane tail; logits up to ±30.
    for dims in [[7, 37], [4, 343], [3, 16]] {
        let x = (pseudo_random(&dims, 31) * 30.0)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let (fused, composed) = fused_and_composed(&x, softmax_last_dim);
        let diff = fused
            .iter()
            .zip(&composed)
            .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff <= 1e-6, "{dims:?}: max difference {diff}");
    }
}

#[test]
fn softmax_fused_uniform_row() {
    let x = Tensor::full(3.5f32, (2, 21), &Device::Cpu).unwrap();
    let out = values(&softmax_last_dim(&x).unwrap());
    for value in out {
        assert!((value - 1.0 / 21.0).abs() <= 1e-7, "got {value}");
    }
}

#[test]
fn gelu_erf_fused_matches_f64_reference() {
    // The f64 composed path uses candle's f64 erf; the fused f32 kernel a Chebyshev erfc fit.
    let x64 = Tensor::arange(-900i64, 901, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let x64 = ((x64 / 100.0).unwrap() + 0.003).unwrap();
    let reference = values(&x64.gelu_erf().unwrap());
    let fused = values(&gelu_erf(&x64.to_dtype(DType::F32).unwrap()).unwrap());
    let inputs = values(&x64);
    for ((x, f), r) in inputs.iter().zip(&fused).zip(&reference) {
        // f32 rounding of x itself moves gelu by up to |gelu'(x)|·|x|·6e-8.
        let allowed = 2e-6 * r.abs() + 1.2e-7 * x.abs();
        assert!(
            (f - r).abs() <= allowed,
            "gelu({x}): fused {f}, reference {r}"
        );
    }
}

#[test]
fn leaky_relu_fused_matches_composed() {
    let x = (pseudo_random(&[3, 1000], 33) * 5.0)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let (fused, composed) = fused_and_composed(&x, |t| leaky_relu(t, 0.01));
    assert_eq!(fused, composed);
}

#[test]
fn layer_norm_fused_matches_composed() {
    let x = pseudo_random(&[5, 9, 96], 34)
        .affine(4.0, 100.0)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let w = pseudo_random(&[96], 35).to_dtype(DType::F32).unwrap();
    let b = pseudo_random(&[96], 36).to_dtype(DType::F32).unwrap();
    let (fused, composed) = fused_and_composed(&x, |t| layer_norm(t, Some(&w), Some(&b), 1e-5));
    let diff = fused
        .iter()
        .zip(&composed)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff <= 1e-4, "max difference {diff}");
}
