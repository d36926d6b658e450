//! Docker API: `/networks` endpoints. Every call goes to `request::networks` (the same
//! functions `skiff network` uses); this file only translates Docker's JSON, filters and
//! status codes.

use super::{json, no_content, ok_json, ApiError, DockerApi, Filters, Req, Resp, Result};
use crate::network;
use crate::request::networks as rpc;
use bollard_stubs::models::{
    NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest,
};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use skiff_proto::engine as pb;

pub(super) async fn route(api: &DockerApi, mut req: Req) -> Result<Resp> {
    let segs: Vec<String> = req.segs.clone();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (&req.method, segs.as_slice()) {
        (&Method::GET, ["networks"]) => list(api, &req).await,
        (&Method::POST, ["networks", "create"]) => create(api, &mut req).await,
        (&Method::POST, ["networks", "prune"]) => prune(api, &req).await,
        (&Method::GET, ["networks", id]) => inspect(api, &req, id).await,
        (&Method::DELETE, ["networks", id]) => remove(api, id).await,
        (&Method::POST, ["networks", id, "connect"]) => connect(api, &mut req, id).await,
        (&Method::POST, ["networks", id, "disconnect"]) => disconnect(api, &mut req, id).await,
        _ => Err(super::not_found_route(&req.method, &req.path)),
    }
}

/// Docker answers 403 Forbidden for the networks it will not remove or join (active
/// endpoints, pre-defined networks, an endpoint already there); the engine says 409.
fn forbidden_if_docker_says_so(e: ApiError) -> ApiError {
    const FORBIDDEN: [&str; 4] = [
        "has active endpoints",
        "pre-defined network",
        "already exists in network",
        "is in use by service",
    ];
    if FORBIDDEN.iter().any(|m| e.message.contains(m)) {
        ApiError::new(StatusCode::FORBIDDEN, e.message)
    } else {
        e
    }
}

/// Every network in Docker's inspect shape, with the engine's endpoints.
async fn all_networks(api: &DockerApi) -> Vec<(skiff_runtime::network::Network, Value, usize)> {
    let mut out = api.containers.networks.list().await;
    // A manager knows every cluster network, also those without a side on this node
    // (no task here uses them): `docker stack deploy`/`rm` find a stack's networks by
    // its label, which the cluster keeps as the network's stack.
    let mut swarm: Vec<skiff_runtime::network::Network> = Vec::new();
    if let Some(h) = api.cluster.as_ref().and_then(|c| c.raft()) {
        use skiff_controller::orchestrator::stack::{StackNetwork, LABEL_STACK};
        h.store().read(|sm| {
            for o in sm.list(skiff_controller::orchestrator::types::KIND_NETWORK) {
                let Ok(spec) = serde_json::from_slice::<StackNetwork>(&o.spec) else {
                    continue;
                };
                if let Some(local) = out.iter_mut().find(|(n, ..)| n.id == o.id) {
                    if !spec.stack.is_empty() {
                        local
                            .0
                            .labels
                            .insert(LABEL_STACK.into(), spec.stack.clone());
                    }
                    continue;
                }
                // Just made: the controller has not given it a subnet yet.
                let (subnet, gateway) = spec
                    .alloc
                    .as_ref()
                    .map(|a| (a.subnet, a.gateway))
                    .unwrap_or((ipnet::Ipv4Net::default(), std::net::Ipv4Addr::UNSPECIFIED));
                let mut labels = std::collections::BTreeMap::new();
                if !spec.stack.is_empty() {
                    labels.insert(LABEL_STACK.to_string(), spec.stack.clone());
                }
                swarm.push(skiff_runtime::network::Network {
                    id: o.id.clone(),
                    name: o.name.clone(),
                    driver: spec.driver.clone(),
                    subnet,
                    gateway,
                    internal: spec.internal,
                    bridge: String::new(),
                    created: chrono::DateTime::UNIX_EPOCH,
                    labels,
                    overlay: None,
                });
            }
        })
    }
    let mut docs: Vec<_> = out
        .into_iter()
        .map(|(n, eps, used, cap)| {
            let doc = network::network_json(&n, &eps, used, cap);
            (n, doc, eps.len())
        })
        .collect();
    for n in swarm {
        let mut doc = network::network_json(&n, &[], 0, 0);
        doc["Scope"] = json!("swarm");
        doc["Options"] = json!({});
        if n.gateway.is_unspecified() {
            doc["IPAM"]["Config"] = json!([]);
        }
        docs.push((n, doc, 0));
    }
    docs
}

/// `GET /networks`: driver, id, label, name, scope, type, dangling filters.
async fn list(api: &DockerApi, req: &Req) -> Result<Resp> {
    let f = req.query.filters()?;
    f.only(&["driver", "id", "label", "name", "scope", "type", "dangling"])?;
    let nets = all_networks(api).await;
    let mut out = Vec::new();
    for (n, doc, endpoints) in nets {
        if list_matches(&n, &doc, endpoints, &f)? {
            out.push(doc);
        }
    }
    out.sort_by(|a, b| a["Name"].as_str().cmp(&b["Name"].as_str()));
    ok_json(&out)
}

/// Docker's network filters: values of one key OR, keys AND. `name` and `id` match
/// substrings as dockerd's do; the engine's own predicate decides the rest.
fn list_matches(
    n: &skiff_runtime::network::Network,
    doc: &Value,
    endpoints: usize,
    f: &Filters,
) -> Result<bool> {
    for (key, vals) in &f.0 {
        let hit = match key.as_str() {
            "name" => vals.iter().any(|v| n.name.contains(v.as_str())),
            "id" => vals.iter().any(|v| n.id.contains(v.as_str())),
            "scope" => vals
                .iter()
                .any(|v| doc["Scope"].as_str() == Some(v.as_str())),
            "type" => {
                for v in vals {
                    if v != "custom" && v != "builtin" {
                        return Err(ApiError::bad_request(format!(
                            "invalid filter: 'type'='{v}'"
                        )));
                    }
                }
                vals.iter().any(|v| rpc::matches(n, &[format!("type={v}")]))
            }
            "dangling" => {
                let want = match vals.first().map(String::as_str) {
                    Some("true" | "1") => true,
                    Some("false" | "0") => false,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "invalid filter 'dangling={}'",
                            other.unwrap_or_default()
                        )))
                    }
                };
                // Docker: a network is dangling when it is user-defined and unused.
                let dangling = !n.is_default() && endpoints == 0;
                dangling == want
            }
            // driver, label: the engine's predicate (label ANDs per value, as Docker's).
            "driver" => vals
                .iter()
                .any(|v| rpc::matches(n, &[format!("driver={v}")])),
            "label" => vals
                .iter()
                .all(|v| rpc::matches(n, &[format!("label={v}")])),
            _ => true,
        };
        if !hit {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `GET /networks/{id}` (`?scope=` narrows; `?verbose` adds nothing for local networks).
async fn inspect(api: &DockerApi, req: &Req, key: &str) -> Result<Resp> {
    let doc = match api.containers.networks.inspect(key).await {
        Ok(doc) => doc,
        // A cluster network without a side on this node, known to a manager.
        Err(e) => all_networks(api)
            .await
            .into_iter()
            .find(|(n, ..)| {
                n.id == key || n.name == key || (key.len() >= 6 && n.id.starts_with(key))
            })
            .map(|(_, doc, _)| doc)
            .ok_or(e)?,
    };
    if let Some(scope) = req.query.get("scope").filter(|s| !s.is_empty()) {
        if doc["Scope"].as_str() != Some(scope) {
            return Err(ApiError::not_found(format!("network {key} not found")));
        }
    }
    ok_json(&doc)
}

/// Checks a create request against what the engine supports, so nothing is half made:
/// returns the engine's request and the warning to give back.
fn create_request(r: NetworkCreateRequest) -> Result<(pb::NetworkCreateRequest, String)> {
    let driver = r.driver.clone().unwrap_or_default();
    let driver = match driver.as_str() {
        "" | "bridge" => "bridge",
        "overlay" => "overlay",
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid Driver {other:?}: plugin \"{other}\" not found (Skiff's drivers are bridge and overlay)"
            )))
        }
    };
    if r.enable_ipv6 == Some(true) {
        return Err(ApiError::bad_request(
            "EnableIPv6: IPv6 networks are not supported by Skiff",
        ));
    }
    if r.enable_ipv4 == Some(false) {
        return Err(ApiError::bad_request(
            "EnableIPv4: IPv4 cannot be disabled on Skiff networks",
        ));
    }
    if r.ingress == Some(true) {
        return Err(ApiError::bad_request(
            "Ingress: Skiff makes its ingress network itself, for services that publish ports and name no network",
        ));
    }
    if r.config_only == Some(true)
        || r.config_from
            .as_ref()
            .and_then(|c| c.network.as_deref())
            .is_some_and(|n| !n.is_empty())
    {
        return Err(ApiError::bad_request(
            "ConfigOnly/ConfigFrom: config-only networks are not supported by Skiff",
        ));
    }
    let ipam = r.ipam.unwrap_or_default();
    if let Some(d) = ipam
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "default")
    {
        return Err(ApiError::bad_request(format!(
            "invalid IPAM.Driver {d:?}: only the default IPAM driver is supported"
        )));
    }
    let configs = ipam.config.unwrap_or_default();
    if configs.len() > 1 {
        return Err(ApiError::bad_request(
            "IPAM.Config: Skiff networks take one IPv4 subnet",
        ));
    }
    let (mut subnet, mut gateway) = (String::new(), String::new());
    if let Some(c) = configs.into_iter().next() {
        subnet = c.subnet.unwrap_or_default();
        gateway = c.gateway.unwrap_or_default();
        if !subnet.is_empty() {
            let net: ipnet::IpNet = subnet.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid IPAM.Config[0].Subnet {subnet:?}: not a CIDR"
                ))
            })?;
            if !matches!(net, ipnet::IpNet::V4(_)) {
                return Err(ApiError::bad_request(format!(
                    "invalid IPAM.Config[0].Subnet {subnet:?}: IPv6 networks are not supported by Skiff"
                )));
            }
        }
        if !gateway.is_empty() {
            if subnet.is_empty() {
                return Err(ApiError::bad_request(
                    "IPAM.Config[0].Gateway needs IPAM.Config[0].Subnet",
                ));
            }
            gateway.parse::<std::net::Ipv4Addr>().map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid IPAM.Config[0].Gateway {gateway:?}: not an IPv4 address"
                ))
            })?;
        }
        // A range equal to the subnet is the default; anything narrower is not served.
        if let Some(range) = c.ip_range.filter(|r| !r.is_empty() && *r != subnet) {
            return Err(ApiError::bad_request(format!(
                "IPAM.Config[0].IPRange {range:?}: address ranges narrower than the subnet are not supported by Skiff"
            )));
        }
        if c.auxiliary_addresses.is_some_and(|a| !a.is_empty()) {
            return Err(ApiError::bad_request(
                "IPAM.Config[0].AuxiliaryAddresses: not supported by Skiff",
            ));
        }
    }
    let mut ignored: Vec<String> = r
        .options
        .unwrap_or_default()
        .into_keys()
        .chain(ipam.options.unwrap_or_default().into_keys())
        .collect();
    ignored.sort();
    let warning = if ignored.is_empty() {
        String::new()
    } else {
        format!(
            "options not supported by Skiff were ignored: {}",
            ignored.join(", ")
        )
    };
    Ok((
        pb::NetworkCreateRequest {
            name: r.name,
            driver: driver.into(),
            subnet,
            gateway,
            internal: r.internal.unwrap_or(false),
            labels: r.labels.unwrap_or_default().into_iter().collect(),
            attachable: r.attachable.unwrap_or(false),
        },
        warning,
    ))
}

/// `POST /networks/create` → 201 `{"Id","Warning"}`.
async fn create(api: &DockerApi, req: &mut Req) -> Result<Resp> {
    let body: NetworkCreateRequest = req
        .json_opt()
        .await?
        .ok_or_else(|| ApiError::bad_request("request body is required"))?;
    if body.name.is_empty() {
        return Err(ApiError::bad_request("Name: a network name is required"));
    }
    let (r, warning) = create_request(body)?;
    let out = rpc::create_any(&api.containers, api.cluster.as_ref(), r).await?;
    Ok(json(
        StatusCode::CREATED,
        &json!({ "Id": out.id, "Warning": warning }),
    ))
}

/// `DELETE /networks/{id}` → 204.
async fn remove(api: &DockerApi, key: &str) -> Result<Resp> {
    rpc::remove_any(&api.containers, api.cluster.as_ref(), key)
        .await
        .map_err(|s| forbidden_if_docker_says_so(s.into()))?;
    no_content()
}

/// `POST /networks/{id}/connect`: aliases and a fixed IPv4 address.
async fn connect(api: &DockerApi, req: &mut Req, key: &str) -> Result<Resp> {
    let body: NetworkConnectRequest = req
        .json_opt()
        .await?
        .ok_or_else(|| ApiError::bad_request("request body is required"))?;
    if body.container.is_empty() {
        return Err(ApiError::bad_request("Container: a container is required"));
    }
    let ep = body.endpoint_config.unwrap_or_default();
    let ipam = ep.ipam_config.unwrap_or_default();
    if ipam.ipv6_address.as_deref().is_some_and(|a| !a.is_empty()) {
        return Err(ApiError::bad_request(
            "EndpointConfig.IPAMConfig.IPv6Address: IPv6 is not supported by Skiff",
        ));
    }
    // The network must exist before the container is looked at (Docker's order).
    api.containers.networks.resolve(key).await?;
    rpc::connect(
        &api.containers,
        pb::NetworkConnectRequest {
            network: key.to_string(),
            container: body.container,
            ipv4_address: ipam.ipv4_address.unwrap_or_default(),
            aliases: ep.aliases.unwrap_or_default(),
            force: false,
        },
    )
    .await
    .map_err(|e| forbidden_if_docker_says_so(e.into()))?;
    ok_empty()
}

/// `POST /networks/{id}/disconnect`.
async fn disconnect(api: &DockerApi, req: &mut Req, key: &str) -> Result<Resp> {
    let body: NetworkDisconnectRequest = req
        .json_opt()
        .await?
        .ok_or_else(|| ApiError::bad_request("request body is required"))?;
    if body.container.is_empty() {
        return Err(ApiError::bad_request("Container: a container is required"));
    }
    api.containers.networks.resolve(key).await?;
    rpc::disconnect(
        &api.containers,
        pb::NetworkConnectRequest {
            network: key.to_string(),
            container: body.container,
            force: body.force.unwrap_or(false),
            ..Default::default()
        },
    )
    .await?;
    ok_empty()
}

/// `POST /networks/prune` (`until`, `label`, `label!` filters).
async fn prune(api: &DockerApi, req: &Req) -> Result<Resp> {
    let f = req.query.filters()?;
    f.only(&["until", "label", "label!"])?;
    let deleted = rpc::prune(&api.containers, &f.to_kv()).await;
    ok_json(&json!({ "NetworksDeleted": deleted }))
}

/// `200 OK` with an empty body (connect, disconnect).
fn ok_empty() -> Result<Resp> {
    let mut r = hyper::Response::new(super::full(Vec::new()));
    *r.status_mut() = StatusCode::OK;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> NetworkCreateRequest {
        serde_json::from_value(v).expect("request")
    }

    #[test]
    fn create_requests_are_checked_before_anything_is_made() {
        let (r, w) = create_request(req(json!({
            "Name": "n1", "CheckDuplicate": true, "Driver": "bridge", "Internal": true,
            "Labels": {"a": "b"},
            "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.1"}]}
        })))
        .expect("valid");
        assert_eq!(r.name, "n1");
        assert_eq!(r.driver, "bridge");
        assert_eq!(r.subnet, "10.9.0.0/24");
        assert_eq!(r.gateway, "10.9.0.1");
        assert!(r.internal);
        assert_eq!(r.labels.get("a").map(String::as_str), Some("b"));
        assert!(w.is_empty());

        let e = create_request(req(json!({"Name": "n", "Driver": "macvlan"}))).expect_err("driver");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("Driver"), "{}", e.message);
        let e = create_request(req(json!({"Name": "n", "EnableIPv6": true}))).expect_err("v6");
        assert!(e.message.contains("EnableIPv6"), "{}", e.message);
        let e = create_request(req(
            json!({"Name": "n", "IPAM": {"Config": [{"Subnet": "nope"}]}}),
        ))
        .expect_err("subnet");
        assert!(e.message.contains("IPAM.Config[0].Subnet"), "{}", e.message);
        let e = create_request(req(
            json!({"Name": "n", "IPAM": {"Config": [{"Subnet": "fd00::/64"}]}}),
        ))
        .expect_err("v6 subnet");
        assert!(e.message.contains("IPv6"), "{}", e.message);
        let e = create_request(req(
            json!({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.9.0.0/16", "IPRange": "10.9.1.0/24"}]}}),
        ))
        .expect_err("range");
        assert!(e.message.contains("IPRange"), "{}", e.message);
        let (_, w) = create_request(req(
            json!({"Name": "n", "Options": {"com.docker.network.driver.mtu": "1400"}}),
        ))
        .expect("options are a warning");
        assert!(w.contains("com.docker.network.driver.mtu"), "{w}");
    }

    #[test]
    fn filters_follow_docker() {
        let n = skiff_runtime::network::Network {
            id: "abcdef".into(),
            name: "front".into(),
            driver: "bridge".into(),
            subnet: "10.1.0.0/24".parse().expect("net"),
            gateway: "10.1.0.1".parse().expect("ip"),
            internal: false,
            bridge: "br".into(),
            created: chrono::Utc::now(),
            labels: [("tier".to_string(), "web".to_string())].into(),
            overlay: None,
        };
        let doc = network::network_json(&n, &[], 0, 254);
        let f = |s: &str| Filters::parse(s).expect("filters");
        assert!(list_matches(&n, &doc, 0, &f(r#"{"name":{"ron":true}}"#)).expect("ok"));
        assert!(!list_matches(&n, &doc, 0, &f(r#"{"name":{"back":true}}"#)).expect("ok"));
        assert!(list_matches(&n, &doc, 0, &f(r#"{"type":{"custom":true}}"#)).expect("ok"));
        assert!(!list_matches(&n, &doc, 0, &f(r#"{"type":{"builtin":true}}"#)).expect("ok"));
        assert!(list_matches(&n, &doc, 0, &f(r#"{"dangling":{"true":true}}"#)).expect("ok"));
        assert!(!list_matches(&n, &doc, 1, &f(r#"{"dangling":{"true":true}}"#)).expect("ok"));
        assert!(list_matches(&n, &doc, 0, &f(r#"{"label":{"tier=web":true}}"#)).expect("ok"));
        assert!(!list_matches(&n, &doc, 0, &f(r#"{"label":{"tier=db":true}}"#)).expect("ok"));
        assert!(list_matches(&n, &doc, 0, &f(r#"{"scope":{"local":true}}"#)).expect("ok"));
        assert!(list_matches(&n, &doc, 0, &f(r#"{"type":{"x":true}}"#)).is_err());
    }
}
