//! `prism-weights`: inspect a checkpoint and convert it to safetensors.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::Result;
use crate::model::SwinConfig;
use crate::weights::{convert_to_safetensors, infer_swin_config, Checkpoint};

pub const TOOL: &str = "prism-weights";

/// Inspect PRISM encoder checkpoints and convert them to safetensors
#[derive(Debug, Clone, Parser)]
#[command(name = "prism-weights", version)]
pub struct WeightsCli {
    #[command(subcommand)]
    pub command: WeightsCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum WeightsCommand {
    /// Print the encoder configuration inferred from a checkpoint
    Info {
        /// A PRISM checkpoint (.pt), a state dict, or .safetensors
        #[arg(value_name = "FILE")]
        input: PathBuf,
    },
    /// Write the encoder of a checkpoint as .safetensors (f32, MONAI names, no
    /// pickle), which loads faster and safely
    Convert {
        /// A PRISM checkpoint (.pt), a state dict, or .safetensors
        #[arg(value_name = "INPUT")]
        input: PathBuf,
        /// The .safetensors file to write
        #[arg(value_name = "OUTPUT")]
        output: PathBuf,
    },
}

/// Describes an encoder configuration in one line.
pub fn describe(cfg: &SwinConfig) -> String {
    format!(
        "embed_dim {} depths {:?} heads {:?} window {} patch {} mlp_ratio {} v2 {} embedding length {}",
        cfg.embed_dim,
        cfg.depths,
        cfg.num_heads,
        cfg.window_size,
        cfg.patch_size,
        cfg.mlp_ratio,
        cfg.use_v2,
        cfg.num_features()
    )
}

/// Run the subcommand; returns the line to print on standard output.
pub fn run(cli: &WeightsCli) -> Result<String> {
    match &cli.command {
        WeightsCommand::Info { input } => {
            let ckpt = Checkpoint::read(input)?;
            let tensors = ckpt.encoder_tensors(input)?;
            let cfg = infer_swin_config(&tensors, input)?;
            Ok(format!("{}: {}", input.display(), describe(&cfg)))
        }
        WeightsCommand::Convert { input, output } => {
            crate::io::atomic::reject_output_over_input(output, &[input.as_path()])?;
            let cfg = convert_to_safetensors(input, output)?;
            Ok(format!("{}: wrote {}", output.display(), describe(&cfg)))
        }
    }
}
