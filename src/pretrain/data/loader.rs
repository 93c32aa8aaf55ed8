//! Batches for pretraining, made ahead of the training loop on background threads, and
//! the split of a manifest into training and validation subjects.
//!
//! Reproducibility: the batch of training step `s` depends only on the seed and `s`.
//! Item `b` draws its entry, crop, axis augmentation and synthetic contrast from
//! [`TrainRng::item_rng`]`(s, b)`, and the corruption of the whole batch from
//! `item_rng(s, CORRUPTION_ITEM)`. So the number of worker threads does not change any
//! batch, and a run resumed at step `s` gets the batches it would have got.
//!
//! Threads: worker `w` of `W` makes the batches of steps `first + w`, `first + w + W`, ...
//! and sends them through its own bounded channel; [`Loader::next`] reads the channels
//! in turn, so batches arrive in step order without a reordering buffer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use ndarray::Array4;
use rand::Rng;
use sha2::{Digest, Sha256};

use super::corrupt::{corrupt, stack_samples, CorruptConfig};
use super::dataset::Dataset;
use super::manifest::ManifestEntry;
use crate::error::{Error, Result};
use crate::train::TrainRng;

/// Item number of the random stream that corrupts a batch (batch items are 0..B).
pub const CORRUPTION_ITEM: u64 = u64::MAX;

/// Step number of the random streams of the validation batches; no training run reaches it.
pub const VALIDATION_STEP: u64 = u64::MAX;

/// Settings of a [`Loader`].
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Crop size in voxels along i, j, k.
    pub roi: [usize; 3],
    /// Background threads making batches.
    pub workers: usize,
    /// Batches made ahead of the consumer, over all workers.
    pub prefetch: usize,
    pub seed: u64,
    pub corrupt: CorruptConfig,
}

impl LoaderConfig {
    /// Settings with 2 workers, 4 batches made ahead and the original corruption.
    pub fn new(batch_size: usize, roi: [usize; 3], seed: u64) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            roi,
            workers: 2,
            prefetch: 4,
            seed,
            corrupt: CorruptConfig::default(),
        }
    }

    /// Fails on a zero batch size, crop side, worker count or prefetch count.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.roi.contains(&0) || self.workers == 0 || self.prefetch == 0
        {
            return Err(Error::invalid(format!(
                "batch size {}, crop {:?}, {} workers and prefetch {} must all be positive",
                self.batch_size, self.roi, self.workers, self.prefetch
            )));
        }
        self.corrupt.validate()
    }
}

/// One batch: clean crops (the target), their corrupted copies (the input) and the
/// labels of the disentanglement heads.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `[batch, i, j, k]`, z-scored.
    pub clean: Array4<f32>,
    /// `[batch, i, j, k]`: `clean` after [`super::corrupt::corrupt_batch`].
    pub corrupted: Array4<f32>,
    /// Per item: TR (ms), TE (ms), flip angle (degrees); 0 where missing.
    pub seq_params: Vec<[f32; 3]>,
    /// Per item: whether each of `seq_params` is known.
    pub seq_mask: Vec<[bool; 3]>,
    /// Per item: [`super::manifest::BodyPart::index`].
    pub body_part: Vec<u32>,
    /// Per item: index of the entry in the dataset.
    pub entries: Vec<usize>,
    /// Per item: the entry's `path` column, for logs.
    pub ids: Vec<String>,
}

/// A [`Batch`] as candle tensors on one device.
#[derive(Debug, Clone)]
pub struct BatchTensors {
    /// `[batch, 1, D, H, W]` f32, with D, H, W the voxel axes i, j, k.
    pub clean: Tensor,
    /// `[batch, 1, D, H, W]` f32.
    pub corrupted: Tensor,
    /// `[batch, 3]` f32.
    pub seq_params: Tensor,
    /// `[batch, 3]` f32, 1 where the parameter is known and 0 where missing.
    pub seq_mask: Tensor,
    /// `[batch]` u32.
    pub body_part: Tensor,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Copies the batch into tensors on `device`.
    pub fn to_tensors(&self, device: &Device) -> Result<BatchTensors> {
        let n = self.len();
        let volume = |array: &Array4<f32>| -> Result<Tensor> {
            let (b, d, h, w) = array.dim();
            let values: Vec<f32> = array.as_standard_layout().iter().copied().collect();
            Ok(Tensor::from_vec(values, (b, 1, d, h, w), device)?)
        };
        let params: Vec<f32> = self.seq_params.iter().flatten().copied().collect();
        let mask: Vec<f32> = self
            .seq_mask
            .iter()
            .flatten()
            .map(|known| f32::from(u8::from(*known)))
            .collect();

        Ok(BatchTensors {
            clean: volume(&self.clean)?,
            corrupted: volume(&self.corrupted)?,
            seq_params: Tensor::from_vec(params, (n, 3), device)?,
            seq_mask: Tensor::from_vec(mask, (n, 3), device)?,
            body_part: Tensor::from_vec(self.body_part.clone(), n, device)?,
        })
    }
}

/// Makes the training batch of `step`; it depends only on the dataset, `config.seed`,
/// `config.batch_size`, `config.roi`, `config.corrupt` and `step`.
pub fn make_batch(dataset: &Dataset, config: &LoaderConfig, step: u64) -> Result<Batch> {
    let streams = TrainRng::new(config.seed);
    let mut entries = Vec::with_capacity(config.batch_size);
    let mut samples = Vec::with_capacity(config.batch_size);
    for item in 0..config.batch_size {
        let mut rng = streams.item_rng(step, item as u64);
        let index = rng.random_range(0..dataset.len());
        samples.push(dataset.train_sample(index, config.roi, &mut rng));
        entries.push(index);
    }

    let clean = stack_samples(&samples)?;
    drop(samples);
    let corrupted = corrupt(
        &clean,
        &config.corrupt,
        &mut streams.item_rng(step, CORRUPTION_ITEM),
    );
    Ok(assemble(dataset, entries, clean, corrupted))
}

/// Makes the fixed validation batches: every entry of `dataset` in order, centre-cropped
/// and unaugmented, `batch_size` per batch (the last one may be smaller). Label and
/// tissue entries are rendered, and batches corrupted, with random streams of `seed`
/// that no training step uses. So every call with the same arguments returns the same
/// batches.
pub fn validation_batches(
    dataset: &Dataset,
    batch_size: usize,
    roi: [usize; 3],
    corruption: &CorruptConfig,
    seed: u64,
) -> Result<Vec<Batch>> {
    if batch_size == 0 || roi.contains(&0) {
        return Err(Error::invalid(format!(
            "validation batch size {batch_size} and crop {roi:?} must be positive"
        )));
    }
    corruption.validate()?;
    let streams = TrainRng::new(seed);
    let indices: Vec<usize> = (0..dataset.len()).collect();

    let mut batches = Vec::new();
    for (number, chunk) in indices.chunks(batch_size).enumerate() {
        let samples: Vec<_> = chunk
            .iter()
            .map(|index| {
                dataset.validation_sample(
                    *index,
                    roi,
                    &mut streams.item_rng(VALIDATION_STEP, *index as u64),
                )
            })
            .collect();
        let clean = stack_samples(&samples)?;
        let mut rng = streams.item_rng(VALIDATION_STEP, CORRUPTION_ITEM - 1 - number as u64);
        let corrupted = corrupt(&clean, corruption, &mut rng);
        batches.push(assemble(dataset, chunk.to_vec(), clean, corrupted));
    }
    Ok(batches)
}

fn assemble(
    dataset: &Dataset,
    entries: Vec<usize>,
    clean: Array4<f32>,
    corrupted: Array4<f32>,
) -> Batch {
    let rows: Vec<&ManifestEntry> = entries.iter().map(|i| &dataset.entries()[*i]).collect();
    let values = |e: &ManifestEntry| [e.tr_ms, e.te_ms, e.flip_deg];
    Batch {
        clean,
        corrupted,
        seq_params: rows
            .iter()
            .map(|e| values(e).map(|v| v.unwrap_or(0.0) as f32))
            .collect(),
        seq_mask: rows
            .iter()
            .map(|e| values(e).map(|v| v.is_some()))
            .collect(),
        body_part: rows.iter().map(|e| e.body_part.index()).collect(),
        ids: rows.iter().map(|e| e.path_text()).collect(),
        entries,
    }
}

/// Training batches made ahead on background threads; dropping it stops the threads.
pub struct Loader {
    receivers: Vec<Receiver<Result<Batch>>>,
    workers: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    first_step: u64,
    next_step: u64,
    waited: Duration,
}

impl Loader {
    /// Starts the worker threads, which make batches from step `first_step` on.
    pub fn start(dataset: Arc<Dataset>, config: LoaderConfig, first_step: u64) -> Result<Loader> {
        config.validate()?;
        let stop = Arc::new(AtomicBool::new(false));
        let capacity = config.prefetch.div_ceil(config.workers);
        let config = Arc::new(config);

        let mut receivers = Vec::with_capacity(config.workers);
        let mut workers = Vec::with_capacity(config.workers);
        for worker in 0..config.workers {
            let (sender, receiver) = sync_channel(capacity);
            let job = WorkerJob {
                dataset: Arc::clone(&dataset),
                config: Arc::clone(&config),
                stop: Arc::clone(&stop),
                first: first_step + worker as u64,
                stride: config.workers as u64,
            };
            let handle = std::thread::Builder::new()
                .name(format!("prism-loader-{worker}"))
                .spawn(move || job.run(sender))
                .map_err(|e| Error::invalid(format!("cannot start a loader thread: {e}")))?;
            receivers.push(receiver);
            workers.push(handle);
        }

        Ok(Loader {
            receivers,
            workers,
            stop,
            first_step,
            next_step: first_step,
            waited: Duration::ZERO,
        })
    }

    /// Returns the next step number and its batch, waiting for it if it is not ready.
    /// Fails with the error of a batch that could not be made. The worker that made it
    /// stops then, so later calls for its steps fail too.
    // Not an `Iterator`: the stream never ends, and every item can fail.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<(u64, Batch)> {
        let step = self.next_step;
        let worker = ((step - self.first_step) % self.receivers.len() as u64) as usize;

        let started = Instant::now();
        let received = self.receivers[worker].recv();
        self.waited += started.elapsed();

        let batch = received.map_err(|_| {
            Error::invalid(format!(
                "loader thread {worker} stopped before step {step}; an earlier batch failed"
            ))
        })??;
        self.next_step += 1;
        Ok((step, batch))
    }

    /// Total time [`Loader::next`] spent waiting for batches. Near zero means the
    /// loader kept ahead of the consumer.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Step of the batch the next call to [`Loader::next`] returns.
    pub fn next_step(&self) -> u64 {
        self.next_step
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channels ends a worker blocked on a full channel; the flag ends
        // one between batches.
        self.stop.store(true, Ordering::Relaxed);
        self.receivers.clear();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// The steps one worker thread makes.
struct WorkerJob {
    dataset: Arc<Dataset>,
    config: Arc<LoaderConfig>,
    stop: Arc<AtomicBool>,
    first: u64,
    stride: u64,
}

impl WorkerJob {
    fn run(self, sender: SyncSender<Result<Batch>>) {
        let mut step = self.first;
        while !self.stop.load(Ordering::Relaxed) {
            let batch = make_batch(&self.dataset, &self.config, step);
            let failed = batch.is_err();
            if sender.send(batch).is_err() || failed {
                return;
            }
            step += self.stride;
        }
    }
}

/// How many subjects [`split_by_subject`] holds out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Holdout {
    /// This fraction of the subjects, rounded, at least 1 when positive and at most all
    /// but one.
    Fraction(f64),
    /// This many subjects.
    Count(usize),
}

/// Training and validation entries.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub train: Vec<ManifestEntry>,
    pub validation: Vec<ManifestEntry>,
}

/// Holds out whole subjects for validation, so no subject is on both sides.
///
/// Subjects are ranked by SHA-256 of `seed` and the subject id, so the choice does not
/// depend on the entry order, and the first ones go to validation. Entries keep their
/// order within each side. Fails on a fraction outside [0, 1) or a count that leaves
/// no training subject.
pub fn split_by_subject(entries: &[ManifestEntry], holdout: Holdout, seed: u64) -> Result<Split> {
    let mut subjects: Vec<&str> = entries.iter().map(|e| e.subject.as_str()).collect();
    subjects.sort_unstable();
    subjects.dedup();
    let n = subjects.len();

    let count = match holdout {
        Holdout::Fraction(f) if !(0.0..1.0).contains(&f) => {
            return Err(Error::invalid(format!(
                "validation fraction {f} is invalid; give a value in [0, 1)"
            )));
        }
        Holdout::Fraction(f) if f > 0.0 && n >= 2 => {
            ((n as f64 * f).round() as usize).clamp(1, n - 1)
        }
        Holdout::Fraction(_) => 0,
        Holdout::Count(c) if c > 0 && c >= n => {
            return Err(Error::invalid(format!(
                "{c} validation subjects requested, but there are {n}; hold out fewer so that training keeps one"
            )));
        }
        Holdout::Count(c) => c,
    };

    let mut ranked: Vec<([u8; 32], &str)> = subjects
        .iter()
        .map(|s| (subject_rank(seed, s), *s))
        .collect();
    ranked.sort_unstable();
    let held_out: std::collections::HashSet<&str> =
        ranked[..count].iter().map(|(_, s)| *s).collect();

    let (validation, train) = entries
        .iter()
        .cloned()
        .partition(|e| held_out.contains(e.subject.as_str()));
    Ok(Split { train, validation })
}

fn subject_rank(seed: u64, subject: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"prism-pretrain subject split");
    hasher.update(seed.to_le_bytes());
    hasher.update(subject.as_bytes());
    hasher.finalize().into()
}
