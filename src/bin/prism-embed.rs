//! `prism-embed`: parse the command line, run, map the outcome to an exit code.
//! Everything else lives in `prism::cli::embed_cmd`.

use std::process::ExitCode;

use clap::Parser;
use prism::cli::embed_cmd::{self, EmbedCli, TOOL};
use prism::cli::progress::Reporter;
use prism::cli::{args::configure_threads, Exit};

fn main() -> ExitCode {
    prism::alloc::retain_freed_memory();
    let cli = EmbedCli::parse();
    let mut reporter = Reporter::new(TOOL, cli.batch.quiet);
    if let Err(e) = configure_threads(embed_cmd::threads(&cli)) {
        reporter.error(&e.to_string());
        return Exit::Usage.into();
    }

    let result = embed_cmd::run(&cli, &mut reporter);
    if let Err(e) = &result {
        reporter.error(&e.to_string());
    }
    Exit::from_result(&result).into()
}
