//! The man pages and shell completions in the repository match the clap
//! definitions. Regenerate them with `PRISM_UPDATE_DOCS=1 cargo test --test docs_current`.

use std::path::Path;

use clap::CommandFactory;
use prism::cli::docs::{check_generated_docs, update_requested};
use prism::cli::convert_cmd::ConvertCli;
use prism::cli::embed_cmd::EmbedCli;
use prism::cli::pretrain_cmd::PretrainCli;
use prism::cli::seg_cmd::SegCli;
use prism::cli::weights_cmd::WeightsCli;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn prism_embed_docs_are_current() {
    check_generated_docs(&EmbedCli::command(), root(), update_requested()).unwrap();
}

#[test]
fn prism_weights_docs_are_current() {
    check_generated_docs(&WeightsCli::command(), root(), update_requested()).unwrap();
}

#[test]
fn prism_convert_docs_are_current() {
    check_generated_docs(&ConvertCli::command(), root(), update_requested()).unwrap();
}

#[test]
fn prism_seg_docs_are_current() {
    check_generated_docs(&SegCli::command(), root(), update_requested()).unwrap();
}

#[test]
fn prism_pretrain_docs_are_current() {
    check_generated_docs(&PretrainCli::command(), root(), update_requested()).unwrap();
}

#[test]
fn command_definitions_are_consistent() {
    PretrainCli::command().debug_assert();
    SegCli::command().debug_assert();
    ConvertCli::command().debug_assert();
    EmbedCli::command().debug_assert();
    WeightsCli::command().debug_assert();
}
