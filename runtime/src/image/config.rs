//! The image configuration document (OCI image config with Docker's extensions such as
//! `Healthcheck`), kept as our own serde types so unknown fields survive untouched in
//! the stored blob and the fields the engine needs are typed.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest image config accepted: configs are small; a huge one is an attack.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// The runtime defaults an image carries (`config` in the JSON).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// ONBUILD triggers, run by a build that uses this image as its base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<crate::digest::Digest>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Who made this step (`docker commit --author`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// The whole config blob.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The image's author (OCI `author`; `docker commit --author`, Docker's `Author`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: RunConfig,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
}

impl ImageConfig {
    /// Validates what the engine relies on: the rootfs type and `Volumes` entries that
    /// are absolute and not `/`.
    pub fn validate(&self) -> Result<(), String> {
        if self.rootfs.kind != "layers" {
            return Err(format!(
                "rootfs.type is {:?}, want \"layers\"",
                self.rootfs.kind
            ));
        }
        if let Some(vols) = &self.config.volumes {
            for v in vols.keys() {
                if v.is_empty() || !v.starts_with('/') || v.trim_end_matches('/').is_empty() {
                    return Err(format!(
                        "config.Volumes entry {v:?} must be an absolute path other than /"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The Go architecture name of this host, as image configs spell it.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn author_is_the_oci_field() {
        let c: ImageConfig = serde_json::from_str(
            r#"{"author":"A <a@x>","rootfs":{"type":"layers","diff_ids":[]},
               "history":[{"created":"2024-01-01T00:00:00Z","author":"A","comment":"m"}]}"#,
        )
        .expect("config");
        assert_eq!(c.author.as_deref(), Some("A <a@x>"));
        assert_eq!(c.history[0].author.as_deref(), Some("A"));
        let v = serde_json::to_value(&c).expect("json");
        assert_eq!(v["author"], "A <a@x>");
        // No author: no field, as Docker writes it.
        let v = serde_json::to_value(ImageConfig::default()).expect("json");
        assert!(v.get("author").is_none());
    }

    #[test]
    fn volumes_are_validated() {
        let mut c = ImageConfig {
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![],
            },
            ..Default::default()
        };
        assert!(c.validate().is_ok());
        for bad in ["", "rel/path", "/"] {
            c.config.volumes = Some([(bad.to_string(), serde_json::json!({}))].into());
            assert!(c.validate().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn docker_config_round_trips() {
        let raw = r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"],"Healthcheck":{"Test":["CMD","true"]}},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c: ImageConfig = serde_json::from_str(raw).expect("parse");
        assert_eq!(c.config.cmd.as_deref(), Some(&["sh".to_string()][..]));
        assert!(c.config.healthcheck.is_some());
    }
}
