//! Plumbing shared by the `prism-*` command-line tools: which inputs to process,
//! which share of them this job takes, where the rows go, how progress is shown
//! and which exit code the process ends with.
//!
//! A tool flattens [`args::BatchArgs`] into its clap parser and expands the inputs
//! with [`inputs::expand_inputs`]. It keeps its shard ([`shard::resolve_shard`]),
//! opens an [`output::RowSink`], and passes both to [`batch::run_batch`] with a
//! closure that turns one input into one CSV row. [`Exit::from_result`] then maps
//! the outcome to the process exit code.
//!
//! The behaviour follows ripgrep (a closed stdout pipe is a normal end) and
//! nnU-Net v2 (0-based `part_id/num_parts` sharding, skipping finished cases).

pub mod args;
pub mod batch;
pub mod convert_cmd;
pub mod docs;
pub mod embed_cmd;
pub mod pretrain_cmd;
pub mod inputs;
pub mod output;
pub mod progress;
pub mod provenance;
pub mod resumable;
pub mod seg_cmd;
pub mod seg_eval;
pub mod seg_train;
pub mod shard;
pub mod weights_cmd;

pub use progress::Summary;

/// The exit codes of every `prism-*` tool, documented here and nowhere else.
///
/// | code | meaning |
/// |------|---------|
/// | 0 | success: every selected input was processed or skipped (already in the output file), or the reader of stdout closed the pipe |
/// | 1 | one or more inputs failed; with `--keep-going` the others were completed, without it the run stopped at the first failure |
/// | 2 | invalid usage or configuration: bad arguments, missing weights, an unusable output file; clap's own usage errors also exit 2 |
/// | 3 | the run was stopped with work left undone: a training run stopped by a signal (SIGTERM, SIGUSR1, SIGINT) or by its time limit exits 3 after saving its checkpoint, so a job script can requeue it (a second SIGINT during that save ends the process at once with status 130) |
///
/// `--help` and `--version` exit 0 through clap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Success = 0,
    ItemsFailed = 1,
    Usage = 2,
    Interrupted = 3,
}

impl Exit {
    /// Returns the numeric process exit status.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Maps the counts of a finished run to its exit code: 1 when any input failed, else 0.
    pub fn from_summary(summary: &Summary) -> Exit {
        if summary.failed > 0 {
            Exit::ItemsFailed
        } else {
            Exit::Success
        }
    }

    /// Maps the outcome of a whole run to its exit code.
    ///
    /// An `Err` is a failure before or around the per-input work (arguments,
    /// configuration, weights, the output file), so it maps to 2. Failures of
    /// single inputs are counted in the [`Summary`] instead and map to 1.
    pub fn from_result(result: &crate::Result<Summary>) -> Exit {
        match result {
            Ok(summary) => Exit::from_summary(summary),
            Err(_) => Exit::Usage,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_match_documented_numbers() {
        assert_eq!(Exit::Success.code(), 0);
        assert_eq!(Exit::ItemsFailed.code(), 1);
        assert_eq!(Exit::Usage.code(), 2);
        assert_eq!(Exit::Interrupted.code(), 3);
    }

    #[test]
    fn exit_from_summary_counts_failures_only() {
        let clean = Summary {
            done: 3,
            failed: 0,
            skipped: 2,
        };
        let failed = Summary {
            done: 3,
            failed: 1,
            skipped: 0,
        };
        let empty = Summary {
            done: 0,
            failed: 0,
            skipped: 0,
        };
        assert_eq!(Exit::from_summary(&clean), Exit::Success);
        assert_eq!(Exit::from_summary(&failed), Exit::ItemsFailed);
        assert_eq!(Exit::from_summary(&empty), Exit::Success);
    }

    #[test]
    fn exit_from_result_maps_error_to_usage() {
        let error: crate::Result<Summary> = Err(crate::Error::invalid("missing weights"));
        assert_eq!(Exit::from_result(&error), Exit::Usage);
    }

    #[test]
    fn exit_matches_clap_usage_code() {
        let error = clap::Command::new("tool")
            .try_get_matches_from(["tool", "--no-such-flag"])
            .err();
        assert!(error.is_some());
        let code = error.map(|e| e.exit_code()).unwrap_or(-1);
        assert_eq!(code, i32::from(Exit::Usage.code()));
    }
}
