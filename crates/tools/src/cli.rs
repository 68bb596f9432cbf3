//! How the command-line programs end: success, or one line of error and a failure status.

use std::error::Error;
use std::fmt;
use std::process::ExitCode;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use texprune::burn::tensor::{Device, Tensor};

/// A backend to run on, as the examples' `--backend` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// The default CPU backend, Burn's `flex` (`cpu` or `flex`).
    Flex,
    /// Burn's `ndarray` CPU backend (cargo feature `ndarray`).
    Ndarray,
    /// A GPU through wgpu (Vulkan, Metal, DirectX; cargo feature `wgpu`).
    Wgpu,
    /// An NVIDIA GPU through CUDA (cargo feature `cuda`).
    Cuda,
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" | "flex" => Ok(Self::Flex),
            "ndarray" => Ok(Self::Ndarray),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(format!(
                "unknown backend `{other}`: cpu (= flex), ndarray, wgpu or cuda"
            )),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flex => "flex",
            Self::Ndarray => "ndarray",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        })
    }
}

impl Backend {
    /// The backend's first device, checked by running one small operation on it. Fails when the
    /// backend was not compiled in (naming the cargo feature) or has no usable device.
    ///
    /// # Errors
    /// A message when the backend was not compiled in or has no usable device.
    pub fn device(self) -> Result<Device, String> {
        self.devices(1).map(|mut devices| devices.remove(0))
    }

    /// `count` devices of the backend for data-parallel training, each checked: GPUs `0..count`,
    /// or the one CPU device `count` times (one worker thread per entry).
    ///
    /// # Errors
    /// As [`Backend::device`], for any of the devices.
    pub fn devices(self, count: usize) -> Result<Vec<Device>, String> {
        (0..count.max(1))
            .map(|index| self.probe(index, self.device_at(index)?))
            .collect()
    }

    /// Whether Burn implements the collective operations DDP needs on this backend (0.22: CUDA).
    pub fn has_collectives(self) -> bool {
        self == Self::Cuda
    }

    #[allow(unused_variables)]
    fn device_at(self, index: usize) -> Result<Device, String> {
        Ok(match self {
            #[cfg(feature = "flex")]
            Self::Flex => Device::flex(),
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            Self::Ndarray => Device::ndarray(),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => match index {
                0 => Device::wgpu(Default::default()),
                i => Device::wgpu(texprune::burn::tensor::DeviceKind::DiscreteGpu(i)),
            },
            #[cfg(feature = "cuda")]
            Self::Cuda => Device::cuda(index),
            #[allow(unreachable_patterns)]
            other => {
                return Err(format!(
                    "backend {other} is not compiled in: build with `--features {other}`"
                ));
            }
        })
    }

    /// `device` (the backend's device number `index`), once one small operation ran on it. GPUs
    /// are counted first with `Device::enumerate`, which finds none where a driver is missing
    /// instead of panicking, and the operation's failure is read as an error, so no panic hook
    /// is needed.
    fn probe(self, index: usize, device: Device) -> Result<Device, String> {
        if let Some(found) = self.gpus()
            && index >= found
        {
            return Err(format!(
                "backend {self}: no usable device {index} ({found} found)"
            ));
        }
        match Tensor::<1>::ones([1], &device).try_into_data() {
            Ok(_) => Ok(device),
            Err(error) => Err(format!("backend {self}: no usable device ({error})")),
        }
    }

    /// How many devices a GPU backend finds (None for the CPU backends).
    fn gpus(self) -> Option<usize> {
        match self {
            #[cfg(feature = "wgpu")]
            Self::Wgpu => Some(Device::enumerate(texprune::burn::tensor::DeviceType::Wgpu).len()),
            #[cfg(feature = "cuda")]
            Self::Cuda => Some(Device::enumerate(texprune::burn::tensor::DeviceType::Cuda).len()),
            _ => None,
        }
    }
}

/// `error` and its sources as one line: `message: source: source…`, each source appended only
/// when the message does not already contain it, line breaks folded into spaces.
pub fn one_line(error: &dyn Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line = format!("{line}: {text}");
        }
        source = s.source();
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A command-line count that must be at least 1 (a batch size), for `clap`'s `value_parser`.
///
/// # Errors
/// A message when `s` is not a whole number ≥ 1.
pub fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Ends a program: status 0 on success; otherwise `error: …` on one line of standard error
/// (see [`one_line`]) and status 1, without a panic message or a backtrace.
pub fn exit(result: Result<(), Box<dyn Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse_and_the_default_one_runs() {
        assert_eq!("cpu".parse::<Backend>(), Ok(Backend::Flex));
        assert_eq!("cuda".parse::<Backend>(), Ok(Backend::Cuda));
        assert!("tpu".parse::<Backend>().unwrap_err().contains("wgpu"));
        assert!(Backend::Flex.device().is_ok());
        #[cfg(not(feature = "wgpu"))]
        assert!(
            Backend::Wgpu
                .device()
                .unwrap_err()
                .contains("--features wgpu")
        );
    }

    #[test]
    fn sources_are_appended_once_and_lines_folded() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read\n  the file")]
        struct Outer(#[source] std::io::Error);
        let io = std::io::Error::other("disk on fire");
        assert_eq!(one_line(&Outer(io)), "cannot read the file: disk on fire");
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped: {0}")]
        struct Repeats(#[source] std::io::Error);
        let io = std::io::Error::other("gone");
        assert_eq!(one_line(&Repeats(io)), "wrapped: gone");
    }
}
