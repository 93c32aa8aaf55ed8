//! `prism-weights`: parse, run, print, exit (see `prism::cli::weights_cmd`).

use std::process::ExitCode;

use clap::Parser;
use prism::cli::weights_cmd::{self, WeightsCli, TOOL};
use prism::cli::Exit;

fn main() -> ExitCode {
    prism::alloc::retain_freed_memory();
    let cli = WeightsCli::parse();
    match weights_cmd::run(&cli) {
        Ok(line) => {
            println!("{line}");
            Exit::Success.into()
        }
        Err(e) => {
            eprintln!("{TOOL}: error: {e}");
            Exit::Usage.into()
        }
    }
}
