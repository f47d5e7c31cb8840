//! GraphML as the Internet Topology Zoo ships it: nodes by id, undirected
//! edges, no capacities (TE papers give every link the same one).

use roxmltree::Document;

use super::FormatError;
use crate::network::{Edge, Network};

/// Parses GraphML; every link gets `capacity` in both directions. Self-loops
/// are skipped; parallel links are kept.
pub fn parse_graphml(text: &str, capacity: f64) -> Result<Network, FormatError> {
    if !(capacity.is_finite() && capacity > 0.0) {
        return Err(FormatError::invalid(format!(
            "capacity {capacity} is not positive"
        )));
    }
    let doc = Document::parse(text).map_err(|e| FormatError::invalid(format!("not XML: {e}")))?;
    let mut network = Network::default();
    for node in doc.descendants().filter(|n| n.tag_name().name() == "node") {
        let id = node.attribute("id").ok_or_else(|| {
            FormatError::line(
                doc.text_pos_at(node.range().start).row as usize,
                "<node> without id",
            )
        })?;
        network.nodes.push(id.to_string());
    }
    let index = network.index();
    let mut edges = Vec::new();
    for edge in doc.descendants().filter(|n| n.tag_name().name() == "edge") {
        let line = doc.text_pos_at(edge.range().start).row as usize;
        let end = |name: &str| -> Result<usize, FormatError> {
            let id = edge
                .attribute(name)
                .ok_or_else(|| FormatError::line(line, format!("<edge> without {name}")))?;
            index
                .get(id)
                .copied()
                .ok_or_else(|| FormatError::line(line, format!("edge {name} {id:?} is not a node")))
        };
        let (a, b) = (end("source")?, end("target")?);
        if a == b {
            continue;
        }
        for (src, dst) in [(a, b), (b, a)] {
            edges.push(Edge {
                src,
                dst,
                capacity,
                weight: 1.0,
                latency_us: 0.0,
            });
        }
    }
    network.edges = edges;
    Ok(network)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRAPH: &str = r#"<?xml version="1.0"?><graphml xmlns="http://graphml.graphdrawing.org/xmlns">
<graph edgedefault="undirected"><node id="0"/><node id="1"/><node id="2"/>
<edge source="0" target="1"/><edge source="1" target="2"/><edge source="2" target="2"/></graph></graphml>"#;

    #[test]
    fn reads_zoo_style_graphml() {
        let network = parse_graphml(GRAPH, 1e9).unwrap();
        assert_eq!(network.nodes.len(), 3);
        assert_eq!(network.edges.len(), 4, "self-loop skipped, both directions");
        assert!(network.edges.iter().all(|e| e.capacity == 1e9));
    }

    #[test]
    fn errors_name_the_edge() {
        let error = parse_graphml(&GRAPH.replace("target=\"1\"", "target=\"9\""), 1.0)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 3: edge target \"9\" is not a node"),
            "{error}"
        );
        assert!(
            parse_graphml("<graphml", 1.0)
                .unwrap_err()
                .to_string()
                .contains("not XML")
        );
        assert!(parse_graphml(GRAPH, 0.0).is_err());
    }
}
