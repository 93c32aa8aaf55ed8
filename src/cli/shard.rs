//! Splitting one input list across parallel jobs (cluster array jobs, several GPUs).
//!
//! A shard is `I/N`: job `I` (0-based, like nnU-Net v2's `-part_id`) of `N`
//! (`-num_parts`). It comes from `--shard I/N` or, when that flag is absent,
//! from a SLURM job array. Input number `n` of the expanded list (0-based) goes
//! to shard `n mod N`, so the shards are disjoint, their union is the whole list,
//! and their sizes differ by at most one. Every job must expand the same inputs
//! the same way: ids are made unique over the whole list before it is split, so
//! a scan keeps its id whichever shard takes it.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// Job `index` of `count` (0-based, `index < count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Checks `index < count` (which also rules out `count == 0`).
    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if index >= count {
            return Err(Error::invalid(format!(
                "invalid shard {index}/{count}: the index is 0-based and must be below the count (0 to {})",
                count.saturating_sub(1)
            )));
        }
        Ok(Shard { index, count })
    }

    /// Returns whether the input at `position` in the full list belongs to this shard.
    pub fn contains(&self, position: usize) -> bool {
        position % self.count == self.index
    }

    /// Returns this shard's items, in their list order.
    pub fn select<T: Clone>(&self, items: &[T]) -> Vec<T> {
        items
            .iter()
            .enumerate()
            .filter(|(position, _)| self.contains(*position))
            .map(|(_, item)| item.clone())
            .collect()
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = Error;

    /// Parses `I/N`.
    fn from_str(text: &str) -> Result<Shard> {
        let invalid = || {
            Error::invalid(format!(
                "invalid shard '{text}': expected I/N with 0 <= I < N, for example 0/4"
            ))
        };
        let (index, count) = text.split_once('/').ok_or_else(invalid)?;
        let index = index.trim().parse::<usize>().map_err(|_| invalid())?;
        let count = count.trim().parse::<usize>().map_err(|_| invalid())?;
        Shard::new(index, count)
    }
}

/// Origin of the shard in effect, for the log line that announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardSource {
    Flag,
    Slurm,
}

/// The outcome of [`resolve_shard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardChoice {
    /// `None`: this job processes every input.
    pub shard: Option<(Shard, ShardSource)>,
    /// A message for the log when the environment looked like a job array but
    /// could not be used.
    pub warning: Option<String>,
}

/// Picks the shard: `--shard` when given, otherwise a SLURM job array.
///
/// `lookup` reads an environment variable (pass `|name| std::env::var(name).ok()`),
/// so tests can supply their own. `--shard 0/1` processes every input even
/// inside an array job.
pub fn resolve_shard(
    flag: Option<Shard>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<ShardChoice> {
    if let Some(shard) = flag {
        return Ok(ShardChoice {
            shard: Some((shard, ShardSource::Flag)),
            warning: None,
        });
    }
    shard_from_slurm(lookup)
}

/// Reads `SLURM_ARRAY_TASK_ID`, `SLURM_ARRAY_TASK_COUNT`, `SLURM_ARRAY_TASK_MIN`
/// and `SLURM_ARRAY_TASK_STEP` (all set by `sbatch --array`).
///
/// The index is `(ID - MIN) / STEP`, so arrays starting at 1 (`--array=1-8`) or
/// with a step (`--array=0-14:2`) map onto `0..COUNT`. Arrays with gaps
/// (`--array=1,4,9`) do not map onto consecutive shards and are rejected with a
/// pointer to `--shard`. A task ID without a count means no sharding, with a warning.
pub fn shard_from_slurm(lookup: impl Fn(&str) -> Option<String>) -> Result<ShardChoice> {
    let Some(task_id) = lookup("SLURM_ARRAY_TASK_ID") else {
        return Ok(ShardChoice {
            shard: None,
            warning: None,
        });
    };
    let Some(count) = lookup("SLURM_ARRAY_TASK_COUNT") else {
        return Ok(ShardChoice {
            shard: None,
            warning: Some(format!(
                "SLURM_ARRAY_TASK_ID={task_id} is set but SLURM_ARRAY_TASK_COUNT is not, so this job \
                 processes every input; pass --shard I/N to split the inputs"
            )),
        });
    };

    let task_id = parse_slurm_number("SLURM_ARRAY_TASK_ID", &task_id)?;
    let count = parse_slurm_number("SLURM_ARRAY_TASK_COUNT", &count)?;
    let min = match lookup("SLURM_ARRAY_TASK_MIN") {
        Some(min) => parse_slurm_number("SLURM_ARRAY_TASK_MIN", &min)?,
        None => 0,
    };
    let step = match lookup("SLURM_ARRAY_TASK_STEP") {
        Some(step) => parse_slurm_number("SLURM_ARRAY_TASK_STEP", &step)?.max(1),
        None => 1,
    };

    let offset = task_id.checked_sub(min).filter(|offset| offset % step == 0);
    let index = offset
        .map(|offset| offset / step)
        .filter(|&index| index < count);
    let Some(index) = index else {
        return Err(Error::invalid(format!(
            "SLURM array task {task_id} (min {min}, step {step}, count {count}) does not map onto \
             shards 0 to {} (arrays with gaps, such as --array=1,4,9, cannot be split this way); \
             pass --shard I/N explicitly",
            count.saturating_sub(1)
        )));
    };
    let shard = Shard::new(index, count)?;
    Ok(ShardChoice {
        shard: Some((shard, ShardSource::Slurm)),
        warning: None,
    })
}

fn parse_slurm_number(name: &str, value: &str) -> Result<usize> {
    value
        .trim()
        .parse::<usize>()
        .map_err(|_| Error::invalid(format!("{name}={value} is not a non-negative integer")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_parses_index_and_count() {
        let shard: Shard = "2/5".parse().unwrap();
        assert_eq!(shard, Shard { index: 2, count: 5 });
    }

    #[test]
    fn shard_rejects_out_of_range_and_malformed() {
        for text in ["5/5", "0/0", "-1/4", "1", "a/b", "1/2/3", ""] {
            assert!(text.parse::<Shard>().is_err(), "{text}");
        }
    }

    #[test]
    fn shard_displays_as_flag_value() {
        assert_eq!(Shard { index: 1, count: 3 }.to_string(), "1/3");
    }
}
