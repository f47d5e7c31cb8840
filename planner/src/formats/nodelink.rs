//! networkx node-link JSON (`{"nodes": [{"id": ..}], "links": [{"source",
//! "target", "capacity"}]}`), as FIGRET and Teal ship their topologies.

use std::collections::HashMap;

use serde_json::Value;

use super::FormatError;
use crate::network::{Edge, Network};

/// Parses node-link JSON. When the node ids are the integers 0..n-1 (in
/// any order) a node's index is its id, so that traffic matrices indexed by
/// id line up; otherwise nodes are indexed in order of appearance. An
/// undirected graph (`"directed": false`) gets both directions of each link.
pub fn parse_nodelink(text: &str, default_capacity: Option<f64>) -> Result<Network, FormatError> {
    let json: Value =
        serde_json::from_str(text).map_err(|e| FormatError::invalid(format!("not JSON: {e}")))?;
    let nodes = json
        .get("nodes")
        .and_then(Value::as_array)
        .ok_or_else(|| FormatError::invalid("no \"nodes\" array"))?;
    let links = json
        .get("links")
        .or_else(|| json.get("edges"))
        .and_then(Value::as_array)
        .ok_or_else(|| FormatError::invalid("no \"links\" array"))?;
    let directed = json
        .get("directed")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let ids: Vec<String> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| match node.get("id") {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(FormatError::invalid(format!("node {i} has no \"id\""))),
        })
        .collect::<Result<_, _>>()?;
    let n = ids.len();
    let numeric: Option<Vec<usize>> = ids.iter().map(|id| id.parse::<usize>().ok()).collect();
    let by_id = match numeric {
        Some(numbers)
            if {
                let mut sorted = numbers.clone();
                sorted.sort_unstable();
                sorted.iter().copied().eq(0..n)
            } =>
        {
            numbers
        }
        _ => (0..n).collect(),
    };
    let mut names = vec![String::new(); n];
    let mut index: HashMap<String, usize> = HashMap::new();
    for (id, &i) in ids.iter().zip(&by_id) {
        if index.insert(id.clone(), i).is_some() {
            return Err(FormatError::invalid(format!("node id {id} appears twice")));
        }
        names[i] = id.clone();
    }
    let endpoint = |link: &Value, key: &str, i: usize| -> Result<usize, FormatError> {
        let id = match link.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(FormatError::invalid(format!("link {i} has no \"{key}\""))),
        };
        index
            .get(&id)
            .copied()
            .ok_or_else(|| FormatError::invalid(format!("link {i}: {key} {id} is not a node")))
    };
    let mut edges = Vec::with_capacity(links.len() * if directed { 1 } else { 2 });
    for (i, link) in links.iter().enumerate() {
        let src = endpoint(link, "source", i)?;
        let dst = endpoint(link, "target", i)?;
        let capacity = match link.get("capacity").and_then(Value::as_f64) {
            Some(c) => c,
            None => default_capacity.ok_or_else(|| {
                FormatError::invalid(format!(
                    "link {i} has no \"capacity\" and no default was given"
                ))
            })?,
        };
        if !(capacity.is_finite() && capacity > 0.0) {
            return Err(FormatError::invalid(format!(
                "link {i}: capacity {capacity} is not positive"
            )));
        }
        let weight = link.get("weight").and_then(Value::as_f64).unwrap_or(1.0);
        let latency_us = link.get("latency").and_then(Value::as_f64).unwrap_or(0.0);
        let mut add = |src, dst| {
            edges.push(Edge {
                src,
                dst,
                capacity,
                weight,
                latency_us,
            })
        };
        add(src, dst);
        if !directed {
            add(dst, src);
        }
    }
    Ok(Network {
        name: String::new(),
        nodes: names,
        edges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_indices_when_they_can_be() {
        let text = r#"{"directed": true, "nodes": [{"id": 1}, {"id": 0}],
            "links": [{"source": 1, "target": 0, "capacity": 5.0}]}"#;
        let network = parse_nodelink(text, None).unwrap();
        assert_eq!(network.nodes, ["0", "1"]);
        assert_eq!((network.edges[0].src, network.edges[0].dst), (1, 0));
        let text = r#"{"directed": false, "nodes": [{"id": "b"}, {"id": "a"}],
            "links": [{"source": "b", "target": "a"}]}"#;
        let network = parse_nodelink(text, Some(7.0)).unwrap();
        assert_eq!(network.nodes, ["b", "a"]);
        assert_eq!(network.edges.len(), 2);
        assert_eq!(network.edges[1].capacity, 7.0);
    }

    #[test]
    fn errors_name_the_link() {
        let cases = [
            ("{", "not JSON"),
            (r#"{"links": []}"#, "no \"nodes\" array"),
            (
                r#"{"nodes": [{"id": 0}], "links": [{"source": 0, "target": 3, "capacity": 1}]}"#,
                "link 0: target 3 is not a node",
            ),
            (
                r#"{"nodes": [{"id": 0}, {"id": 1}], "links": [{"source": 0, "target": 1}]}"#,
                "link 0 has no \"capacity\"",
            ),
            (
                r#"{"nodes": [{"id": 0}, {"id": 1}], "links": [{"source": 0, "target": 1, "capacity": -1}]}"#,
                "capacity -1 is not positive",
            ),
        ];
        for (text, expected) in cases {
            let error = parse_nodelink(text, None).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }
}
