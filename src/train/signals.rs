//! Stop requests from the outside: SIGTERM (Slurm at the time limit, `kill`), SIGUSR1 (Slurm's
//! `--signal=USR1@SECONDS` warning) and SIGINT (Ctrl-C) set a flag that the training loop
//! checks between steps, so the run saves a checkpoint and exits with
//! [`crate::cli::Exit::Interrupted`] (3).
//!
//! A second SIGINT while the first is being handled ends the process at once with status 130
//! (128 + SIGINT), for a save that hangs. The handlers stay installed while the [`StopSignal`]
//! lives and are removed when it is dropped.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::SigId;

use crate::error::{Error, Result};

/// Exit status of a second SIGINT, following the shell's 128 + signal number.
const SECOND_INTERRUPT_STATUS: i32 = 128 + SIGINT;

/// The stop flag of a run; see the module documentation.
pub struct StopSignal {
    /// The number of the last signal received, 0 while none has arrived.
    received: Arc<AtomicUsize>,
    handlers: Vec<SigId>,
}

impl StopSignal {
    /// Installs the handlers for SIGTERM, SIGUSR1 (Unix) and SIGINT.
    pub fn install() -> Result<StopSignal> {
        let received = Arc::new(AtomicUsize::new(0));
        let interrupted = Arc::new(AtomicBool::new(false));
        let mut stop = StopSignal {
            received: received.clone(),
            handlers: Vec::new(),
        };

        // The shutdown action is registered first, so it reads the flag before this SIGINT
        // sets it and exits only on a second SIGINT.
        let forced = signal_hook::flag::register_conditional_shutdown(
            SIGINT,
            SECOND_INTERRUPT_STATUS,
            interrupted.clone(),
        );
        stop.handlers.push(forced.map_err(install_error)?);
        let arm = signal_hook::flag::register(SIGINT, interrupted);
        stop.handlers.push(arm.map_err(install_error)?);

        for signal in stop_signals() {
            let id = signal_hook::flag::register_usize(signal, received.clone(), signal as usize);
            stop.handlers.push(id.map_err(install_error)?);
        }
        Ok(stop)
    }

    /// Creates a flag with no signal handlers, set only through [`StopSignal::request`]: for
    /// callers that handle signals themselves, and for tests that run several loops at once.
    pub fn manual() -> StopSignal {
        StopSignal {
            received: Arc::new(AtomicUsize::new(0)),
            handlers: Vec::new(),
        }
    }

    /// Sets the flag as if `signal` had arrived.
    pub fn request(&self, signal: i32) {
        self.received.store(signal as usize, Ordering::SeqCst);
    }

    /// Returns the number of the signal that requested the stop, if one did.
    pub fn received(&self) -> Option<i32> {
        match self.received.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal as i32),
        }
    }
}

impl Drop for StopSignal {
    fn drop(&mut self) {
        for id in self.handlers.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Returns the conventional name of a signal number (`SIGUSR1`), or the number itself.
pub fn signal_name(signal: i32) -> String {
    signal_hook::low_level::signal_name(signal)
        .map(str::to_string)
        .unwrap_or_else(|| format!("signal {signal}"))
}

fn stop_signals() -> Vec<i32> {
    #[cfg(unix)]
    {
        vec![SIGTERM, SIGINT, signal_hook::consts::SIGUSR1]
    }
    #[cfg(not(unix))]
    {
        vec![SIGTERM, SIGINT]
    }
}

fn install_error(error: std::io::Error) -> Error {
    Error::invalid(format!(
        "failed to install the stop-signal handlers: {error}"
    ))
}
