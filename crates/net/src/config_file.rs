//! Reading a TOML config file, or the embedded defaults when none is given.
use std::path::{Path, PathBuf};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, permissions, not UTF-8).
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but the parser refused it.
    #[error("config file {path} is not valid: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

/// Reads and parses a config file with `parse`, or gives the defaults when `path` is None.
pub fn load_file<T: Default>(
    path: Option<&Path>,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|message| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    })
}
