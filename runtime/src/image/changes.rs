//! `--change` lines for `import`: the config-only Dockerfile instructions
//! (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR, STOPSIGNAL).

use super::config::RunConfig;
use super::ImageError;

fn bad(line: &str, reason: &str) -> ImageError {
    ImageError::BadChange {
        line: line.into(),
        reason: reason.into(),
    }
}

/// Parses `["a","b"]` (exec form) or wraps a plain string in `/bin/sh -c` (shell form).
fn command(line: &str, rest: &str) -> Result<Vec<String>, ImageError> {
    let rest = rest.trim();
    if rest.starts_with('[') {
        serde_json::from_str(rest).map_err(|e| bad(line, &format!("bad JSON array: {e}")))
    } else {
        Ok(vec!["/bin/sh".into(), "-c".into(), rest.into()])
    }
}

/// Applies each change to `cfg`; an unknown instruction is an error.
pub fn apply(cfg: &mut RunConfig, changes: &[String]) -> Result<(), ImageError> {
    for line in changes {
        let (inst, rest) = line
            .trim()
            .split_once(char::is_whitespace)
            .unwrap_or((line.trim(), ""));
        let rest = rest.trim();
        match inst.to_ascii_uppercase().as_str() {
            "CMD" => cfg.cmd = Some(command(line, rest)?),
            "ENTRYPOINT" => cfg.entrypoint = Some(command(line, rest)?),
            "ENV" => {
                let (k, v) = rest
                    .split_once('=')
                    .or_else(|| rest.split_once(' '))
                    .ok_or_else(|| bad(line, "want ENV KEY=VALUE"))?;
                let env = cfg.env.get_or_insert_with(Vec::new);
                env.retain(|e| e.split('=').next() != Some(k));
                env.push(format!("{k}={v}"));
            }
            "EXPOSE" => {
                for p in rest.split_whitespace() {
                    let p = if p.contains('/') {
                        p.to_string()
                    } else {
                        format!("{p}/tcp")
                    };
                    cfg.exposed_ports
                        .get_or_insert_with(Default::default)
                        .insert(p, serde_json::json!({}));
                }
            }
            "LABEL" => {
                let (k, v) = rest
                    .split_once('=')
                    .ok_or_else(|| bad(line, "want LABEL KEY=VALUE"))?;
                cfg.labels
                    .get_or_insert_with(Default::default)
                    .insert(k.trim_matches('"').into(), v.trim_matches('"').into());
            }
            "USER" => cfg.user = rest.into(),
            "WORKDIR" => cfg.working_dir = rest.into(),
            "STOPSIGNAL" => cfg.stop_signal = rest.into(),
            "VOLUME" => {
                let vols: Vec<String> = if rest.starts_with('[') {
                    serde_json::from_str(rest)
                        .map_err(|e| bad(line, &format!("bad JSON array: {e}")))?
                } else {
                    rest.split_whitespace().map(String::from).collect()
                };
                for v in vols {
                    cfg.volumes
                        .get_or_insert_with(Default::default)
                        .insert(v, serde_json::json!({}));
                }
            }
            "" => {}
            other => return Err(bad(line, &format!("unknown instruction {other}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_changes() {
        let mut c = RunConfig::default();
        apply(
            &mut c,
            &[
                r#"CMD ["httpd","-f"]"#.into(),
                "ENV A=1".into(),
                "ENV A=2".into(),
                "EXPOSE 80".into(),
                "WORKDIR /www".into(),
            ],
        )
        .expect("apply");
        assert_eq!(c.cmd, Some(vec!["httpd".to_string(), "-f".to_string()]));
        assert_eq!(c.env, Some(vec!["A=2".to_string()]));
        assert!(c.exposed_ports.expect("ports").contains_key("80/tcp"));
        assert_eq!(c.working_dir, "/www");
        assert!(apply(&mut RunConfig::default(), &["FROB x".into()]).is_err());
    }
}
