//! The churn limit: how many routes one re-plan may change.
//!
//! A route is one router's next hops for one destination. When a candidate
//! changes more routes than the limit allows, the re-plan takes the
//! candidate's routes for whole destinations only, heaviest destination
//! first, while they fit: a destination's forwarding always comes from one
//! plan, so mixing two plans cannot make a loop (each plan's routes towards
//! a destination are loop-free on their own). Pins and rate limits follow
//! the candidate.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Weights closer than this are the same route (the kernel's integer
/// weights cannot tell them apart anyway).
const WEIGHT_TOLERANCE: f64 = 1e-3;

/// One router's routes by destination: next hop -> weight.
fn routes_of(part: Option<&Value>) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut routes = BTreeMap::new();
    let Some(list) = part.and_then(|p| p.get("routes")).and_then(Value::as_array) else {
        return routes;
    };
    for route in list {
        let Some(destination) = route.get("destination").and_then(Value::as_str) else {
            continue;
        };
        let hops: BTreeMap<String, f64> = route
            .get("next_hops")
            .and_then(Value::as_array)
            .map(|hops| {
                hops.iter()
                    .filter_map(|hop| {
                        Some((
                            hop.get("next_hop")?.as_str()?.to_string(),
                            hop.get("weight")?.as_f64()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        routes.insert(destination.to_string(), hops);
    }
    routes
}

fn same_route(a: Option<&BTreeMap<String, f64>>, b: Option<&BTreeMap<String, f64>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.len() == b.len()
                && a.iter().all(|(hop, weight)| {
                    b.get(hop)
                        .is_some_and(|other| (other - weight).abs() <= WEIGHT_TOLERANCE)
                })
        }
        _ => false,
    }
}

/// Per destination, the routers whose route to it differs between `old`
/// and `new`.
pub fn changed_routes(
    old: &BTreeMap<String, Value>,
    new: &BTreeMap<String, Value>,
) -> BTreeMap<String, BTreeSet<String>> {
    let routers: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let mut changed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for router in routers {
        let (before, after) = (routes_of(old.get(router)), routes_of(new.get(router)));
        let destinations: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        for destination in destinations {
            if !same_route(before.get(destination), after.get(destination)) {
                changed
                    .entry(destination.clone())
                    .or_default()
                    .insert(router.clone());
            }
        }
    }
    changed
}

/// What the limit made of a candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Limited {
    pub desired: BTreeMap<String, Value>,
    /// Routes the result changes, and the candidate would have changed.
    pub changed: usize,
    pub wanted: usize,
    /// Destinations whose candidate routes were left out.
    pub deferred: Vec<String>,
}

/// `new`, or as much of it as `max_routes` allows (0: no limit), taking
/// whole destinations in the order of `weight` (heaviest first, then by
/// name).
pub fn limit_churn(
    old: &BTreeMap<String, Value>,
    new: &BTreeMap<String, Value>,
    max_routes: usize,
    weight: impl Fn(&str) -> f64,
) -> Limited {
    let changed = changed_routes(old, new);
    let wanted: usize = changed.values().map(BTreeSet::len).sum();
    if max_routes == 0 || wanted <= max_routes {
        return Limited {
            desired: new.clone(),
            changed: wanted,
            wanted,
            deferred: Vec::new(),
        };
    }
    let mut order: Vec<(&String, &BTreeSet<String>)> = changed.iter().collect();
    order.sort_by(|a, b| weight(b.0).total_cmp(&weight(a.0)).then(a.0.cmp(b.0)));
    let mut taken: BTreeSet<&str> = BTreeSet::new();
    let mut deferred = Vec::new();
    let mut budget = max_routes;
    for (destination, routers) in order {
        if routers.len() <= budget {
            budget -= routers.len();
            taken.insert(destination.as_str());
        } else {
            deferred.push(destination.clone());
        }
    }
    let routers: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let mut desired = BTreeMap::new();
    for router in routers {
        // Start from the candidate's part (pins, rate limits), then put the
        // old routes back for the deferred destinations.
        let mut part = new
            .get(router)
            .cloned()
            .unwrap_or_else(|| serde_json::json!({ "routes": [] }));
        let old_routes: Vec<Value> = old
            .get(router)
            .and_then(|p| p.get("routes"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let destination_of = |route: &Value| {
            route
                .get("destination")
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let mut routes: Vec<Value> = part
            .get("routes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|route| {
                destination_of(route)
                    .is_some_and(|d| taken.contains(d.as_str()) || !changed.contains_key(&d))
            })
            .collect();
        routes.extend(old_routes.into_iter().filter(|route| {
            destination_of(route)
                .is_some_and(|d| changed.contains_key(&d) && !taken.contains(d.as_str()))
        }));
        routes.sort_by_key(|route| destination_of(route).unwrap_or_default());
        part["routes"] = Value::Array(routes);
        desired.insert(router.clone(), part);
    }
    let result = changed_routes(old, &desired);
    Limited {
        changed: result.values().map(BTreeSet::len).sum(),
        desired,
        wanted,
        deferred,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn part(routes: &[(&str, &[(&str, f64)])]) -> Value {
        let routes: Vec<Value> = routes
            .iter()
            .map(|(destination, hops)| {
                let hops: Vec<Value> = hops
                    .iter()
                    .map(|(hop, weight)| json!({"next_hop": hop, "weight": weight}))
                    .collect();
                json!({"destination": destination, "next_hops": hops})
            })
            .collect();
        json!({ "routes": routes })
    }

    #[test]
    fn changes_are_counted_per_router_and_destination() {
        let old = BTreeMap::from([
            (
                "r1".to_string(),
                part(&[("r4", &[("r2", 1.0)]), ("r5", &[("r2", 1.0)])]),
            ),
            ("r2".to_string(), part(&[("r4", &[("r4", 1.0)])])),
        ]);
        let new = BTreeMap::from([
            (
                "r1".to_string(),
                part(&[("r4", &[("r2", 0.5), ("r3", 0.5)]), ("r5", &[("r2", 1.0)])]),
            ),
            ("r2".to_string(), part(&[("r4", &[("r4", 1.0004)])])),
            ("r3".to_string(), part(&[("r4", &[("r4", 1.0)])])),
        ]);
        let changed = changed_routes(&old, &new);
        assert_eq!(changed.len(), 1);
        let routers: Vec<&str> = changed["r4"].iter().map(String::as_str).collect();
        // r2's weight moved less than the tolerance; r3's route is new.
        assert_eq!(routers, ["r1", "r3"]);
    }

    #[test]
    fn over_the_limit_whole_destinations_go_heaviest_first() {
        let old = BTreeMap::from([
            (
                "r1".to_string(),
                part(&[("a", &[("r2", 1.0)]), ("b", &[("r2", 1.0)])]),
            ),
            (
                "r2".to_string(),
                part(&[("a", &[("r9", 1.0)]), ("b", &[("r9", 1.0)])]),
            ),
        ]);
        let new = BTreeMap::from([
            (
                "r1".to_string(),
                part(&[("a", &[("r3", 1.0)]), ("b", &[("r3", 1.0)])]),
            ),
            (
                "r2".to_string(),
                part(&[("a", &[("r8", 1.0)]), ("b", &[("r8", 1.0)])]),
            ),
        ]);
        // Four changes wanted, room for two: b carries more, so b moves
        // whole and a stays as it was on both routers.
        let limited = limit_churn(&old, &new, 2, |d| if d == "b" { 10.0 } else { 1.0 });
        assert_eq!((limited.changed, limited.wanted), (2, 4));
        assert_eq!(limited.deferred, ["a"]);
        let hops = routes_of(limited.desired.get("r1"));
        assert!(hops["a"].contains_key("r2") && hops["b"].contains_key("r3"));
        let hops = routes_of(limited.desired.get("r2"));
        assert!(hops["a"].contains_key("r9") && hops["b"].contains_key("r8"));
        // No limit: the candidate as it is.
        assert_eq!(limit_churn(&old, &new, 0, |_| 0.0).desired, new);
    }
}
