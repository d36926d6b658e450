//! Swarm's `deploy:` section: mode and replicas, placement, resources, restart,
//! update and rollback policies. Missing fields take Swarm's defaults.

use crate::convert::Cx;
use crate::error::Result;
use crate::spec::*;
use crate::value::*;
use crate::yaml::{Node, Value};

pub(crate) fn deploy(cx: &mut Cx, n: &Node, f: &str) -> Result<Deploy> {
    let e = fields(
        cx.diag,
        n,
        f,
        &[
            ("mode", K::Ok),
            ("replicas", K::Ok),
            ("placement", K::Ok),
            ("resources", K::Ok),
            ("restart_policy", K::Ok),
            ("update_config", K::Ok),
            ("rollback_config", K::Ok),
            ("endpoint_mode", K::Ok),
            ("labels", K::Ok),
        ],
    )?;
    let mut d = Deploy::default();
    let global = match get_some(e, "mode") {
        None => false,
        Some(m) => {
            let mf = sub(f, "mode");
            match scalar(cx.diag, m, &mf, "a mode")? {
                "replicated" => false,
                "global" => true,
                "replicated-job" | "global-job" => {
                    return Err(cx.diag.invalid(
                        m.pos,
                        &mf,
                        "jobs are not supported yet (expected replicated or global)",
                    ))
                }
                other => {
                    return Err(cx.diag.invalid(
                        m.pos,
                        &mf,
                        format!("invalid mode {other:?} (expected replicated or global)"),
                    ))
                }
            }
        }
    };
    let replicas = get_some(e, "replicas").map(|r| (r, uint(cx.diag, r, &sub(f, "replicas"))));
    d.mode = match (global, replicas) {
        (true, Some((r, _))) => {
            return Err(cx.diag.invalid(
                r.pos,
                &sub(f, "replicas"),
                "replicas can only be used with replicated mode",
            ))
        }
        (true, None) => ServiceMode::Global,
        (false, Some((_, v))) => ServiceMode::Replicated { replicas: v? },
        (false, None) => ServiceMode::Replicated { replicas: 1 },
    };
    if let Some(m) = get_some(e, "endpoint_mode") {
        let mf = sub(f, "endpoint_mode");
        d.endpoint_mode = match scalar(cx.diag, m, &mf, "an endpoint mode")? {
            "vip" => EndpointMode::Vip,
            "dnsrr" => EndpointMode::Dnsrr,
            other => {
                return Err(cx.diag.invalid(
                    m.pos,
                    &mf,
                    format!("invalid endpoint_mode {other:?} (expected vip or dnsrr)"),
                ))
            }
        };
    }
    d.labels = labels(cx.diag, get(e, "labels"), &sub(f, "labels"))?;
    if let Some(p) = get_some(e, "placement") {
        d.placement = placement(cx, p, &sub(f, "placement"))?;
        if let (true, Some(_)) = (global, d.placement.max_replicas_per_node) {
            let pos = p
                .get("max_replicas_per_node")
                .map(|x| x.pos)
                .unwrap_or(p.pos);
            return Err(cx.diag.invalid(
                pos,
                &sub(f, "placement.max_replicas_per_node"),
                "max_replicas_per_node can only be used with replicated mode",
            ));
        }
    }
    if let Some(r) = get_some(e, "resources") {
        d.resources = resources(cx, r, &sub(f, "resources"))?;
    }
    if let Some(r) = get_some(e, "restart_policy") {
        d.restart_policy = restart_policy(cx, r, &sub(f, "restart_policy"))?;
    }
    if let Some(u) = get_some(e, "update_config") {
        d.update_config = update_config(cx, u, &sub(f, "update_config"), true)?;
    }
    if let Some(u) = get_some(e, "rollback_config") {
        d.rollback_config = update_config(cx, u, &sub(f, "rollback_config"), false)?;
    }
    Ok(d)
}

fn placement(cx: &mut Cx, n: &Node, f: &str) -> Result<Placement> {
    let e = fields(
        cx.diag,
        n,
        f,
        &[
            ("constraints", K::Ok),
            ("preferences", K::Ok),
            ("max_replicas_per_node", K::Ok),
        ],
    )?;
    let mut p = Placement::default();
    if let Some(c) = get_some(e, "constraints") {
        let cf = sub(f, "constraints");
        let Value::Seq(items) = &c.value else {
            return Err(cx.diag.invalid(
                c.pos,
                &cf,
                format!("expected a list of constraints, found {}", c.describe()),
            ));
        };
        for (i, it) in items.iter().enumerate() {
            let itf = idx(&cf, i);
            let text = scalar(cx.diag, it, &itf, "a constraint such as node.role==manager")?;
            let c: Constraint = text
                .parse()
                .map_err(|m: String| cx.diag.invalid(it.pos, &itf, m))?;
            if !p.constraints.contains(&c) {
                p.constraints.push(c);
            }
        }
    }
    if let Some(c) = get_some(e, "preferences") {
        let pf = sub(f, "preferences");
        let Value::Seq(items) = &c.value else {
            return Err(cx.diag.invalid(
                c.pos,
                &pf,
                format!("expected a list of preferences, found {}", c.describe()),
            ));
        };
        for (i, it) in items.iter().enumerate() {
            let itf = idx(&pf, i);
            let pe = fields(cx.diag, it, &itf, &[("spread", K::Ok)])?;
            let Some(s) = get_some(pe, "spread") else {
                return Err(cx.diag.invalid(it.pos, &itf, "expected spread: ATTRIBUTE"));
            };
            let sf = sub(&itf, "spread");
            let text = scalar(cx.diag, s, &sf, "a node attribute such as node.labels.zone")?;
            let spread = text
                .trim()
                .parse()
                .map_err(|m: String| cx.diag.invalid(s.pos, &sf, m))?;
            p.preferences.push(Preference { spread });
        }
    }
    if let Some(m) = get_some(e, "max_replicas_per_node") {
        p.max_replicas_per_node = Some(uint(cx.diag, m, &sub(f, "max_replicas_per_node"))?);
    }
    Ok(p)
}

pub(crate) fn cpus(cx: &Cx, n: &Node, f: &str) -> Result<u64> {
    let v = float(cx.diag, n, f)?;
    if !(0.0..=1e6).contains(&v) {
        return Err(cx.diag.invalid(
            n.pos,
            f,
            format!("invalid cpus {v} (expected a positive number such as \"0.5\")"),
        ));
    }
    Ok((v * 1e9).round() as u64)
}

fn resources(cx: &mut Cx, n: &Node, f: &str) -> Result<Resources> {
    let e = fields(cx.diag, n, f, &[("limits", K::Ok), ("reservations", K::Ok)])?;
    let mut r = Resources::default();
    if let Some(l) = get_some(e, "limits") {
        let lf = sub(f, "limits");
        let le = fields(
            cx.diag,
            l,
            &lf,
            &[("cpus", K::Ok), ("memory", K::Ok), ("pids", K::Ok)],
        )?;
        let mut lim = ResourceLimits::default();
        if let Some(c) = get_some(le, "cpus") {
            lim.nano_cpus = Some(cpus(cx, c, &sub(&lf, "cpus"))?);
        }
        if let Some(m) = get_some(le, "memory") {
            lim.memory_bytes = Some(bytes(cx.diag, m, &sub(&lf, "memory"))?);
        }
        if let Some(p) = get_some(le, "pids") {
            let pf = sub(&lf, "pids");
            let v = int(cx.diag, p, &pf)?;
            if v < -1 {
                return Err(cx
                    .diag
                    .invalid(p.pos, &pf, "pids must be -1 (unlimited), 0 or more"));
            }
            lim.pids = Some(v);
        }
        r.limits = Some(lim);
    }
    if let Some(l) = get_some(e, "reservations") {
        let lf = sub(f, "reservations");
        let le = fields(
            cx.diag,
            l,
            &lf,
            &[
                ("cpus", K::Ok),
                ("memory", K::Ok),
                (
                    "devices",
                    K::Warn(": device reservations are not supported"),
                ),
                (
                    "generic_resources",
                    K::Warn(": generic resources are not supported"),
                ),
            ],
        )?;
        let mut res = ResourceReservations::default();
        if let Some(c) = get_some(le, "cpus") {
            res.nano_cpus = Some(cpus(cx, c, &sub(&lf, "cpus"))?);
        }
        if let Some(m) = get_some(le, "memory") {
            res.memory_bytes = Some(bytes(cx.diag, m, &sub(&lf, "memory"))?);
        }
        r.reservations = Some(res);
    }
    Ok(r)
}

fn restart_policy(cx: &mut Cx, n: &Node, f: &str) -> Result<RestartPolicy> {
    let e = fields(
        cx.diag,
        n,
        f,
        &[
            ("condition", K::Ok),
            ("delay", K::Ok),
            ("max_attempts", K::Ok),
            ("window", K::Ok),
        ],
    )?;
    let mut r = RestartPolicy::default();
    if let Some(c) = get_some(e, "condition") {
        let cf = sub(f, "condition");
        r.condition = match scalar(cx.diag, c, &cf, "a condition")? {
            "none" => RestartCondition::None,
            "on-failure" => RestartCondition::OnFailure,
            "any" => RestartCondition::Any,
            other => {
                return Err(cx.diag.invalid(
                    c.pos,
                    &cf,
                    format!("invalid condition {other:?} (expected none, on-failure or any)"),
                ))
            }
        };
    }
    if let Some(v) = get_some(e, "delay") {
        r.delay = duration(cx.diag, v, &sub(f, "delay"))?;
    }
    if let Some(v) = get_some(e, "max_attempts") {
        r.max_attempts = Some(uint(cx.diag, v, &sub(f, "max_attempts"))?);
    }
    if let Some(v) = get_some(e, "window") {
        r.window = Some(duration(cx.diag, v, &sub(f, "window"))?);
    }
    Ok(r)
}

fn update_config(cx: &mut Cx, n: &Node, f: &str, update: bool) -> Result<UpdateConfig> {
    let e = fields(
        cx.diag,
        n,
        f,
        &[
            ("parallelism", K::Ok),
            ("delay", K::Ok),
            ("failure_action", K::Ok),
            ("monitor", K::Ok),
            ("max_failure_ratio", K::Ok),
            ("order", K::Ok),
        ],
    )?;
    let mut u = UpdateConfig::default();
    if let Some(v) = get_some(e, "parallelism") {
        u.parallelism = uint(cx.diag, v, &sub(f, "parallelism"))?;
    }
    if let Some(v) = get_some(e, "delay") {
        u.delay = duration(cx.diag, v, &sub(f, "delay"))?;
    }
    if let Some(v) = get_some(e, "monitor") {
        u.monitor = duration(cx.diag, v, &sub(f, "monitor"))?;
    }
    if let Some(v) = get_some(e, "failure_action") {
        let af = sub(f, "failure_action");
        u.failure_action = match scalar(cx.diag, v, &af, "a failure action")? {
            "pause" => FailureAction::Pause,
            "continue" => FailureAction::Continue,
            "rollback" if update => FailureAction::Rollback,
            other => {
                let expected = if update {
                    "pause, continue or rollback"
                } else {
                    "pause or continue"
                };
                return Err(cx.diag.invalid(
                    v.pos,
                    &af,
                    format!("invalid failure_action {other:?} (expected {expected})"),
                ));
            }
        };
    }
    if let Some(v) = get_some(e, "max_failure_ratio") {
        let rf = sub(f, "max_failure_ratio");
        let r = float(cx.diag, v, &rf)?;
        if !(0.0..=1.0).contains(&r) {
            return Err(cx.diag.invalid(
                v.pos,
                &rf,
                format!("max_failure_ratio {r} is not between 0 and 1"),
            ));
        }
        u.max_failure_ratio = r;
    }
    if let Some(v) = get_some(e, "order") {
        let of = sub(f, "order");
        u.order = match scalar(cx.diag, v, &of, "an order")? {
            "stop-first" => UpdateOrder::StopFirst,
            "start-first" => UpdateOrder::StartFirst,
            other => {
                return Err(cx.diag.invalid(
                    v.pos,
                    &of,
                    format!("invalid order {other:?} (expected stop-first or start-first)"),
                ))
            }
        };
    }
    Ok(u)
}
