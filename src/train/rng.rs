//! The seeded random source of a training run, whose full state goes into checkpoints.
//!
//! [`TrainRng`] is a ChaCha8 stream (rand_chacha 0.9) drawn from in order by the training loop.
//! Work spread over threads (loading and augmenting the items of a batch) takes its randomness
//! from [`TrainRng::item_rng`] instead. That is an independent stream determined by (seed,
//! step, item) alone, so the results do not depend on the order or number of threads.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Saved state of a [`TrainRng`]: the run's seed and the exact position of its stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    pub seed: u64,
    /// rand_chacha's own serialization: key, stream id and word position.
    pub stream: ChaCha8Rng,
}

/// A seeded, checkpointable random source; implements `rand::RngCore`, so `rand::Rng`'s
/// methods apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainRng {
    seed: u64,
    stream: ChaCha8Rng,
}

impl TrainRng {
    pub fn new(seed: u64) -> TrainRng {
        TrainRng {
            seed,
            stream: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn state(&self) -> RngState {
        RngState {
            seed: self.seed,
            stream: self.stream.clone(),
        }
    }

    pub fn from_state(state: RngState) -> TrainRng {
        TrainRng {
            seed: state.seed,
            stream: state.stream,
        }
    }

    /// Returns the random stream of one item of one step. Its key is SHA-256 of the seed,
    /// step and item, so every (seed, step, item) has its own stream, independent of this
    /// source's position and of the other items.
    pub fn item_rng(&self, step: u64, item: u64) -> ChaCha8Rng {
        let mut hasher = Sha256::new();
        hasher.update(b"prism-train item stream");
        hasher.update(self.seed.to_le_bytes());
        hasher.update(step.to_le_bytes());
        hasher.update(item.to_le_bytes());
        ChaCha8Rng::from_seed(hasher.finalize().into())
    }
}

impl RngCore for TrainRng {
    fn next_u32(&mut self) -> u32 {
        self.stream.next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.stream.next_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.stream.fill_bytes(dest)
    }
}
