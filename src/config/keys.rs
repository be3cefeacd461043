//! Where cookie keys and other secrets come from: the environment and files
//! for the proxy, fixed tables for tests, and the base64 they are written in.

use base64::Engine;

/// Where key material comes from. Tests and the demo swap the real environment
/// for their own lookups.
pub trait KeySource {
    fn env(&self, name: &str) -> Option<String>;
    fn file(&self, path: &str) -> std::io::Result<String>;
}

/// Reads keys from the process environment and the file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemKeys;

impl KeySource for SystemKeys {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn file(&self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// Key material from a fixed table of environment names and no files: for
/// tests, benchmarks and embedding, where the process environment is not the source.
#[derive(Debug, Clone, Default)]
pub struct StaticKeys(pub Vec<(&'static str, &'static str)>);

impl KeySource for StaticKeys {
    fn env(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
    fn file(&self, _: &str) -> std::io::Result<String> {
        Err(std::io::ErrorKind::NotFound.into())
    }
}

/// Keys are base64 (standard or URL-safe, padding optional), as `keygen` prints them.
pub fn decode_key(text: &str) -> Result<Vec<u8>, String> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let t = text.trim().trim_end_matches('=');
    STANDARD_NO_PAD
        .decode(t)
        .or_else(|_| URL_SAFE_NO_PAD.decode(t))
        .map_err(|_| "key is not base64 (`switchyard keygen` prints one)".to_owned())
}
