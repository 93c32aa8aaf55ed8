//! Checks prism::train. AdamW, gradient clipping and the warm-up cosine schedule are compared
//! with torch 2.15 and MONAI 1.4.0 (tests/data/train/train_reference.safetensors, written by
//! make_train_reference.py beside it) and the schedule with its closed form. The loop trains a
//! small convolutional network on a crop of the MNI152 T1 template to check exact resume,
//! stopping on SIGUSR1, checkpoint atomicity and mismatch reports.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use prism::cli::Exit;
use prism::ops::{conv3d, instance_norm3d, leaky_relu};
use prism::train::checkpoint::{self, CheckpointKind};
use prism::train::{
    clip_grad_norm, run, AdamW, AdamWConfig, BestMetric, Goal, LogColumns, LogRow, Losses, Metrics,
    NamedOptimizer, Param, RunConfig, StepProgress, StopReason, StopSignal, TrainLog, TrainRng,
    TrainState, WarmupCosine, LOG_FILE,
};
use rand::Rng;

// ---------------------------------------------------------------------------------------------
// Reference fixture

struct Fixture(HashMap<String, Tensor>);

impl Fixture {
    fn load() -> Fixture {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/train/train_reference.safetensors"
        );
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{path}: {e}; regenerate it with make_train_reference.py"));
        Fixture(tensors)
    }

    fn get(&self, key: &str) -> Tensor {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("fixture has no tensor {key}"))
            .clone()
    }

    fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    fn values(&self, key: &str) -> Vec<f64> {
        self.get(key)
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }
}

const PARAM_NAMES: [&str; 3] = ["conv.weight", "conv.bias", "head.weight"];

/// Returns the weight-decay flag of make_train_reference.py's groups: decay on weights only.
fn reference_decay(name: &str) -> bool {
    name != "conv.bias"
}

fn flat(tensor: &Tensor) -> Vec<f64> {
    tensor
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// max |actual − expected| / max |expected|.
fn relative_error(actual: &Tensor, expected: &Tensor) -> f64 {
    let (a, e) = (flat(actual), flat(expected));
    assert_eq!(a.len(), e.len(), "element counts differ");
    let scale = e
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    a.iter()
        .zip(&e)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / scale
}

fn tolerance(dtype: &str) -> f64 {
    if dtype == "f32" {
        1e-6
    } else {
        1e-12
    }
}

// ---------------------------------------------------------------------------------------------
// AdamW, clipping and schedule against torch and MONAI

fn reference_adamw(fixture: &Fixture, dtype: &str) -> (AdamW, Vec<Var>) {
    let vars: Vec<Var> = PARAM_NAMES
        .iter()
        .map(|name| Var::from_tensor(&fixture.get(&format!("adamw.{dtype}.init.{name}"))).unwrap())
        .collect();
    let params = PARAM_NAMES
        .iter()
        .zip(&vars)
        .map(|(name, var)| Param::with_weight_decay(*name, var.clone(), reference_decay(name)))
        .collect();
    let config = AdamWConfig {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.05,
    };
    (AdamW::new(params, config).unwrap(), vars)
}

fn run_reference_steps(fixture: &Fixture, dtype: &str, optimizer: &mut AdamW, vars: &[Var]) {
    let lrs = fixture.values(&format!("adamw.{dtype}.lr"));
    for (k, lr) in lrs.iter().enumerate() {
        let mut grads = GradStore::default();
        for (name, var) in PARAM_NAMES.iter().zip(vars) {
            let key = format!("adamw.{dtype}.grad.{name}.{k}");
            if fixture.has(&key) {
                grads.insert(var.as_tensor(), fixture.get(&key));
            }
        }
        optimizer.set_lr(*lr);
        optimizer.step(&grads).unwrap();
    }
}

fn check_adamw_against_torch(dtype: &str) {
    let fixture = Fixture::load();
    let (mut optimizer, vars) = reference_adamw(&fixture, dtype);
    run_reference_steps(&fixture, dtype, &mut optimizer, &vars);

    let state = optimizer.export_state();
    for (name, var) in PARAM_NAMES.iter().zip(&vars) {
        let final_key = format!("adamw.{dtype}.final.{name}");
        let error = relative_error(var.as_tensor(), &fixture.get(&final_key));
        assert!(
            error < tolerance(dtype),
            "{name}: parameter relative error {error:e}"
        );

        let saved = &state.params[*name];
        let exp_avg_key = format!("adamw.{dtype}.exp_avg.{name}");
        let error = relative_error(&saved.exp_avg, &fixture.get(&exp_avg_key));
        assert!(
            error < tolerance(dtype),
            "{name}: exp_avg relative error {error:e}"
        );
        let exp_avg_sq_key = format!("adamw.{dtype}.exp_avg_sq.{name}");
        let error = relative_error(&saved.exp_avg_sq, &fixture.get(&exp_avg_sq_key));
        assert!(
            error < tolerance(dtype),
            "{name}: exp_avg_sq relative error {error:e}"
        );

        let torch_step = fixture.values(&format!("adamw.{dtype}.step.{name}"))[0] as u64;
        assert_eq!(saved.step, torch_step, "{name}: step count");
    }
}

#[test]
fn adamw_matches_torch_f32() {
    check_adamw_against_torch("f32");
}

#[test]
fn adamw_matches_torch_f64() {
    check_adamw_against_torch("f64");
}

#[test]
fn adamw_skips_params_without_grad() {
    let fixture = Fixture::load();
    let (mut optimizer, _vars) = reference_adamw(&fixture, "f32");
    run_reference_steps(&fixture, "f32", &mut optimizer, &_vars);
    let state = optimizer.export_state();
    // head.weight has gradients on even steps only: 13 of 25.
    assert_eq!(state.params["conv.weight"].step, 25);
    assert_eq!(state.params["head.weight"].step, 13);
}

#[test]
fn adamw_state_import_continues_identically() {
    let fixture = Fixture::load();
    let (mut straight, straight_vars) = reference_adamw(&fixture, "f32");
    run_reference_steps(&fixture, "f32", &mut straight, &straight_vars);

    // A second optimizer over copies of the parameters, given the first one's state.
    let (mut copy, copy_vars) = reference_adamw(&fixture, "f32");
    for (from, to) in straight_vars.iter().zip(&copy_vars) {
        to.set(from.as_tensor()).unwrap();
    }
    copy.import_state(&straight.export_state()).unwrap();

    let mut grads_straight = GradStore::default();
    let mut grads_copy = GradStore::default();
    for (i, name) in PARAM_NAMES.iter().enumerate() {
        let grad = fixture.get(&format!("adamw.f32.grad.{name}.0"));
        grads_straight.insert(straight_vars[i].as_tensor(), grad.clone());
        grads_copy.insert(copy_vars[i].as_tensor(), grad);
    }
    straight.step(&grads_straight).unwrap();
    copy.step(&grads_copy).unwrap();

    for (a, b) in straight_vars.iter().zip(&copy_vars) {
        assert_eq!(flat(a.as_tensor()), flat(b.as_tensor()));
    }
}

#[test]
fn adamw_import_rejects_wrong_names() {
    let fixture = Fixture::load();
    let (mut optimizer, _) = reference_adamw(&fixture, "f32");
    let mut state = optimizer.export_state();
    let moved = state.params.remove("conv.bias").unwrap();
    state.params.insert("conv.offset".to_string(), moved);

    let message = optimizer.import_state(&state).unwrap_err().to_string();
    assert!(message.contains("missing conv.bias"), "{message}");
    assert!(message.contains("unexpected conv.offset"), "{message}");
}

fn check_clip_against_torch(dtype: &str) {
    let fixture = Fixture::load();
    let vars: Vec<Var> = PARAM_NAMES
        .iter()
        .map(|name| {
            let grad = fixture.get(&format!("clip.{dtype}.grad.{name}"));
            Var::zeros(grad.dims(), grad.dtype(), &Device::Cpu).unwrap()
        })
        .collect();
    let mut grads = GradStore::default();
    for (name, var) in PARAM_NAMES.iter().zip(&vars) {
        grads.insert(
            var.as_tensor(),
            fixture.get(&format!("clip.{dtype}.grad.{name}")),
        );
    }

    let max_norm = fixture.values("clip.max_norm")[0];
    let var_refs: Vec<&Var> = vars.iter().collect();
    let norm = clip_grad_norm(&mut grads, &var_refs, max_norm).unwrap();

    let torch_norm = fixture.values(&format!("clip.{dtype}.total_norm"))[0];
    assert!(
        ((norm - torch_norm) / torch_norm).abs() < tolerance(dtype),
        "norm {norm} vs torch {torch_norm}"
    );
    for (name, var) in PARAM_NAMES.iter().zip(&vars) {
        let clipped = grads.get(var.as_tensor()).unwrap();
        let expected = fixture.get(&format!("clip.{dtype}.clipped.{name}"));
        let error = relative_error(clipped, &expected);
        assert!(
            error < tolerance(dtype),
            "{name}: clipped gradient relative error {error:e}"
        );
    }
}

#[test]
fn clip_grad_norm_matches_torch_f32() {
    check_clip_against_torch("f32");
}

#[test]
fn clip_grad_norm_matches_torch_f64() {
    check_clip_against_torch("f64");
}

#[test]
fn schedule_matches_monai() {
    let fixture = Fixture::load();
    for case in ["prism", "floor", "no_warmup"] {
        let config = fixture.values(&format!("schedule.{case}.config"));
        let schedule =
            WarmupCosine::new(config[0], config[1] as u64, config[2] as u64, config[3]).unwrap();
        let monai = fixture.values(&format!("schedule.{case}.lr"));
        for (step, expected) in monai.iter().enumerate() {
            let lr = schedule.lr(step as u64);
            let error = (lr - expected).abs();
            assert!(
                error <= 1e-15 * config[0],
                "{case}: step {step}: {lr} vs MONAI {expected}"
            );
        }
    }
}

#[test]
fn schedule_closed_form_edges() {
    let schedule = WarmupCosine::new(1e-4, 1000, 5000, 0.0).unwrap();
    assert_eq!(schedule.lr(0), 0.0);
    assert_eq!(schedule.lr(500), 0.5e-4);
    assert_eq!(schedule.lr(1000), 1e-4);
    // Half-way through the decay, ½(1 + cos(π/2)) = ½.
    assert!((schedule.lr(3000) - 0.5e-4).abs() < 1e-18);
    assert!(schedule.lr(5000).abs() < 1e-20);
    assert!(schedule.lr(9000).abs() < 1e-20);
}

#[test]
fn schedule_floor_holds_after_warmup() {
    let schedule = WarmupCosine::new(1e-3, 10, 100, 1e-5).unwrap();
    assert_eq!(schedule.lr(0), 0.0);
    assert_eq!(schedule.lr(100), 1e-5);
    assert_eq!(schedule.lr(500), 1e-5);
}

#[test]
fn schedule_rejects_warmup_longer_than_run() {
    let error = WarmupCosine::new(1e-3, 200, 100, 0.0)
        .unwrap_err()
        .to_string();
    assert!(error.contains("warm-up of 200 steps"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// Random source

#[test]
fn rng_state_restores_stream_position() {
    let mut rng = TrainRng::new(42);
    let _: [u64; 5] = rng.random();
    let saved = serde_json::to_string(&rng.state()).unwrap();

    let expected: Vec<u64> = (0..8).map(|_| rng.random()).collect();
    let mut restored = TrainRng::from_state(serde_json::from_str(&saved).unwrap());
    let actual: Vec<u64> = (0..8).map(|_| restored.random()).collect();
    assert_eq!(actual, expected);
}

#[test]
fn item_rng_depends_only_on_seed_step_item() {
    let mut rng = TrainRng::new(7);
    let before: u64 = rng.item_rng(3, 1).random();
    let _: [u64; 10] = rng.random();
    let after: u64 = rng.item_rng(3, 1).random();
    let other_item: u64 = rng.item_rng(3, 2).random();
    let other_step: u64 = rng.item_rng(4, 1).random();
    let other_seed: u64 = TrainRng::new(8).item_rng(3, 1).random();

    assert_eq!(before, after);
    assert_ne!(before, other_item);
    assert_ne!(before, other_step);
    assert_ne!(before, other_seed);
}

// ---------------------------------------------------------------------------------------------
// A small network on a real scan

const HIDDEN: usize = 4;
const REGION: usize = 24;
const PATCH: usize = 12;

/// Loads a z-scored 24³ crop of the MNI152 T1 template around the centre of the brain, and
/// makes its 3×3×3 box-filtered copy the regression target. Both are [1, 1, 24, 24, 24].
fn scan_and_target() -> (Tensor, Tensor) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mni152_2009a_t1.nii.gz");
    let (volume, _) = prism::io::load_volume(&path, None).unwrap();
    let start = [86, 104, 80];
    let mut values = Vec::with_capacity(REGION.pow(3));
    for i in 0..REGION {
        for j in 0..REGION {
            for k in 0..REGION {
                values.push(volume.data[[start[0] + i, start[1] + j, start[2] + k]]);
            }
        }
    }
    let x = Tensor::from_vec(values, (1, 1, REGION, REGION, REGION), &Device::Cpu).unwrap();
    let mean = x.mean_all().unwrap();
    let centered = x.broadcast_sub(&mean).unwrap();
    let std = centered.sqr().unwrap().mean_all().unwrap().sqrt().unwrap();
    let x = centered.broadcast_div(&std).unwrap();

    let box_filter = Tensor::full(1.0f32 / 27.0, (1, 1, 3, 3, 3), &Device::Cpu).unwrap();
    let target = conv3d(&x, &box_filter, None, 1, 1).unwrap();
    (x, target)
}

/// conv(1→4, 3³) → instance norm → leaky ReLU → conv(4→1, 3³), with one optimizer per layer
/// (as pretraining steps separate parameter sets), each on its own schedule.
struct Net {
    w1: Var,
    b1: Var,
    w2: Var,
    b2: Var,
}

impl Net {
    fn new(seed: u64, hidden: usize) -> Net {
        let mut rng = TrainRng::new(seed);
        let mut uniform = |shape: &[usize], bound: f32| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
            Var::from_tensor(&Tensor::from_vec(values, shape, &Device::Cpu).unwrap()).unwrap()
        };
        Net {
            w1: uniform(&[hidden, 1, 3, 3, 3], 0.19),
            b1: uniform(&[hidden], 0.19),
            w2: uniform(&[1, hidden, 3, 3, 3], 0.1),
            b2: uniform(&[1], 0.1),
        }
    }

    fn named_vars(&self) -> Vec<(String, Var)> {
        [
            ("conv1.weight", &self.w1),
            ("conv1.bias", &self.b1),
            ("conv2.weight", &self.w2),
            ("conv2.bias", &self.b2),
        ]
        .into_iter()
        .map(|(name, var)| (name.to_string(), var.clone()))
        .collect()
    }

    fn state(&self, seed: u64) -> TrainState {
        let config = AdamWConfig {
            lr: 0.0,
            weight_decay: 0.01,
            ..AdamWConfig::default()
        };
        let first = AdamW::new(
            vec![
                Param::new("conv1.weight", self.w1.clone()),
                Param::new("conv1.bias", self.b1.clone()),
            ],
            config,
        )
        .unwrap();
        let second = AdamW::new(
            vec![
                Param::new("conv2.weight", self.w2.clone()),
                Param::new("conv2.bias", self.b2.clone()),
            ],
            config,
        )
        .unwrap();
        let optimizers = vec![
            NamedOptimizer {
                name: "first".to_string(),
                optimizer: first,
                schedule: Some(WarmupCosine::new(2e-2, 2, 8, 0.0).unwrap()),
            },
            NamedOptimizer {
                name: "second".to_string(),
                optimizer: second,
                schedule: Some(WarmupCosine::new(1e-2, 3, 8, 1e-4).unwrap()),
            },
        ];
        TrainState::new(self.named_vars(), optimizers, seed).unwrap()
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let h = conv3d(x, self.w1.as_tensor(), Some(self.b1.as_tensor()), 1, 1).unwrap();
        let h = leaky_relu(&instance_norm3d(&h, 1e-5).unwrap(), 0.01).unwrap();
        conv3d(&h, self.w2.as_tensor(), Some(self.b2.as_tensor()), 1, 1).unwrap()
    }
}

/// Runs one training step on a random 12³ patch: MSE, backward, clip, both optimizer steps.
fn train_step(
    net: &Net,
    x: &Tensor,
    target: &Tensor,
    state: &mut TrainState,
) -> prism::Result<Losses> {
    let offsets: Vec<usize> = (0..3)
        .map(|_| state.rng.random_range(0..=REGION - PATCH))
        .collect();
    let crop = |t: &Tensor| {
        t.narrow(2, offsets[0], PATCH)?
            .narrow(3, offsets[1], PATCH)?
            .narrow(4, offsets[2], PATCH)
    };
    let prediction = net.forward(&crop(x)?);
    let loss = (prediction - crop(target)?)?.sqr()?.mean_all()?;

    let mut grads = loss.backward()?;
    let vars = [&net.w1, &net.b1, &net.w2, &net.b2];
    let grad_norm = clip_grad_norm(&mut grads, &vars, 5.0)?;
    state.optimizer_mut("first")?.step(&grads)?;
    state.optimizer_mut("second")?.step(&grads)?;

    let mse = loss.to_scalar::<f32>()? as f64;
    Ok(BTreeMap::from([
        ("mse".to_string(), mse),
        ("grad_norm".to_string(), grad_norm),
    ]))
}

/// Computes the MSE on the whole 24³ region. It also draws from the random source, as a
/// validation on random patches would, so the checkpoint must capture that draw too.
fn validate(
    net: &Net,
    x: &Tensor,
    target: &Tensor,
    state: &mut TrainState,
) -> prism::Result<Metrics> {
    let _: u32 = state.rng.random();
    let mse = (net.forward(x) - target)?
        .sqr()?
        .mean_all()?
        .to_scalar::<f32>()? as f64;
    Ok(BTreeMap::from([("mse".to_string(), mse)]))
}

fn run_config(dir: &Path, max_steps: u64, checkpoint_every: u64, resume: bool) -> RunConfig {
    RunConfig {
        dir: dir.to_path_buf(),
        max_steps,
        max_time: None,
        checkpoint_every,
        validate_every: 2,
        best: Some(BestMetric {
            name: "mse".to_string(),
            goal: Goal::Minimize,
        }),
        resume,
        losses: vec!["mse".to_string(), "grad_norm".to_string()],
        metrics: vec!["mse".to_string()],
        config: serde_json::json!({"model": "two-layer conv", "patch": PATCH}),
    }
}

/// Captures progress lines for inspection.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn quiet_progress() -> StepProgress {
    StepProgress::to_writer("prism-test", 1, Box::new(Lines::default()))
}

fn bits(var: &Var) -> Vec<u32> {
    var.as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

fn tensor_bits(tensor: &Tensor) -> Vec<u32> {
    tensor
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Rows of the log with the elapsed-time column left out.
fn log_rows_without_time(dir: &Path) -> Vec<Vec<String>> {
    let mut reader = csv::Reader::from_path(dir.join(LOG_FILE)).unwrap();
    let mut header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    let time_column = header.iter().position(|h| h == "elapsed_s").unwrap();
    header.remove(time_column);
    let mut rows = vec![header];
    for record in reader.records() {
        let mut row: Vec<String> = record.unwrap().iter().map(str::to_string).collect();
        row.remove(time_column);
        rows.push(row);
    }
    rows
}

fn assert_states_identical(a: &TrainState, b: &TrainState) {
    assert_eq!(a.step, b.step, "step");
    for ((name, va), (_, vb)) in a.model.iter().zip(&b.model) {
        assert_eq!(bits(va), bits(vb), "weights of {name}");
    }
    for (oa, ob) in a.optimizers.iter().zip(&b.optimizers) {
        let (sa, sb) = (oa.optimizer.export_state(), ob.optimizer.export_state());
        assert_eq!(sa.lr.to_bits(), sb.lr.to_bits(), "lr of {}", oa.name);
        for (param, pa) in &sa.params {
            let pb = &sb.params[param];
            assert_eq!(pa.step, pb.step, "step count of {param}");
            assert_eq!(
                tensor_bits(&pa.exp_avg),
                tensor_bits(&pb.exp_avg),
                "exp_avg of {param}"
            );
            assert_eq!(
                tensor_bits(&pa.exp_avg_sq),
                tensor_bits(&pb.exp_avg_sq),
                "exp_avg_sq of {param}"
            );
        }
    }
    assert_eq!(a.rng.state(), b.rng.state(), "random source");
    assert_eq!(a.best, b.best, "best record");
}

// ---------------------------------------------------------------------------------------------
// The loop

#[test]
fn resume_is_bit_identical_to_straight_run() {
    const K: u64 = 4;
    let (x, target) = scan_and_target();
    let stop = StopSignal::manual();

    // Straight: 2K steps.
    let straight_dir = tempfile::tempdir().unwrap();
    let net = Net::new(1, HIDDEN);
    let mut straight = net.state(99);
    let outcome = run(
        &run_config(straight_dir.path(), 2 * K, K, false),
        &mut straight,
        &stop,
        &mut quiet_progress(),
        |s| train_step(&net, &x, &target, s),
        |s| validate(&net, &x, &target, s),
    )
    .unwrap();
    assert_eq!(outcome.stop, StopReason::MaxSteps);
    assert_eq!(outcome.exit(), Exit::Success);

    // Interrupted: checkpoint at K, then a failure two steps later, so the log has rows after
    // the checkpoint that the resumed run computes again.
    let resumed_dir = tempfile::tempdir().unwrap();
    let first_net = Net::new(1, HIDDEN);
    let mut first = first_net.state(99);
    let failed = run(
        &run_config(resumed_dir.path(), 2 * K, K, false),
        &mut first,
        &stop,
        &mut quiet_progress(),
        |s| {
            if s.step == K + 2 {
                return Err(prism::Error::invalid("simulated crash"));
            }
            train_step(&first_net, &x, &target, s)
        },
        |s| validate(&first_net, &x, &target, s),
    );
    assert!(failed.is_err());
    drop(first);

    // Resumed: a fresh network with other weights and another seed, restored from `last`.
    let fresh_net = Net::new(2, HIDDEN);
    let mut resumed = fresh_net.state(5);
    let outcome = run(
        &run_config(resumed_dir.path(), 2 * K, K, true),
        &mut resumed,
        &stop,
        &mut quiet_progress(),
        |s| train_step(&fresh_net, &x, &target, s),
        |s| validate(&fresh_net, &x, &target, s),
    )
    .unwrap();
    assert_eq!(outcome.step, 2 * K);

    assert_states_identical(&straight, &resumed);
    let straight_log = log_rows_without_time(straight_dir.path());
    let resumed_log = log_rows_without_time(resumed_dir.path());
    assert_eq!(
        straight_log.len(),
        2 * K as usize + 1,
        "header and one row per step"
    );
    assert_eq!(straight_log, resumed_log);
}

#[test]
fn resume_loads_last_checkpoint_into_fresh_state() {
    let (x, target) = scan_and_target();
    let dir = tempfile::tempdir().unwrap();
    let stop = StopSignal::manual();
    let net = Net::new(1, HIDDEN);
    let mut trained = net.state(3);
    run(
        &run_config(dir.path(), 3, 0, false),
        &mut trained,
        &stop,
        &mut quiet_progress(),
        |s| train_step(&net, &x, &target, s),
        |s| validate(&net, &x, &target, s),
    )
    .unwrap();

    let fresh = Net::new(9, HIDDEN);
    let mut restored = fresh.state(4);
    let loaded = checkpoint::load(dir.path(), CheckpointKind::Last, &mut restored)
        .unwrap()
        .unwrap();
    assert_eq!(loaded.step, 3);
    assert_eq!(loaded.config["patch"], PATCH);
    assert_states_identical(&trained, &restored);
}

#[test]
fn best_checkpoint_tracks_lowest_metric() {
    let (x, target) = scan_and_target();
    let dir = tempfile::tempdir().unwrap();
    let stop = StopSignal::manual();
    let net = Net::new(1, HIDDEN);
    let mut state = net.state(3);
    let mut seen = Vec::new();
    let outcome = run(
        &run_config(dir.path(), 6, 0, false),
        &mut state,
        &stop,
        &mut quiet_progress(),
        |s| train_step(&net, &x, &target, s),
        |s| {
            let metrics = validate(&net, &x, &target, s)?;
            seen.push((s.step, metrics["mse"]));
            Ok(metrics)
        },
    )
    .unwrap();

    let (best_step, best_value) = seen
        .iter()
        .copied()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    let best = outcome.best.unwrap();
    assert_eq!(best.step, best_step);
    assert_eq!(best.value, best_value);

    let fresh = Net::new(9, HIDDEN);
    let mut restored = fresh.state(4);
    let loaded = checkpoint::load(dir.path(), CheckpointKind::Best, &mut restored)
        .unwrap()
        .unwrap();
    assert_eq!(loaded.step, best_step);
}

#[test]
fn sigusr1_saves_checkpoint_and_reports_interrupted() {
    let (x, target) = scan_and_target();
    let dir = tempfile::tempdir().unwrap();
    let stop = StopSignal::install().unwrap();
    let net = Net::new(1, HIDDEN);
    let mut state = net.state(3);
    let lines = Lines::default();
    let mut progress = StepProgress::to_writer("prism-test", 100, Box::new(lines.clone()));

    let outcome = run(
        &run_config(dir.path(), 50, 0, false),
        &mut state,
        &stop,
        &mut progress,
        |s| {
            if s.step == 2 {
                signal_hook::low_level::raise(signal_hook::consts::SIGUSR1).unwrap();
            }
            train_step(&net, &x, &target, s)
        },
        |s| validate(&net, &x, &target, s),
    )
    .unwrap();

    // The step that was running when the signal came completes, then the loop stops.
    assert_eq!(outcome.step, 3);
    assert_eq!(
        outcome.stop,
        StopReason::Signal(signal_hook::consts::SIGUSR1)
    );
    assert_eq!(outcome.exit(), Exit::Interrupted);
    assert_eq!(outcome.exit().code(), 3);
    assert!(
        lines.text().contains("stopped by SIGUSR1 at step 3"),
        "{}",
        lines.text()
    );

    let fresh = Net::new(9, HIDDEN);
    let mut restored = fresh.state(4);
    let loaded = checkpoint::load(dir.path(), CheckpointKind::Last, &mut restored)
        .unwrap()
        .unwrap();
    assert_eq!(loaded.step, 3);
    assert_states_identical(&state, &restored);
}

#[test]
fn max_time_stops_with_interrupted() {
    let (x, target) = scan_and_target();
    let dir = tempfile::tempdir().unwrap();
    let net = Net::new(1, HIDDEN);
    let mut state = net.state(3);
    let mut config = run_config(dir.path(), 1000, 0, false);
    config.max_time = Some(std::time::Duration::ZERO);

    let outcome = run(
        &config,
        &mut state,
        &StopSignal::manual(),
        &mut quiet_progress(),
        |s| train_step(&net, &x, &target, s),
        |s| validate(&net, &x, &target, s),
    )
    .unwrap();
    assert_eq!(outcome.stop, StopReason::MaxTime);
    assert_eq!(outcome.step, 0);
    assert_eq!(outcome.exit(), Exit::Interrupted);
    assert!(checkpoint::exists(dir.path(), CheckpointKind::Last));
}

#[test]
fn fresh_run_rejects_existing_checkpoint() {
    let net = Net::new(1, HIDDEN);
    let dir = tempfile::tempdir().unwrap();
    let state = net.state(3);
    checkpoint::save(
        dir.path(),
        CheckpointKind::Last,
        &state,
        &serde_json::Value::Null,
    )
    .unwrap();

    let mut again = net.state(3);
    let error = run(
        &run_config(dir.path(), 2, 0, false),
        &mut again,
        &StopSignal::manual(),
        &mut quiet_progress(),
        |_| Ok(Losses::new()),
        |_| Ok(Metrics::new()),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("last.json"), "{error}");
    assert!(
        error.contains("resume it or choose another output directory"),
        "{error}"
    );
}

#[test]
fn non_finite_loss_stops_run() {
    let net = Net::new(1, HIDDEN);
    let dir = tempfile::tempdir().unwrap();
    let mut state = net.state(3);
    let error = run(
        &run_config(dir.path(), 5, 0, false),
        &mut state,
        &StopSignal::manual(),
        &mut quiet_progress(),
        |_| Ok(BTreeMap::from([("mse".to_string(), f64::NAN)])),
        |_| Ok(Metrics::new()),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("loss mse is NaN at step 1"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// Checkpoint files

fn tensor_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    files
}

#[test]
fn interrupted_save_keeps_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let net = Net::new(1, HIDDEN);
    let mut state = net.state(3);
    state.step = 2;
    checkpoint::save(
        dir.path(),
        CheckpointKind::Last,
        &state,
        &serde_json::Value::Null,
    )
    .unwrap();
    let saved_weights = bits(&net.w1);

    // Change the state and write a new checkpoint, then "kill" the process before the JSON
    // rename: forget skips every destructor, as a SIGKILL would.
    net.w1
        .set(&net.w1.as_tensor().affine(2.0, 1.0).unwrap())
        .unwrap();
    state.step = 5;
    let pending = checkpoint::prepare(
        dir.path(),
        CheckpointKind::Last,
        &state,
        &serde_json::Value::Null,
    )
    .unwrap();
    std::mem::forget(pending);
    assert_eq!(
        tensor_files(dir.path()).len(),
        2,
        "old and new tensor files"
    );

    let fresh = Net::new(9, HIDDEN);
    let mut restored = fresh.state(4);
    let loaded = checkpoint::load(dir.path(), CheckpointKind::Last, &mut restored)
        .unwrap()
        .unwrap();
    assert_eq!(loaded.step, 2);
    assert_eq!(bits(&fresh.w1), saved_weights);

    // The next save removes the orphan and the temporary JSON.
    checkpoint::save(
        dir.path(),
        CheckpointKind::Last,
        &state,
        &serde_json::Value::Null,
    )
    .unwrap();
    assert_eq!(tensor_files(dir.path()).len(), 1);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn dropped_pending_checkpoint_removes_its_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let net = Net::new(1, HIDDEN);
    let state = net.state(3);
    checkpoint::save(
        dir.path(),
        CheckpointKind::Last,
        &state,
        &serde_json::Value::Null,
    )
    .unwrap();
    let pending = checkpoint::prepare(
        dir.path(),
        CheckpointKind::Last,
        &state,
        &serde_json::Value::Null,
    )
    .unwrap();
    drop(pending);
    assert_eq!(tensor_files(dir.path()).len(), 1);
}

#[test]
fn saving_same_step_twice_keeps_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let net = Net::new(1, HIDDEN);
    let state = net.state(3);
    checkpoint::save(
        dir.path(),
        CheckpointKind::Last,
        &state,
        &serde_json::Value::Null,
    )
    .unwrap();
    checkpoint::save(
        dir.path(),
        CheckpointKind::Last,
        &state,
        &serde_json::Value::Null,
    )
    .unwrap();
    assert_eq!(tensor_files(dir.path()).len(), 1);

    let mut restored = Net::new(9, HIDDEN).state(4);
    let loaded = checkpoint::load(dir.path(), CheckpointKind::Last, &mut restored).unwrap();
    assert!(loaded.is_some());
}

#[test]
fn load_reports_shape_mismatch_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let net = Net::new(1, HIDDEN);
    checkpoint::save(
        dir.path(),
        CheckpointKind::Last,
        &net.state(3),
        &serde_json::Value::Null,
    )
    .unwrap();

    let wider = Net::new(1, HIDDEN + 1);
    let mut state = wider.state(3);
    let before = bits(&wider.w1);
    let error = checkpoint::load(dir.path(), CheckpointKind::Last, &mut state)
        .unwrap_err()
        .to_string();

    let tensor_file = tensor_files(dir.path()).pop().unwrap();
    assert!(!error.contains('\n'), "{error}");
    assert!(
        error.starts_with(&tensor_file.display().to_string()),
        "{error}"
    );
    assert!(
        error.contains("model.conv1.weight has shape [4, 1, 3, 3, 3], expected [5, 1, 3, 3, 3]"),
        "{error}"
    );
    assert!(
        error.contains("more"),
        "more mismatches than listed: {error}"
    );
    assert_eq!(
        bits(&wider.w1),
        before,
        "state unchanged after a failed load"
    );
}

#[test]
fn load_reports_missing_and_unexpected_names() {
    let dir = tempfile::tempdir().unwrap();
    let net = Net::new(1, HIDDEN);
    checkpoint::save(
        dir.path(),
        CheckpointKind::Last,
        &net.state(3),
        &serde_json::Value::Null,
    )
    .unwrap();

    let mut state = net.state(3);
    state.model[1].0 = "conv1.offset".to_string();
    let error = checkpoint::load(dir.path(), CheckpointKind::Last, &mut state)
        .unwrap_err()
        .to_string();
    assert!(error.contains("missing model.conv1.offset"), "{error}");
    assert!(error.contains("unexpected model.conv1.bias"), "{error}");
}

#[test]
fn load_without_checkpoint_returns_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = Net::new(1, HIDDEN).state(3);
    let loaded = checkpoint::load(dir.path(), CheckpointKind::Last, &mut state).unwrap();
    assert!(loaded.is_none());
}

// ---------------------------------------------------------------------------------------------
// Log

fn log_columns() -> LogColumns {
    LogColumns {
        optimizers: vec!["adamw".to_string()],
        losses: vec!["total".to_string()],
        metrics: vec!["dice".to_string()],
    }
}

fn append_rows(log: &mut TrainLog, steps: std::ops::RangeInclusive<u64>) {
    let lrs = BTreeMap::from([("adamw".to_string(), 1e-4)]);
    for step in steps {
        let losses = BTreeMap::from([("total".to_string(), 1.0 / step as f64)]);
        let metrics = BTreeMap::from([("dice".to_string(), 0.5)]);
        log.append(&LogRow {
            step,
            elapsed_s: step as f64,
            learning_rates: &lrs,
            losses: &losses,
            metrics: (step % 2 == 0).then_some(&metrics),
        })
        .unwrap();
    }
}

#[test]
fn log_resume_drops_rows_after_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE);
    let mut log = TrainLog::create(&path, log_columns()).unwrap();
    append_rows(&mut log, 1..=5);
    drop(log);

    let mut log = TrainLog::resume(&path, log_columns(), 3).unwrap();
    append_rows(&mut log, 4..=6);
    drop(log);

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "step,elapsed_s,lr.adamw,loss.total,val.dice");
    assert_eq!(lines[1], "1,1.000,0.0001,1,");
    assert_eq!(lines[2], "2,2.000,0.0001,0.5,0.5");
    let steps: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(steps, ["1", "2", "3", "4", "5", "6"]);
}

#[test]
fn log_resume_rejects_other_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE);
    let mut log = TrainLog::create(&path, log_columns()).unwrap();
    append_rows(&mut log, 1..=2);
    drop(log);

    let mut other = log_columns();
    other.losses.push("dice".to_string());
    let Err(error) = TrainLog::resume(&path, other, 2) else {
        panic!("resume accepted a log with other columns");
    };
    let error = error.to_string();
    assert!(error.contains(LOG_FILE), "{error}");
    assert!(error.contains("log columns differ"), "{error}");
}

#[test]
fn log_rejects_undeclared_loss() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE);
    let mut log = TrainLog::create(&path, log_columns()).unwrap();
    let lrs = BTreeMap::from([("adamw".to_string(), 1e-4)]);
    let losses = BTreeMap::from([("totl".to_string(), 1.0)]);
    let error = log
        .append(&LogRow {
            step: 1,
            elapsed_s: 0.0,
            learning_rates: &lrs,
            losses: &losses,
            metrics: None,
        })
        .unwrap_err()
        .to_string();
    assert!(error.contains("loss totl has no column"), "{error}");
}
