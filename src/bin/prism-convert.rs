//! `prism-convert`: parse the command line, run, map the outcome to an exit code.
//! Everything else lives in `prism::cli::convert_cmd`.

use std::process::ExitCode;

use clap::Parser;
use prism::cli::convert_cmd::{self, ConvertCli, TOOL};
use prism::cli::progress::Reporter;
use prism::cli::Exit;

fn main() -> ExitCode {
    prism::alloc::retain_freed_memory();
    let cli = ConvertCli::parse();
    let mut reporter = Reporter::new(TOOL, cli.quiet);
    let result = convert_cmd::run(&cli, &mut reporter);
    if let Err(e) = &result {
        reporter.error(&e.to_string());
    }
    Exit::from_result(&result).into()
}
