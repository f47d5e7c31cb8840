//! The pure part of applying a desired state, shared by the kernel agent
//! ([`crate::Kernel`]) and the controller's simulated dataplane: the diff
//! from the observed state to the desired one, ordered into phases make
//! before break. Generation acceptance is the other shared part
//! ([`crate::version`]). The backends differ only in how they carry a
//! change out, as holo's dataplane backends do: netlink requests (a rate
//! limit becomes qdisc, class and filter requests), or a change to a
//! state held in memory ([`apply_in_memory`]).
//!
//! Phases, in order: routes (new paths and per-path tables exist first),
//! rules (pointing into those tables), rate limits; then what goes, in the
//! reverse order: rules, rate limits, routes. A failed phase stops the
//! rest, so a failure never leaves less forwarding state than before.
//!
//! The phases of the shared cases ([`shared_cases`]) are kept as a golden
//! file (`agent/tests/golden/diff.txt`), written again with
//! `AIWAN_UPDATE_GOLDEN=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::kernel::ApplyReport;
use crate::messages::{RouteKey, RouteObject};
use crate::state::{FlowRule, NodeState, RateLimit};

/// The phases of an apply, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Routes,
    Rules,
    RateLimits,
    StaleRules,
    StaleRateLimits,
    StaleRoutes,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Routes,
        Phase::Rules,
        Phase::RateLimits,
        Phase::StaleRules,
        Phase::StaleRateLimits,
        Phase::StaleRoutes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Routes => "routes",
            Phase::Rules => "rules",
            Phase::RateLimits => "rate limits",
            Phase::StaleRules => "stale rules",
            Phase::StaleRateLimits => "stale rate limits",
            Phase::StaleRoutes => "stale routes",
        }
    }
}

/// One change to one of aiwan's objects.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    CreateRoute(RouteObject),
    ReplaceRoute(RouteObject),
    DeleteRoute(RouteKey),
    /// A rule is never changed in place: a new one is added (replacing one
    /// of the same family and priority: `replacing`), the old one deleted
    /// in a later phase.
    AddRule {
        rule: FlowRule,
        replacing: bool,
    },
    DeleteRule(FlowRule),
    CreateRateLimit(RateLimit),
    ReplaceRateLimit(RateLimit),
    DeleteRateLimit(RateLimit),
}

impl Change {
    /// The phase the change belongs to.
    pub fn phase(&self) -> Phase {
        match self {
            Change::CreateRoute(_) | Change::ReplaceRoute(_) => Phase::Routes,
            Change::AddRule { .. } => Phase::Rules,
            Change::CreateRateLimit(_) | Change::ReplaceRateLimit(_) => Phase::RateLimits,
            Change::DeleteRule(_) => Phase::StaleRules,
            Change::DeleteRateLimit(_) => Phase::StaleRateLimits,
            Change::DeleteRoute(_) => Phase::StaleRoutes,
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::CreateRoute(route) => write!(f, "create {}", describe_route(route)),
            Change::ReplaceRoute(route) => write!(f, "replace {}", describe_route(route)),
            Change::DeleteRoute(key) => write!(f, "delete {key}"),
            Change::AddRule { rule, replacing } => write!(
                f,
                "{} {}",
                if *replacing { "replace" } else { "create" },
                describe_rule(rule)
            ),
            Change::DeleteRule(rule) => write!(f, "delete {}", describe_rule(rule)),
            Change::CreateRateLimit(limit) => write!(f, "create {}", describe_limit(limit)),
            Change::ReplaceRateLimit(limit) => write!(f, "replace {}", describe_limit(limit)),
            Change::DeleteRateLimit(limit) => write!(f, "delete {limit}"),
        }
    }
}

fn describe_route(route: &RouteObject) -> String {
    match route {
        RouteObject::Ucmp(r) => {
            let hops: Vec<String> = r
                .next_hops
                .iter()
                .map(|hop| format!("{hop} weight {}", hop.weight))
                .collect();
            format!("{r}: {}", hops.join(", "))
        }
        RouteObject::Srv6(p) => {
            let segments: Vec<String> = p.segments.iter().map(|s| s.to_string()).collect();
            format!("{p}: segs {} dev {}", segments.join(","), p.interface)
        }
        RouteObject::Sid(s) => format!("{s}: {} dev {}", s.action, s.interface),
    }
}

fn describe_rule(rule: &FlowRule) -> String {
    let mut text = format!("{rule}:");
    if let Some(source) = rule.source {
        text.push_str(&format!(" from {source}"));
    }
    if let Some(destination) = rule.destination {
        text.push_str(&format!(" to {destination}"));
    }
    if let Some(protocol) = rule.ip_protocol {
        text.push_str(&format!(" ipproto {protocol}"));
    }
    if let Some((first, last)) = rule.destination_ports {
        text.push_str(&format!(" dport {first}-{last}"));
    }
    if let Some((first, last)) = rule.source_ports {
        text.push_str(&format!(" sport {first}-{last}"));
    }
    if let Some(dscp) = rule.dscp {
        text.push_str(&format!(" dscp {dscp}"));
    }
    text.push_str(&format!(" lookup {}", rule.table));
    text
}

fn describe_limit(limit: &RateLimit) -> String {
    let classes: Vec<String> = limit
        .classes
        .iter()
        .map(|c| {
            format!(
                "{} rate {} ceil {} dscp {:?}",
                c.class_id, c.rate_bps, c.ceil_bps, c.dscp
            )
        })
        .collect();
    format!(
        "{limit}: link {:?} default {:?} classes [{}]",
        limit.link_bps,
        limit.default_class,
        classes.join("; ")
    )
}

/// Objects already as desired, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unchanged {
    pub routes: usize,
    pub rules: usize,
    pub rate_limits: usize,
}

impl Unchanged {
    pub fn total(&self) -> usize {
        self.routes + self.rules + self.rate_limits
    }
}

/// What it takes to go from one state to another, in phase order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diff {
    /// Ordered by phase; within a phase, by object.
    pub changes: Vec<Change>,
    pub unchanged: Unchanged,
}

impl Diff {
    /// The changes of `phase`, in order.
    pub fn phase(&self, phase: Phase) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(move |c| c.phase() == phase)
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The diff counted in objects (a route, a rule, a rate limit each
    /// one; a replaced rule once, not as an add and a delete).
    pub fn report(&self) -> ApplyReport {
        let mut report = self.routes_and_rules_report();
        report.unchanged += self.unchanged.rate_limits;
        for change in &self.changes {
            match change {
                Change::CreateRateLimit(_) => report.created += 1,
                Change::ReplaceRateLimit(_) => report.replaced += 1,
                Change::DeleteRateLimit(_) => report.deleted += 1,
                _ => {}
            }
        }
        report
    }

    /// [`Self::report`] of the routes and rules alone (the kernel counts
    /// a rate limit in qdiscs, classes and filters).
    pub fn routes_and_rules_report(&self) -> ApplyReport {
        let mut report = ApplyReport {
            unchanged: self.unchanged.routes + self.unchanged.rules,
            ..ApplyReport::default()
        };
        for change in &self.changes {
            match change {
                Change::CreateRoute(_)
                | Change::AddRule {
                    replacing: false, ..
                } => report.created += 1,
                Change::ReplaceRoute(_)
                | Change::AddRule {
                    replacing: true, ..
                } => report.replaced += 1,
                Change::DeleteRoute(_) => report.deleted += 1,
                Change::CreateRateLimit(_)
                | Change::ReplaceRateLimit(_)
                | Change::DeleteRateLimit(_) => {}
                Change::DeleteRule(old) => {
                    let superseded = self.changes.iter().any(|c| {
                        matches!(c, Change::AddRule { rule, replacing: true }
                            if rule.family == old.family && rule.priority == old.priority)
                    });
                    if !superseded {
                        report.deleted += 1;
                    }
                }
            }
        }
        report
    }
}

impl fmt::Display for Diff {
    /// One line per phase that has changes, each change indented below it;
    /// `no change` when there is none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            return writeln!(f, "no change ({} unchanged)", self.unchanged.total());
        }
        for phase in Phase::ALL {
            let mut changes = self.phase(phase).peekable();
            if changes.peek().is_none() {
                continue;
            }
            writeln!(f, "{}:", phase.as_str())?;
            for change in changes {
                writeln!(f, "  {change}")?;
            }
        }
        writeln!(f, "({} unchanged)", self.unchanged.total())
    }
}

/// The routes of a state, keyed as the kernel keys them, in canonical
/// form.
fn routes_of(state: &NodeState) -> BTreeMap<RouteKey, RouteObject> {
    let mut routes = BTreeMap::new();
    let all = state
        .routes
        .iter()
        .map(|r| RouteObject::Ucmp(r.normalized()))
        .chain(state.srv6_policies.iter().cloned().map(RouteObject::Srv6))
        .chain(state.local_sids.iter().cloned().map(RouteObject::Sid));
    for route in all {
        routes.insert(route.key(), route);
    }
    routes
}

/// The diff from `observed` to `desired` (see the module documentation).
pub fn diff(observed: &NodeState, desired: &NodeState) -> Diff {
    let mut out = Diff::default();
    let mut make = Vec::new();
    let mut stale = Vec::new();

    // Routes: one per table and prefix.
    let held = routes_of(observed);
    let wanted = routes_of(desired);
    for (key, route) in &wanted {
        match held.get(key) {
            Some(seen) if seen == route => out.unchanged.routes += 1,
            Some(_) => make.push(Change::ReplaceRoute(route.clone())),
            None => make.push(Change::CreateRoute(route.clone())),
        }
    }
    for key in held.keys().filter(|key| !wanted.contains_key(key)) {
        stale.push(Change::DeleteRoute(*key));
    }

    // Rules: equal ones are kept (each observed rule once); a desired rule
    // with the family and priority of a held one replaces it.
    let mut kept = BTreeSet::new();
    for rule in &desired.flow_rules {
        if let Some(i) = observed
            .flow_rules
            .iter()
            .enumerate()
            .position(|(i, seen)| !kept.contains(&i) && seen == rule)
        {
            kept.insert(i);
            out.unchanged.rules += 1;
            continue;
        }
        let replacing = observed
            .flow_rules
            .iter()
            .any(|seen| seen.family == rule.family && seen.priority == rule.priority);
        make.push(Change::AddRule {
            rule: rule.clone(),
            replacing,
        });
    }
    for (i, seen) in observed.flow_rules.iter().enumerate() {
        if !kept.contains(&i) {
            stale.push(Change::DeleteRule(seen.clone()));
        }
    }

    // Rate limits: one per interface.
    let held: BTreeMap<&str, RateLimit> = observed
        .rate_limits
        .iter()
        .map(|l| (l.interface.as_str(), l.normalized()))
        .collect();
    let wanted: BTreeMap<&str, RateLimit> = desired
        .rate_limits
        .iter()
        .map(|l| (l.interface.as_str(), l.normalized()))
        .collect();
    for (interface, limit) in &wanted {
        match held.get(interface) {
            Some(seen) if seen == limit => out.unchanged.rate_limits += 1,
            Some(_) => make.push(Change::ReplaceRateLimit(limit.clone())),
            None => make.push(Change::CreateRateLimit(limit.clone())),
        }
    }
    for (interface, limit) in &held {
        if !wanted.contains_key(interface) {
            stale.push(Change::DeleteRateLimit(limit.clone()));
        }
    }

    out.changes = make;
    out.changes.extend(stale);
    // Stable: within a phase, the order above (by key).
    out.changes.sort_by_key(Change::phase);
    out
}

/// The in-memory backend: carries `diff` out on `state`, phase by phase
/// (what the simulated dataplane does instead of netlink).
pub fn apply_in_memory(state: &mut NodeState, diff: &Diff) {
    for change in &diff.changes {
        match change {
            Change::CreateRoute(route) | Change::ReplaceRoute(route) => {
                remove_route(state, &route.key());
                match route {
                    RouteObject::Ucmp(r) => state.routes.push(r.clone()),
                    RouteObject::Srv6(p) => state.srv6_policies.push(p.clone()),
                    RouteObject::Sid(s) => state.local_sids.push(s.clone()),
                }
            }
            Change::DeleteRoute(key) => remove_route(state, key),
            Change::AddRule { rule, .. } => state.flow_rules.push(rule.clone()),
            Change::DeleteRule(rule) => {
                // The old one of a replaced pair, or a stale one: the first
                // held rule equal to it that is not also desired again.
                if let Some(i) = state.flow_rules.iter().position(|seen| seen == rule) {
                    state.flow_rules.remove(i);
                }
            }
            Change::CreateRateLimit(limit) | Change::ReplaceRateLimit(limit) => {
                state.rate_limits.retain(|l| l.interface != limit.interface);
                state.rate_limits.push(limit.clone());
            }
            Change::DeleteRateLimit(limit) => {
                state.rate_limits.retain(|l| l.interface != limit.interface);
            }
        }
    }
    *state = state.normalized();
}

fn remove_route(state: &mut NodeState, key: &RouteKey) {
    state
        .routes
        .retain(|r| RouteObject::Ucmp(r.clone()).key() != *key);
    state
        .srv6_policies
        .retain(|p| RouteObject::Srv6(p.clone()).key() != *key);
    state
        .local_sids
        .retain(|s| RouteObject::Sid(s.clone()).key() != *key);
}

/// A case both backends are tested on: from `observed` to `desired`.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub observed: NodeState,
    pub desired: NodeState,
}

/// The cases the kernel agent and the simulated dataplane must give the
/// same phases for (and which the golden file holds). They use what any
/// Linux kernel has (no SRv6): routes over `veth1` (gateway 10.0.1.2,
/// fc00:1::2) and `veth2` (10.0.2.2, fc00:2::2), rules, htb rate limits.
pub fn shared_cases() -> Vec<Case> {
    use crate::state::{ClassLimit, Family, MAIN_TABLE, NextHop, UcmpRoute};
    let hop = |gateway: &str, interface: &str, weight: u32| NextHop {
        gateway: Some(gateway.parse().expect("gateway")),
        interface: interface.into(),
        weight,
    };
    let route = |prefix: &str, table: u32, next_hops: Vec<NextHop>| UcmpRoute {
        prefix: prefix.parse().expect("prefix"),
        table,
        next_hops,
    };
    let limit = |interface: &str, sync_bps: u64| RateLimit {
        interface: interface.into(),
        default_class: Some(3),
        link_bps: Some(100_000_000),
        classes: vec![
            ClassLimit {
                class_id: 1,
                rate_bps: sync_bps,
                ceil_bps: 100_000_000,
                dscp: vec![26, 46],
            },
            ClassLimit {
                class_id: 3,
                rate_bps: 100_000_000 - sync_bps,
                ceil_bps: 100_000_000,
                dscp: Vec::new(),
            },
        ],
    };
    let rule = |priority: u32, port: u16| FlowRule {
        destination: Some("10.9.0.0/24".parse().expect("prefix")),
        ip_protocol: Some(17),
        destination_ports: Some((port, port)),
        ..FlowRule::new(priority, Family::V4, 20001)
    };
    let first = NodeState {
        routes: vec![
            route(
                "10.9.0.0/24",
                MAIN_TABLE,
                vec![hop("10.0.1.2", "veth1", 7), hop("10.0.2.2", "veth2", 3)],
            ),
            route("10.8.0.0/24", MAIN_TABLE, vec![hop("10.0.1.2", "veth1", 1)]),
            route(
                "fc00:9::/64",
                MAIN_TABLE,
                vec![hop("fc00:1::2", "veth1", 1), hop("fc00:2::2", "veth2", 1)],
            ),
            route("10.9.0.0/24", 20001, vec![hop("10.0.2.2", "veth2", 1)]),
        ],
        flow_rules: vec![rule(20000, 5301)],
        rate_limits: vec![limit("veth1", 60_000_000)],
        ..NodeState::default()
    };
    let second = NodeState {
        routes: vec![
            route(
                "10.9.0.0/24",
                MAIN_TABLE,
                vec![hop("10.0.1.2", "veth1", 1), hop("10.0.2.2", "veth2", 1)],
            ),
            route(
                "fc00:9::/64",
                MAIN_TABLE,
                vec![hop("fc00:1::2", "veth1", 1), hop("fc00:2::2", "veth2", 1)],
            ),
            route("10.9.0.0/24", 20001, vec![hop("10.0.2.2", "veth2", 1)]),
            route("10.7.0.0/24", MAIN_TABLE, vec![hop("10.0.2.2", "veth2", 1)]),
        ],
        flow_rules: vec![rule(20000, 5302), rule(20001, 5303)],
        rate_limits: vec![limit("veth1", 40_000_000), limit("veth2", 20_000_000)],
        ..NodeState::default()
    };
    vec![
        Case {
            name: "from nothing",
            observed: NodeState::default(),
            desired: first.clone(),
        },
        Case {
            name: "weights move, a route comes and one goes, a rule changes, limits change",
            observed: first.clone(),
            desired: second.clone(),
        },
        Case {
            name: "the same again",
            observed: second.clone(),
            desired: second.clone(),
        },
        Case {
            name: "everything goes",
            observed: second,
            desired: NodeState::default(),
        },
    ]
}

/// The golden text of `cases`: each case's name and its diff.
pub fn golden_text(cases: &[Case]) -> String {
    let mut text = String::new();
    for case in cases {
        text.push_str(&format!(
            "== {}\n{}\n",
            case.name,
            diff(&case.observed, &case.desired)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The phases of the shared cases, against the golden file (written
    /// again with `AIWAN_UPDATE_GOLDEN=1`).
    #[test]
    fn phases_match_the_golden_file() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/diff.txt");
        let text = golden_text(&shared_cases());
        if std::env::var("AIWAN_UPDATE_GOLDEN").as_deref() == Ok("1") {
            std::fs::create_dir_all(path.parent().expect("folder")).expect("folder");
            std::fs::write(&path, &text).expect("write golden file");
            return;
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            golden == text,
            "the phases differ from {} (AIWAN_UPDATE_GOLDEN=1 writes them):\n{text}",
            path.display()
        );
    }

    /// Carrying a diff out in memory gives the desired state, and a second
    /// diff is empty.
    #[test]
    fn in_memory_reaches_the_desired_state() {
        for case in shared_cases() {
            let diff = diff(&case.observed, &case.desired);
            let mut state = case.observed.normalized();
            apply_in_memory(&mut state, &diff);
            assert_eq!(state, case.desired.normalized(), "{}", case.name);
            let again = super::diff(&state, &case.desired);
            assert!(again.is_empty(), "{}: {again}", case.name);
        }
    }

    #[test]
    fn a_replaced_rule_counts_once() {
        let cases = shared_cases();
        let report = diff(&cases[1].observed, &cases[1].desired).report();
        // Routes: 1 replaced, 1 created, 1 deleted, 2 unchanged; rules: 1
        // replaced (5301 -> 5302 at 20000), 1 created; limits: 1 replaced,
        // 1 created.
        assert_eq!(
            (
                report.created,
                report.replaced,
                report.deleted,
                report.unchanged
            ),
            (3, 3, 1, 2)
        );
    }
}
