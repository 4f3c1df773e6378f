//! The user's defaults: the signaling server a bare `CODE` ticket means, and the CA file
//! for it. `PEERSHARE_SERVER` (and `PEERSHARE_CA`) win over the config file
//! `CONFIG_DIR/peershare/config.toml` (`~/.config/peershare/config.toml` on Linux):
//!
//! ```toml
//! server = "wss://signal.example.org"
//! ca = "/etc/ssl/my-ca.pem"   # optional
//! ```
//!
//! `server` may list several servers of one deployment, separated by commas, tried in
//! that order (`wss://a.example.org,wss://b.example.org`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// What the config file may hold.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Default signaling server URL (or several, separated by commas).
    pub server: Option<String>,
    /// Extra CA certificate (PEM) for `wss://` servers.
    pub ca: Option<PathBuf>,
}

impl Defaults {
    /// The default servers, in the order they are tried (none when unset).
    pub fn servers(&self) -> Vec<String> {
        self.server
            .as_deref()
            .map(split_servers)
            .unwrap_or_default()
    }
}

/// The servers of a comma-separated list, trimmed, empty entries left out.
pub fn split_servers(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The config file's path.
pub fn config_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("peershare").join("config.toml"))
}

/// Read a config file; a missing file is no defaults.
pub fn read(path: &Path) -> anyhow::Result<Defaults> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Defaults::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// The user's defaults: the environment over the config file.
pub fn load() -> anyhow::Result<Defaults> {
    let mut defaults = match config_path() {
        Some(path) => read(&path)?,
        None => Defaults::default(),
    };
    if let Some(server) = std::env::var_os("PEERSHARE_SERVER").filter(|s| !s.is_empty()) {
        defaults.server = Some(server.to_string_lossy().into_owned());
    }
    if let Some(ca) = std::env::var_os("PEERSHARE_CA").filter(|s| !s.is_empty()) {
        defaults.ca = Some(PathBuf::from(ca));
    }
    Ok(defaults)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_file_missing_is_empty_and_fields_parse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert_eq!(read(&path).unwrap(), Defaults::default());
        std::fs::write(
            &path,
            "server = \"wss://s.example:443\"\nca = \"/tmp/ca.pem\"\n",
        )
        .unwrap();
        let d = read(&path).unwrap();
        assert_eq!(d.server.as_deref(), Some("wss://s.example:443"));
        assert_eq!(d.ca.as_deref(), Some(Path::new("/tmp/ca.pem")));
    }

    #[test]
    fn defaults_servers_split_a_comma_separated_list() {
        let d = Defaults {
            server: Some(" ws://a:1 ,wss://b.example,, ".into()),
            ca: None,
        };
        assert_eq!(d.servers(), ["ws://a:1", "wss://b.example"]);
        assert!(Defaults::default().servers().is_empty());
    }

    #[test]
    fn defaults_file_with_unknown_key_or_bad_toml_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        for bad in ["sever = \"x\"", "server = ", "server = 3"] {
            std::fs::write(&path, bad).unwrap();
            assert!(read(&path).is_err(), "{bad}");
        }
    }
}
