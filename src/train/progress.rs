//! Progress of a training run on stderr: an indicatif bar (step/max, elapsed, ETA, the latest
//! losses) when stderr is a terminal, otherwise one plain line every few steps, for job logs:
//! `prism-seg: step 200/5000 loss.dice=0.4321 lr.adamw=0.0001 (0.52 s/step)`.
//! Notes (checkpoints, validation, resume) print as their own lines in both modes.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

enum Display {
    Bar(ProgressBar),
    Lines(Box<dyn Write + Send>),
}

/// Reports the steps of one run; see the module documentation.
pub struct StepProgress {
    tool: String,
    quiet: bool,
    /// Steps between plain lines.
    every: u64,
    display: Display,
    max_steps: u64,
    since: Instant,
    since_step: u64,
}

impl StepProgress {
    /// Creates a bar when stderr is a terminal and `quiet` is off, plain lines every
    /// `every` steps otherwise. `quiet` keeps only errors.
    pub fn new(tool: &str, quiet: bool, every: u64) -> StepProgress {
        let display = if std::io::stderr().is_terminal() && !quiet {
            Display::Bar(new_bar(tool))
        } else {
            Display::Lines(Box::new(std::io::stderr()))
        };
        StepProgress::with_display(tool, quiet, every, display)
    }

    /// Creates a reporter that writes plain lines to `writer`.
    pub fn to_writer(tool: &str, every: u64, writer: Box<dyn Write + Send>) -> StepProgress {
        StepProgress::with_display(tool, false, every, Display::Lines(writer))
    }

    fn with_display(tool: &str, quiet: bool, every: u64, display: Display) -> StepProgress {
        StepProgress {
            tool: tool.to_string(),
            quiet,
            every: every.max(1),
            display,
            max_steps: 0,
            since: Instant::now(),
            since_step: 0,
        }
    }

    /// Begins reporting at `step` (non-zero after a resume) of `max_steps`.
    pub fn start(&mut self, step: u64, max_steps: u64) {
        self.max_steps = max_steps;
        self.since = Instant::now();
        self.since_step = step;
        if let Display::Bar(bar) = &self.display {
            bar.set_length(max_steps);
            bar.set_position(step);
            bar.reset_eta();
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.enable_steady_tick(Duration::from_millis(500));
        }
    }

    /// Reports the end of `step` with its losses and learning rates.
    pub fn step(&mut self, step: u64, losses: &BTreeMap<String, f64>, lrs: &BTreeMap<String, f64>) {
        let values = format_values(losses, lrs);
        match &self.display {
            Display::Bar(bar) => {
                bar.set_position(step);
                bar.set_message(values);
            }
            Display::Lines(_) => {
                if step.is_multiple_of(self.every) || step == self.max_steps {
                    let rate = self.seconds_per_step(step);
                    let line = format!(
                        "{}: step {step}/{} {values} ({rate:.3} s/step)",
                        self.tool, self.max_steps
                    );
                    self.note(&line);
                }
            }
        }
    }

    /// Prints `tool: message` (not when quiet).
    pub fn info(&mut self, message: &str) {
        let line = format!("{}: {message}", self.tool);
        self.note(&line);
    }

    /// Prints `tool: warning: message` (not when quiet).
    pub fn warn(&mut self, message: &str) {
        let line = format!("{}: warning: {message}", self.tool);
        self.note(&line);
    }

    /// Removes the bar.
    pub fn finish(&mut self) {
        if let Display::Bar(bar) = &self.display {
            bar.finish_and_clear();
        }
    }

    /// Returns the mean seconds per step since the last line, and starts a new interval.
    fn seconds_per_step(&mut self, step: u64) -> f64 {
        let steps = step.saturating_sub(self.since_step).max(1);
        let seconds = self.since.elapsed().as_secs_f64() / steps as f64;
        self.since = Instant::now();
        self.since_step = step;
        seconds
    }

    /// Writes one line. Failures to write are ignored, because stderr is the last place left
    /// to report them.
    fn note(&mut self, line: &str) {
        if self.quiet {
            return;
        }
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

fn format_values(losses: &BTreeMap<String, f64>, lrs: &BTreeMap<String, f64>) -> String {
    let losses = losses
        .iter()
        .map(|(name, value)| format!("loss.{name}={value:.4}"));
    let lrs = lrs
        .iter()
        .map(|(name, value)| format!("lr.{name}={value:.3e}"));
    losses.chain(lrs).collect::<Vec<_>>().join(" ")
}

fn new_bar(tool: &str) -> ProgressBar {
    // Hidden until start() sets the length, so no empty bar flashes up.
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
    let template = "{prefix}: [{bar:30}] step {pos}/{len} elapsed {elapsed} ETA {eta} {msg}";
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(tool.to_string());
    bar
}
