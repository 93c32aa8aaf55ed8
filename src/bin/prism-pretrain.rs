//! `prism-pretrain`: parse the command line, run the verb, map the outcome to an exit code.
//! Everything else lives in `prism::cli::pretrain_cmd`.

use std::process::ExitCode;

use clap::Parser;
use prism::cli::pretrain_cmd::{self, PretrainCli, TOOL};
use prism::cli::progress::Reporter;
use prism::cli::{args::configure_threads, Exit};

fn main() -> ExitCode {
    prism::alloc::retain_freed_memory();
    let cli = PretrainCli::parse();
    let mut reporter = Reporter::new(TOOL, cli.quiet());
    if let Err(e) = configure_threads(cli.threads()) {
        reporter.error(&e.to_string());
        return Exit::Usage.into();
    }

    match pretrain_cmd::run_cli(&cli) {
        Ok(exit) => exit.into(),
        Err(e) => {
            reporter.error(&e.to_string());
            Exit::Usage.into()
        }
    }
}
