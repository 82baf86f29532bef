//! Choosing the tch device (`--device cpu|cuda|auto`) and the CPU thread count.

use std::str::FromStr;

use tch::Device;

/// Which device the user asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA when a GPU is visible, else CPU.
    #[default]
    Auto,
    /// Always the CPU.
    Cpu,
    /// The first CUDA GPU; an error when none is visible.
    Cuda,
}

/// A device choice that cannot be honoured or parsed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The text is none of `cpu`, `cuda`, `auto`.
    #[error("unknown device {0:?}: use cpu, cuda or auto")]
    Unknown(String),
    /// CUDA was asked for but libtorch sees no GPU.
    #[error(
        "--device cuda was given but no CUDA device is visible to libtorch; use --device cpu or auto"
    )]
    NoCuda,
}

impl FromStr for DeviceChoice {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            _ => Err(DeviceError::Unknown(s.to_string())),
        }
    }
}

impl DeviceChoice {
    /// Resolves the choice to a tch device.
    pub fn resolve(self) -> Result<Device, DeviceError> {
        match self {
            Self::Auto => Ok(Device::cuda_if_available()),
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
            Self::Cuda => Err(DeviceError::NoCuda),
        }
    }
}

/// Sets libtorch's intra-op thread count: `threads` when given, else every core this process
/// may use. Returns the count set.
pub fn set_torch_threads(threads: Option<usize>) -> usize {
    let cores =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    tch::set_num_threads(cores.max(1) as i32);
    cores.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_choices_and_rejects_others() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("CUDA".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda);
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert!("tpu".parse::<DeviceChoice>().is_err());
        assert_eq!(DeviceChoice::Cpu.resolve().unwrap(), Device::Cpu);
    }
}
