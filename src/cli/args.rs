//! Command-line options shared by every batch tool; each tool flattens
//! [`BatchArgs`] into its own clap parser with `#[command(flatten)]`.
//!
//! Thread count: candle-core 0.11.1 sizes its CPU parallelism from environment
//! variables, not from an API. `candle_core::utils::get_num_threads` (the thread
//! count of matrix products) reads `RAYON_NUM_THREADS` on every call, and the
//! thread pools candle builds on first use (element-wise kernels and
//! `Device::with_context`) read `CANDLE_NUM_THREADS`, falling back to
//! `RAYON_NUM_THREADS`. Without either, candle uses the number of physical cores
//! and rayon the number of logical CPUs. `--threads N` therefore sets both
//! variables and builds rayon's global pool with N threads ([`configure_threads`]).

use std::num::NonZeroUsize;
use std::path::PathBuf;

use crate::cli::shard::Shard;
use crate::device::DeviceSpec;
use crate::{Error, Result};

/// Options every `prism-*` batch tool accepts.
///
/// The `about = None` keeps this doc comment out of the tool's `--help`.
#[derive(Debug, Clone, clap::Args)]
#[command(about = None, long_about = None)]
pub struct BatchArgs {
    /// Input scans. A NIfTI file is .nii or .nii.gz, and :N appended takes volume N
    /// (0-based) of a 4-D file. A directory is searched recursively, hidden entries
    /// skipped, for NIfTI files and DICOM series (one input per series). @FILE lists inputs one per line, with # comments and paths relative
    /// to the list file. - reads such a list from standard input
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<String>,

    /// Write the CSV to FILE instead of standard output. Rows collect in FILE.partial
    /// while running; FILE appears when the run ends with every input done. A rerun skips inputs already in
    /// FILE or FILE.partial
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Ignore the rows of an earlier run in FILE and FILE.partial and compute every input again
    #[arg(long)]
    pub overwrite: bool,

    /// Process only shard I of N (0-based, 0 <= I < N): input number n goes to shard
    /// n mod N. Without this option a SLURM job array (SLURM_ARRAY_TASK_ID,
    /// SLURM_ARRAY_TASK_COUNT, SLURM_ARRAY_TASK_MIN) selects the shard; 0/1 processes
    /// every input
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,

    /// Continue after an input fails; the exit status is then 1 if any input failed.
    /// Without it the first failure stops the run (rows written so far are kept)
    #[arg(long)]
    pub keep_going: bool,

    /// Print only errors on standard error (no progress, no summary)
    #[arg(short, long)]
    pub quiet: bool,

    /// Number of CPU threads for computation (sets RAYON_NUM_THREADS and
    /// CANDLE_NUM_THREADS). Default: RAYON_NUM_THREADS if set, else the number of
    /// physical cores for candle's kernels and of logical CPUs for rayon
    #[arg(long, value_name = "N")]
    pub threads: Option<NonZeroUsize>,

    /// Compute device: cpu, cuda (GPU 0) or cuda:N (GPU N, 0-based). CUDA needs a
    /// binary built with the cuda feature
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = parse_device_spec, value_hint = clap::ValueHint::Other)]
    pub device: DeviceSpec,
}

fn parse_shard(text: &str) -> std::result::Result<Shard, String> {
    text.parse().map_err(|e: Error| e.to_string())
}

pub fn parse_device_spec(text: &str) -> std::result::Result<DeviceSpec, String> {
    text.parse().map_err(|e: Error| e.to_string())
}

/// Applies `--threads`: sets `RAYON_NUM_THREADS` and `CANDLE_NUM_THREADS` to N and
/// builds rayon's global pool with N threads. Does nothing for `None`.
///
/// Call it first thing in `main`, before any other thread exists: setting
/// environment variables while another thread reads them is a data race in the C
/// library. Fails when rayon's global pool was already built.
pub fn configure_threads(threads: Option<NonZeroUsize>) -> Result<()> {
    let Some(threads) = threads else {
        return Ok(());
    };
    let count = threads.get().to_string();
    // Sound only while single-threaded, as the contract above requires.
    std::env::set_var("RAYON_NUM_THREADS", &count);
    std::env::set_var("CANDLE_NUM_THREADS", &count);

    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.get())
        .build_global()
        .map_err(|e| {
            Error::invalid(format!(
                "--threads {threads}: cannot configure the thread pool: {e}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Tool {
        #[command(flatten)]
        batch: BatchArgs,
    }

    #[test]
    fn batch_args_parse_every_option() {
        let tool = Tool::try_parse_from([
            "tool",
            "a.nii.gz",
            "dir",
            "-o",
            "out.csv",
            "--overwrite",
            "--shard",
            "1/4",
            "--keep-going",
            "--quiet",
            "--threads",
            "3",
            "--device",
            "cuda:1",
        ])
        .unwrap();
        let args = tool.batch;
        assert_eq!(args.inputs, ["a.nii.gz", "dir"]);
        assert_eq!(args.output, Some(PathBuf::from("out.csv")));
        assert!(args.overwrite);
        assert_eq!(args.shard, Some(Shard { index: 1, count: 4 }));
        assert!(args.keep_going);
        assert!(args.quiet);
        assert_eq!(args.threads.map(NonZeroUsize::get), Some(3));
        assert_eq!(args.device, DeviceSpec::Cuda(1));
    }

    #[test]
    fn batch_args_defaults() {
        let args = Tool::try_parse_from(["tool", "a.nii"]).unwrap().batch;
        assert_eq!(args.output, None);
        assert_eq!(args.shard, None);
        assert_eq!(args.threads, None);
        assert_eq!(args.device, DeviceSpec::Cpu);
        assert!(!args.overwrite);
        assert!(!args.keep_going);
        assert!(!args.quiet);
    }

    #[test]
    fn batch_args_reject_bad_values_with_usage_code() {
        let cases: [&[&str]; 4] = [
            &["tool"],
            &["tool", "a.nii", "--shard", "4/4"],
            &["tool", "a.nii", "--threads", "0"],
            &["tool", "a.nii", "--device", "gpu"],
        ];
        for argv in cases {
            let error = Tool::try_parse_from(argv).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{argv:?}");
        }
    }
}
