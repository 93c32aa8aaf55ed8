//! Compute device selection from the `--device` option: `cpu`, `cuda` (GPU 0)
//! or `cuda:N` (GPU N, 0-based as in `nvidia-smi`).
//!
//! The CUDA backend exists only in binaries built with the `cuda` cargo feature;
//! other builds reject `cuda` with the command that builds one.
//!
//! NOTE: the `cuda` build has not been compiled or run on a GPU yet. On CUDA the
//! encoder takes the portable candle-op paths (convolution, attention, GELU), which
//! the CPU tests exercise, but no test checks them on a GPU.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::{Error, Result};

/// A parsed `--device` value, before the device is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    /// CUDA GPU with this ordinal.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(text: &str) -> Result<DeviceSpec> {
        let invalid = || {
            Error::invalid(format!(
                "invalid device '{text}': expected cpu, cuda or cuda:N (N = GPU index, 0-based)"
            ))
        };
        match text {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => {
                let ordinal = text.strip_prefix("cuda:").ok_or_else(invalid)?;
                ordinal
                    .parse::<usize>()
                    .map(DeviceSpec::Cuda)
                    .map_err(|_| invalid())
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

impl DeviceSpec {
    /// Opens the device. A CUDA device fails in a build without the `cuda`
    /// feature, or when the driver cannot open that GPU.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(ordinal) => open_cuda(ordinal),
        }
    }
}

/// Parses and opens a `--device` value.
pub fn parse_device(text: &str) -> Result<Device> {
    text.parse::<DeviceSpec>()?.open()
}

fn open_cuda(ordinal: usize) -> Result<Device> {
    if !candle_core::utils::cuda_is_available() {
        return Err(Error::invalid(format!(
            "--device cuda:{ordinal}: this binary was built without CUDA support; rebuild it with \
             `cargo install --path . --features cuda` in the source tree (needs the CUDA toolkit), or use --device cpu"
        )));
    }
    Device::new_cuda(ordinal).map_err(|e| {
        Error::invalid(format!(
            "--device cuda:{ordinal}: cannot open CUDA device {ordinal}: {e}; check `nvidia-smi` for the available GPUs"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_spec_parses_each_form() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
    }

    #[test]
    fn device_spec_rejects_unknown() {
        for text in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", "metal", ""] {
            assert!(text.parse::<DeviceSpec>().is_err(), "{text}");
        }
    }

    #[test]
    fn device_spec_display_round_trips() {
        for spec in [DeviceSpec::Cpu, DeviceSpec::Cuda(0), DeviceSpec::Cuda(2)] {
            assert_eq!(spec.to_string().parse::<DeviceSpec>().unwrap(), spec);
        }
    }

    #[test]
    fn parse_device_opens_cpu() {
        let device = parse_device("cpu").unwrap();
        assert!(device.is_cpu());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn parse_device_without_cuda_feature_names_fix() {
        let message = parse_device("cuda:1").unwrap_err().to_string();
        assert!(message.contains("built without CUDA"), "{message}");
        assert!(
            message.contains("--features cuda"),
            "{message}"
        );
    }
}
