//! Topologies the unit tests of planning and the southbound share.

use aiwan_planner::Topology;

/// The lab's fabric (`lab/fabric.clab.yml`): 4 leaves, 4 spines, gpu1 to
/// gpu8 two per leaf (gpuN originates 10.0.N.0/24).
pub fn fabric() -> Topology {
    aiwan_planner::formats::clab::parse_clab(include_str!("../../../lab/fabric.clab.yml"))
        .expect("fixture")
}

/// r1 (site a, 10.1.0.0/24) to r4 (site b, 10.4.0.0/24) through r2 (1 ms
/// links) or r3 (2 ms links), all 10G.
pub fn diamond() -> Topology {
    aiwan_planner::formats::clab::parse_clab(&format!("{DIAMOND}{DIAMOND_LINKS}")).expect("fixture")
}

/// The diamond with hosts: h1 behind r1 (no prefix of its own) and h4
/// behind r4 (10.4.1.0/24); r4 also originates fd00:4::/64. Sorted by id
/// the nodes are h1, h4, r1, r2, r3, r4 (SRv6 locators 1 to 6).
pub fn diamond_with_hosts() -> Topology {
    let text = format!(
        "{}{HOSTS}{DIAMOND_LINKS}{HOST_LINKS}",
        DIAMOND.replace("\"10.4.0.0/24\"", "\"10.4.0.0/24,fd00:4::/64\"")
    );
    aiwan_planner::formats::clab::parse_clab(&text).expect("fixture")
}

const DIAMOND: &str = r#"
name: diamond
topology:
  nodes:
    r1: {labels: {aiwan.role: wan-router, aiwan.site: a, aiwan.prefixes: "10.1.0.0/24"}}
    r2: {labels: {aiwan.role: wan-router}}
    r3: {labels: {aiwan.role: wan-router}}
    r4: {labels: {aiwan.role: wan-router, aiwan.site: b, aiwan.prefixes: "10.4.0.0/24"}}
"#;

const HOSTS: &str = r#"    h1: {labels: {aiwan.role: host, aiwan.site: a}}
    h4: {labels: {aiwan.role: host, aiwan.site: b, aiwan.prefixes: "10.4.1.0/24"}}
"#;

const DIAMOND_LINKS: &str = r#"  links:
    - endpoints: ["r1:eth1", "r2:eth1"]
      labels: {aiwan.capacity: 10G, aiwan.latency: 1ms}
    - endpoints: ["r1:eth2", "r3:eth1"]
      labels: {aiwan.capacity: 10G, aiwan.latency: 2ms}
    - endpoints: ["r2:eth2", "r4:eth1"]
      labels: {aiwan.capacity: 10G, aiwan.latency: 1ms}
    - endpoints: ["r3:eth2", "r4:eth2"]
      labels: {aiwan.capacity: 10G, aiwan.latency: 2ms}
"#;

const HOST_LINKS: &str = r#"    - endpoints: ["h1:eth1", "r1:eth3"]
      labels: {aiwan.capacity: 10G}
    - endpoints: ["h4:eth1", "r4:eth3"]
      labels: {aiwan.capacity: 10G}
"#;

/// `n` WAN routers `r0`..: a ring (1 ms links) with a chord from every
/// tenth router to the one opposite (5 ms), each router originating
/// `10.{i/256}.{i%256}.0/24`. For scale: render and reconcile must stay
/// near-linear in routers times routes.
pub fn ring(n: usize) -> Topology {
    use aiwan_planner::{Link, Node, NodeRole};
    let nodes = (0..n)
        .map(|i| Node {
            id: format!("r{i}"),
            site: None,
            role: NodeRole::WanRouter,
            prefixes: vec![
                format!("10.{}.{}.0/24", i / 256, i % 256)
                    .parse()
                    .expect("prefix"),
            ],
        })
        .collect();
    let mut links = Vec::new();
    let mut ports = vec![0usize; n];
    let mut link = |a: usize, b: usize, latency_us: u64| {
        ports[a] += 1;
        ports[b] += 1;
        let (ia, ib) = (format!("eth{}", ports[a]), format!("eth{}", ports[b]));
        for (src, si, dst, di) in [(a, &ia, b, &ib), (b, &ib, a, &ia)] {
            links.push(Link {
                src: format!("r{src}"),
                src_interface: si.clone(),
                dst: format!("r{dst}"),
                dst_interface: di.clone(),
                capacity_bps: 100_000_000_000,
                latency_us,
                srlgs: Vec::new(),
                admin_up: true,
            });
        }
    };
    for i in 0..n {
        link(i, (i + 1) % n, 1000);
    }
    for i in (0..n / 2).step_by(10) {
        link(i, i + n / 2, 5000);
    }
    Topology {
        name: "ring".into(),
        sites: Vec::new(),
        nodes,
        links,
    }
}

/// What discovery finds on `topology` numbered as `aiwan lab` numbers it
/// (and as the simulated dataplane reports it).
pub fn lab_discovery(topology: &Topology) -> crate::southbound::discovery::Discovery {
    crate::southbound::discovery::discover(
        topology,
        &crate::southbound::simulated::lab_interfaces(topology),
    )
}
