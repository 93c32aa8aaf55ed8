//! Progress display and log lines of a batch run, all on stderr (stdout carries
//! the CSV rows).
//!
//! - stderr is a terminal: an indicatif progress bar (position/total, elapsed,
//!   ETA, current id) with done items, errors, warnings and notes printed above
//!   it. Skipped items only advance the bar, because a resumed run can skip
//!   thousands.
//! - otherwise (a log file, a cluster job): one plain line per event,
//!   `prism-embed: [3/40] done sub-01 (2.1 s)`.
//! - `--quiet`: errors only.
//!
//! Errors always print as one line, `prism-embed: error: PATH: message`. The
//! tool name is a parameter.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::Error;

/// Counts of a finished run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub done: usize,
    pub failed: usize,
    pub skipped: usize,
}

enum Display {
    Bar(ProgressBar),
    Lines(Box<dyn Write + Send>),
}

/// Reports the progress of one batch run; see the module documentation.
pub struct Reporter {
    tool: String,
    quiet: bool,
    display: Display,
    total: usize,
    summary: Summary,
    started: HashMap<String, Instant>,
    run_start: Instant,
}

impl Reporter {
    /// Creates a reporter on stderr: a progress bar when stderr is a terminal
    /// and `quiet` is off, plain lines otherwise.
    pub fn new(tool: &str, quiet: bool) -> Reporter {
        let display = if std::io::stderr().is_terminal() && !quiet {
            Display::Bar(new_bar(tool))
        } else {
            Display::Lines(Box::new(std::io::stderr()))
        };
        Reporter::with_display(tool, quiet, display)
    }

    /// Creates a reporter that writes plain lines to `writer`.
    pub fn to_writer(tool: &str, quiet: bool, writer: Box<dyn Write + Send>) -> Reporter {
        Reporter::with_display(tool, quiet, Display::Lines(writer))
    }

    fn with_display(tool: &str, quiet: bool, display: Display) -> Reporter {
        Reporter {
            tool: tool.to_string(),
            quiet,
            display,
            total: 0,
            summary: Summary::default(),
            started: HashMap::new(),
            run_start: Instant::now(),
        }
    }

    /// Begins a run over `total` items.
    pub fn start(&mut self, total: usize) {
        self.total = total;
        self.run_start = Instant::now();
        if let Display::Bar(bar) = &self.display {
            bar.set_length(total as u64);
            bar.reset_elapsed();
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.enable_steady_tick(Duration::from_millis(500));
        }
    }

    pub fn item_started(&mut self, id: &str) {
        self.started.insert(id.to_string(), Instant::now());
        let position = self.finished_count() + 1;
        match &self.display {
            Display::Bar(bar) => bar.set_message(id.to_string()),
            Display::Lines(_) => {
                let line = format!("{}: [{position}/{}] started {id}", self.tool, self.total);
                self.note(&line);
            }
        }
    }

    pub fn item_done(&mut self, id: &str) {
        self.summary.done += 1;
        let seconds = self
            .started
            .remove(id)
            .map(|start| format!(" ({})", format_duration(start.elapsed())))
            .unwrap_or_default();
        let line = format!(
            "{}: [{}/{}] done {id}{seconds}",
            self.tool,
            self.finished_count(),
            self.total
        );
        self.note(&line);
        self.advance();
    }

    /// Reports a failed item as `tool: error: PATH: message`. When the error
    /// already names `path` (a file error on the input itself), it is not repeated.
    pub fn item_failed(&mut self, id: &str, path: &Path, error: &Error) {
        self.summary.failed += 1;
        self.started.remove(id);
        let line = error_line(&self.tool, path, error);
        self.print_error(&line);
        self.advance();
    }

    pub fn item_skipped(&mut self, id: &str, reason: &str) {
        self.summary.skipped += 1;
        if let Display::Lines(_) = self.display {
            let line = format!(
                "{}: [{}/{}] skipped {id} ({reason})",
                self.tool,
                self.finished_count(),
                self.total
            );
            self.note(&line);
        }
        self.advance();
    }

    /// Prints an informational line (not with `--quiet`).
    pub fn info(&mut self, message: &str) {
        let line = format!("{}: {message}", self.tool);
        self.note(&line);
    }

    /// Prints `tool: warning: message` (not with `--quiet`).
    pub fn warn(&mut self, message: &str) {
        let line = format!("{}: warning: {message}", self.tool);
        self.note(&line);
    }

    /// Prints `tool: error: message`, also with `--quiet`.
    pub fn error(&mut self, message: &str) {
        let line = format!("{}: error: {message}", self.tool);
        self.print_error(&line);
    }

    /// Returns how many items have failed so far.
    pub fn failed_so_far(&self) -> usize {
        self.summary.failed
    }

    /// Ends the run: removes the bar, prints the counts and elapsed time (not
    /// with `--quiet`) and returns the counts.
    pub fn finish(&mut self) -> Summary {
        if let Display::Bar(bar) = &self.display {
            bar.finish_and_clear();
        }
        let summary = self.summary;
        let line = format!(
            "{}: {} done, {} failed, {} skipped in {}",
            self.tool,
            summary.done,
            summary.failed,
            summary.skipped,
            format_duration(self.run_start.elapsed())
        );
        self.note(&line);
        summary
    }

    fn finished_count(&self) -> usize {
        self.summary.done + self.summary.failed + self.summary.skipped
    }

    fn advance(&self) {
        if let Display::Bar(bar) = &self.display {
            bar.inc(1);
        }
    }

    fn note(&mut self, line: &str) {
        if !self.quiet {
            self.print(line);
        }
    }

    fn print_error(&mut self, line: &str) {
        self.print(line);
    }

    /// Writes one line. Failures to write the log are ignored, because stderr
    /// is the last place left to report them.
    fn print(&mut self, line: &str) {
        match &mut self.display {
            Display::Bar(bar) => bar.suspend(|| {
                let _ = writeln!(std::io::stderr(), "{line}");
            }),
            Display::Lines(writer) => {
                let _ = writeln!(writer, "{line}");
                let _ = writer.flush();
            }
        }
    }
}

/// Formats `tool: error: PATH: message`. The error's own path leads when it is
/// `path` itself, so the path is not printed twice.
pub fn error_line(tool: &str, path: &Path, error: &Error) -> String {
    let names_path = match error {
        Error::File { path: own, .. } | Error::Io { path: own, .. } => own == path,
        _ => false,
    };
    if names_path {
        format!("{tool}: error: {error}")
    } else {
        format!("{tool}: error: {}: {error}", path.display())
    }
}

/// Formats a duration in seconds with one decimal (`2.1 s`).
fn format_duration(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

fn new_bar(tool: &str) -> ProgressBar {
    // Hidden until start() sets the total, so no empty bar flashes up.
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
    let template = "{prefix}: [{bar:30}] {pos}/{len} elapsed {elapsed} ETA {eta} {msg}";
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(tool.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn error_line_does_not_repeat_own_path() {
        let path = PathBuf::from("scans/a.nii.gz");
        let error = Error::file(&path, "truncated header");
        assert_eq!(
            error_line("prism-embed", &path, &error),
            "prism-embed: error: scans/a.nii.gz: truncated header"
        );
    }

    #[test]
    fn error_line_prefixes_item_path() {
        let path = PathBuf::from("scans/a.nii.gz");
        let error = Error::invalid("volume 4 requested but the image has 3");
        assert_eq!(
            error_line("prism-embed", &path, &error),
            "prism-embed: error: scans/a.nii.gz: volume 4 requested but the image has 3"
        );
    }

    #[test]
    fn duration_prints_one_decimal() {
        assert_eq!(format_duration(Duration::from_millis(2149)), "2.1 s");
    }
}
