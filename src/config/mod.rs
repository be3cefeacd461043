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
mod edge;
mod error;
mod fields;
mod keys;
mod plan;
pub mod raw;
pub mod rollout;
mod routes;
mod sticky;
mod store;
pub mod tls;
pub mod types;
mod validate;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors};
pub use fields::ValidateOptions;
pub use keys::{KeySource, StaticKeys, SystemKeys, decode_key};
pub use rollout::{AfterPromote, Analysis, RolloutPlan, RolloutStep};
pub use types::*;
pub use validate::validate;

/// Largest config file read, so a runaway file cannot eat the proxy's memory.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

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
        let line = e.location().and_then(|l| fields::line(&l));
        // A syntax error stops the reader where the text broke, which is not
        // inside the value the deserializer last named (a key too long to
        // be a key was reported under the key before it): the line alone.
        let path = if is_syntax(&e) {
            String::new()
        } else {
            tidy_path(path.as_deref().unwrap_or(""))
        };
        ConfigError::new(path, line, tidy_message(&e))
    })
}

/// Whether the YAML reader, not the deserializer, refused the text.
fn is_syntax(e: &serde_saphyr::Error) -> bool {
    matches!(
        e.without_snippet(),
        serde_saphyr::Error::ExternalMessage { .. }
    )
}

/// serde_path_to_error's path, without the `value` steps that `Spanned` adds and
/// without the `?` it puts where a mapping had a duplicate key.
fn tidy_path(path: &str) -> String {
    path.split('.')
        .filter(|seg| !matches!(*seg, "value" | "?" | ""))
        .collect::<Vec<_>>()
        .join(".")
}

/// serde-saphyr's message in an operator's words, without its own position suffix
/// (the line is printed once, by `ConfigError`).
fn tidy_message(e: &serde_saphyr::Error) -> String {
    let full = e.without_snippet().to_string();
    // A value reached through an alias: saphyr appends where its anchor was
    // defined and where it is used; the line printed is the use, so the
    // anchor's line is said in words.
    if let Some((head, rest)) = full.split_once(" (defined at line ") {
        let anchor = rest.split(',').next().unwrap_or("?");
        return format!(
            "{} (it comes from an alias; the anchored value is at line {anchor})",
            plain_words(head)
        );
    }
    let msg = full
        .rsplit_once(" at line ")
        .map_or(full.as_str(), |(m, _)| m);
    plain_words(msg)
}

/// serde-saphyr's phrases an operator would not know, said plainly.
fn plain_words(msg: &str) -> String {
    if msg.contains("simple key expected ':'") {
        return "a key that is longer than 1024 characters (YAML's limit for a key), or a line that is neither `key: value` nor a list item".to_owned();
    }
    if msg.starts_with("expected string scalar") {
        return "expected a single value here, not a list or a mapping".to_owned();
    }
    if let Some(rest) = msg.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest).trim();
        return format!(
            "key `{key}` appears twice in this mapping (a repeated key would silently override the first)"
        );
    }
    if msg.starts_with("invalid i64") || msg.starts_with("invalid u32") {
        return "expected an integer".to_owned();
    }
    msg.to_owned()
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

/// Reads a config file whole, refusing one over [`MAX_FILE_BYTES`] or not
/// UTF-8, each with why in plain words.
pub fn read_text(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read the file: {e}"))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "the file is {} bytes; a config file may be at most {MAX_FILE_BYTES} bytes (4 MiB): is this the right file?",
            meta.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?;
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = good.len() - good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
        format!(
            "the file is not UTF-8 text: byte 0x{:02x} at line {line}, column {column} is not UTF-8 (save the file as UTF-8)",
            e.as_bytes().get(good.len()).copied().unwrap_or(0)
        )
    })
}

/// The 1-based line a parsed value came from, when known.
pub fn line_of<T>(s: &serde_saphyr::Spanned<T>) -> Option<u64> {
    fields::line(&s.referenced)
}

/// Reads, parses and validates a config file.
pub fn load_file(
    path: &Path,
    keys: &dyn KeySource,
    opts: ValidateOptions,
) -> Result<(Config, String), ConfigErrors> {
    let name = path.display().to_string();
    let text = read_text(path).map_err(|msg| ConfigErrors {
        source_name: name.clone(),
        errors: vec![ConfigError::new("", None, msg)],
    })?;
    let cfg = load_str(&text, &name, keys, opts)?;
    Ok((cfg, text))
}
