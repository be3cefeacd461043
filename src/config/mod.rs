//! proxy.yaml, from bytes to a validated [`Config`].
//!
//! ```text
//! file bytes --serde-saphyr--> raw::RawConfig --validate--> types::Config
//!               (syntax, unknown keys,          (ranges, keys, addresses,
//!                duplicate keys, types)          cross-field rules)
//! ```
//! Every step reports [`ConfigError`]s with the YAML path and line; validation
//! gathers all of them before failing. `Config` is turned into the runtime
//! `Snapshot` by `state`.

pub mod duration;
mod error;
pub mod raw;
pub mod types;
mod validate;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors};
pub use types::*;
pub use validate::{KeySource, SystemKeys, ValidateOptions, decode_key, validate};

/// Largest config file read, so a runaway file cannot eat the proxy's memory.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Parses YAML text into the raw form.
pub fn parse(text: &str) -> Result<raw::RawConfig, ConfigError> {
    let mut path = None;
    let res = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = Some(e.path().to_string());
            e.into_inner()
        })
    });
    res.map_err(|e| {
        let line = e.location().and_then(|l| validate::line(&l));
        let path = path.unwrap_or_default();
        // serde-saphyr appends its own "at line N, column M"; we print the line once.
        let full = e.without_snippet().to_string();
        let msg = full
            .rsplit_once(" at line ")
            .map_or(full.as_str(), |(m, _)| m)
            .to_owned();
        let path = match path.as_str() {
            "." => String::new(),
            // A duplicate key is reported inside the mapping, at an unknown child.
            p => p.trim_end_matches(".?").to_owned(),
        };
        ConfigError::new(path, line, msg)
    })
}

/// Parses and validates YAML text.
pub fn load_str(
    text: &str,
    source_name: &str,
    keys: &dyn KeySource,
    opts: ValidateOptions,
) -> Result<Config, ConfigErrors> {
    let wrap = |errors| ConfigErrors {
        source_name: source_name.to_owned(),
        errors,
    };
    let raw = parse(text).map_err(|e| wrap(vec![e]))?;
    validate(&raw, keys, opts).map_err(wrap)
}

/// Reads, parses and validates a config file.
pub fn load_file(
    path: &Path,
    keys: &dyn KeySource,
    opts: ValidateOptions,
) -> Result<(Config, String), ConfigErrors> {
    let name = path.display().to_string();
    let io_err = |msg: String| ConfigErrors {
        source_name: name.clone(),
        errors: vec![ConfigError::new("", None, msg)],
    };
    let meta = std::fs::metadata(path).map_err(|e| io_err(format!("cannot read: {e}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(io_err(format!(
            "file is larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| io_err(format!("cannot read: {e}")))?;
    let cfg = load_str(&text, &name, keys, opts)?;
    Ok((cfg, text))
}
