//! `container prune`, `image prune`, `volume prune`, `network prune` and `system df`:
//! what is unused, how big it is, and removing it. Each prune reports what it removed
//! and the bytes it freed (measured on disk, so shared layers are not double counted).

use crate::containers::Containers;
use crate::error::Result;
use skiff_proto::engine::{DfResponse, DfRow, PruneResponse};
use skiff_runtime::container::Status;
use skiff_runtime::fsutil;
use std::collections::HashSet;
use std::sync::Arc;

/// `until=` (RFC 3339 or unix seconds) and `label=`/`label!=` prune filters.
pub(crate) fn created_matches(
    created: chrono::DateTime<chrono::Utc>,
    labels: &std::collections::BTreeMap<String, String>,
    filters: &[String],
) -> bool {
    filters.iter().all(|f| {
        let Some((k, v)) = f.split_once('=') else {
            return true;
        };
        let label = |v: &str| {
            let (lk, lv) = v
                .split_once('=')
                .map(|(a, b)| (a, Some(b)))
                .unwrap_or((v, None));
            labels.get(lk).is_some_and(|x| lv.is_none_or(|lv| x == lv))
        };
        match k {
            "until" => until(v).is_none_or(|t| created < t),
            "label" => label(v),
            "label!" => !label(v),
            _ => true,
        }
    })
}

fn until(v: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    if let Ok(secs) = v.parse::<i64>() {
        return chrono::DateTime::from_timestamp(secs, 0);
    }
    // Durations: 10m, 24h, 30s.
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return None,
    };
    Some(chrono::Utc::now() - chrono::Duration::seconds(secs))
}

/// Removes every stopped container (created, exited, dead) matching `filters`.
pub async fn containers(c: &Arc<Containers>, filters: &[String]) -> Result<PruneResponse> {
    let mut resp = PruneResponse::default();
    for e in c.list() {
        let st = e.state();
        if !matches!(st.status, Status::Created | Status::Exited | Status::Dead) {
            continue;
        }
        let r = e.record();
        if !created_matches(r.created, &r.config.labels, filters) {
            continue;
        }
        let size = fsutil::disk_usage(&e.paths.upper());
        if c.remove(&e.id, false).await.is_ok() {
            resp.deleted.push(e.id.clone());
            resp.space_reclaimed += size;
        }
    }
    c.events.emit(
        "container",
        "prune",
        "",
        [("reclaimed".to_string(), resp.space_reclaimed.to_string())].into(),
    );
    Ok(resp)
}

fn image_disk(c: &Containers) -> u64 {
    fsutil::disk_usage(&c.cfg.root.join("image"))
        + fsutil::disk_usage(&c.cfg.root.join("snapshots"))
}

/// Removes dangling images (no tag), or with `all` every image no container uses.
pub async fn images(c: &Containers, all: bool, filters: &[String]) -> Result<PruneResponse> {
    let mut resp = PruneResponse::default();
    let before = image_disk(c);
    let used: HashSet<String> = c
        .list()
        .iter()
        .map(|e| e.record().image_id.to_string())
        .collect();
    for img in c.images.list()? {
        let id = img.id().to_string();
        if used.contains(&id) || (!all && !img.repo_tags.is_empty()) {
            continue;
        }
        let created = img.created().unwrap_or_else(chrono::Utc::now);
        let labels = img
            .config
            .config
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        if !created_matches(created, &labels, filters) {
            continue;
        }
        // Remove by ID with force: every tag goes with it, never an image in use.
        let in_use = |d: &skiff_runtime::digest::Digest| used.contains(&d.to_string());
        match c.images.remove(&id, true, in_use) {
            Ok((untagged, deleted)) => {
                for u in &untagged {
                    c.events.emit("image", "untag", u, Default::default());
                }
                for d in &deleted {
                    c.events.emit("image", "delete", d, Default::default());
                }
                resp.untagged.extend(untagged);
                resp.deleted.extend(deleted);
            }
            Err(e) => tracing::warn!(image = %id, error = %e, "prune could not remove image"),
        }
    }
    resp.space_reclaimed = before.saturating_sub(image_disk(c));
    c.events.emit(
        "image",
        "prune",
        "",
        [("reclaimed".to_string(), resp.space_reclaimed.to_string())].into(),
    );
    Ok(resp)
}

/// Removes unused volumes (anonymous only unless `all`).
pub fn volumes(c: &Containers, all: bool, filters: &[String]) -> PruneResponse {
    let (deleted, space_reclaimed) = c.volumes.prune(&|n| c.volume_users(n), all, filters);
    for v in &deleted {
        c.events.emit("volume", "destroy", v, Default::default());
    }
    PruneResponse {
        deleted,
        space_reclaimed,
        untagged: vec![],
    }
}

/// `system df`: images, containers, local volumes and build cache.
pub fn df(c: &Containers) -> Result<DfResponse> {
    let entries = c.list();
    let used: HashSet<String> = entries
        .iter()
        .map(|e| e.record().image_id.to_string())
        .collect();
    let mut rows = Vec::new();
    let mut verbose = serde_json::json!({"Images": [], "Containers": [], "Volumes": []});

    let images = c.images.list()?;
    let mut img = DfRow {
        kind: "Images".into(),
        ..Default::default()
    };
    for i in &images {
        let size = c.images.size(i);
        let active = used.contains(&i.id().to_string());
        img.total += 1;
        img.size += size;
        if active {
            img.active += 1;
        } else {
            img.reclaimable += size;
        }
        if let Some(a) = verbose["Images"].as_array_mut() {
            a.push(serde_json::json!({"ID": i.id().to_string(), "RepoTags": i.repo_tags, "Size": size, "Containers": entries.iter().filter(|e| e.record().image_id == *i.id()).count()}));
        }
    }
    rows.push(img);

    let mut ctr = DfRow {
        kind: "Containers".into(),
        ..Default::default()
    };
    for e in &entries {
        let size = fsutil::disk_usage(&e.paths.upper());
        let running = e.state().is_running();
        ctr.total += 1;
        ctr.size += size;
        if running {
            ctr.active += 1;
        } else {
            ctr.reclaimable += size;
        }
        if let Some(a) = verbose["Containers"].as_array_mut() {
            a.push(serde_json::json!({"ID": e.id, "Names": e.name(), "Image": e.record().config.image, "SizeRw": size, "State": e.state().status.as_str()}));
        }
    }
    rows.push(ctr);

    let mut vol = DfRow {
        kind: "Local Volumes".into(),
        ..Default::default()
    };
    for v in c.volumes.store.list() {
        let size = c.volumes.store.size(&v.name);
        let links = c.volume_users(&v.name).len();
        vol.total += 1;
        vol.size += size;
        if links > 0 {
            vol.active += 1;
        } else {
            vol.reclaimable += size;
        }
        if let Some(a) = verbose["Volumes"].as_array_mut() {
            a.push(serde_json::json!({"Name": v.name, "Links": links, "Size": size}));
        }
    }
    rows.push(vol);
    rows.push(DfRow {
        kind: "Build Cache".into(),
        ..Default::default()
    });
    Ok(DfResponse {
        rows,
        verbose_json: verbose.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_filters() {
        let now = chrono::Utc::now();
        let labels: std::collections::BTreeMap<String, String> =
            [("a".to_string(), "1".to_string())].into();
        assert!(created_matches(now, &labels, &[]));
        assert!(created_matches(
            now,
            &labels,
            &["label=a".into(), "label=a=1".into()]
        ));
        assert!(!created_matches(now, &labels, &["label!=a".into()]));
        assert!(
            !created_matches(now, &labels, &["until=1h".into()]),
            "created now is not older than 1h"
        );
        assert!(created_matches(
            now - chrono::Duration::hours(2),
            &labels,
            &["until=1h".into()]
        ));
        assert!(created_matches(
            now,
            &labels,
            &[format!("until={}", now.timestamp() + 10)]
        ));
    }
}
