//! SNDlib native XML: network files (nodes, undirected links with capacity
//! modules, in Mbit/s) and demand files (`<demand>` with source, target and
//! `demandValue`, in Mbit/s).

use std::path::Path;

use roxmltree::{Document, Node};

use super::FormatError;
use crate::network::{Edge, Network, TrafficMatrix};

const MBIT: f64 = 1e6;

fn parse(text: &str) -> Result<Document<'_>, FormatError> {
    Document::parse(text).map_err(|e| FormatError::invalid(format!("not XML: {e}")))
}

fn child<'a>(node: Node<'a, 'a>, name: &str) -> Option<Node<'a, 'a>> {
    node.children().find(|c| c.tag_name().name() == name)
}

fn child_text(node: Node<'_, '_>, name: &str) -> Option<String> {
    child(node, name)
        .and_then(|c| c.text())
        .map(|t| t.trim().to_string())
}

fn line_of(doc: &Document<'_>, node: Node<'_, '_>) -> usize {
    doc.text_pos_at(node.range().start).row as usize
}

/// Parses an SNDlib network file. Links are undirected: each becomes two
/// directed edges. The capacity is the pre-installed module's when it has
/// one, else the largest additional module's.
pub fn parse_network(text: &str) -> Result<Network, FormatError> {
    let doc = parse(text)?;
    let mut nodes = Vec::new();
    for node in doc.descendants().filter(|n| n.tag_name().name() == "node") {
        let id = node
            .attribute("id")
            .ok_or_else(|| FormatError::line(line_of(&doc, node), "<node> without id"))?;
        nodes.push(id.to_string());
    }
    if nodes.is_empty() {
        return Err(FormatError::invalid(
            "no <node> elements: not an SNDlib network file",
        ));
    }
    let network = Network {
        name: String::new(),
        nodes,
        edges: Vec::new(),
    };
    let index = network.index();
    let mut edges = Vec::new();
    for link in doc.descendants().filter(|n| n.tag_name().name() == "link") {
        let line = line_of(&doc, link);
        let id = link.attribute("id").unwrap_or("?");
        let end = |name: &str| -> Result<usize, FormatError> {
            let value = child_text(link, name)
                .ok_or_else(|| FormatError::line(line, format!("link {id} has no <{name}>")))?;
            index.get(value.as_str()).copied().ok_or_else(|| {
                FormatError::line(line, format!("link {id}: {name} {value:?} is not a node"))
            })
        };
        let src = end("source")?;
        let dst = end("target")?;
        let module_capacity = |module: Node<'_, '_>| -> Option<f64> {
            child_text(module, "capacity").and_then(|c| c.parse::<f64>().ok())
        };
        let preinstalled = child(link, "preInstalledModule")
            .and_then(module_capacity)
            .filter(|c| *c > 0.0);
        let additional = child(link, "additionalModules")
            .into_iter()
            .flat_map(|m| m.children().filter(|c| c.tag_name().name() == "addModule"))
            .filter_map(module_capacity)
            .fold(0.0, f64::max);
        let capacity = preinstalled.unwrap_or(additional) * MBIT;
        if !(capacity.is_finite() && capacity > 0.0) {
            return Err(FormatError::line(
                line,
                format!("link {id} has no positive capacity module"),
            ));
        }
        for (a, b) in [(src, dst), (dst, src)] {
            edges.push(Edge {
                src: a,
                dst: b,
                capacity,
                weight: 1.0,
                latency_us: 0.0,
            });
        }
    }
    Ok(Network { edges, ..network })
}

/// Parses an SNDlib demand file into a matrix over `network`'s nodes.
pub fn parse_demands(text: &str, network: &Network) -> Result<TrafficMatrix, FormatError> {
    let doc = parse(text)?;
    let index = network.index();
    let n = network.nodes.len();
    let mut matrix = TrafficMatrix::zeros(n);
    for demand in doc
        .descendants()
        .filter(|n| n.tag_name().name() == "demand")
    {
        let line = line_of(&doc, demand);
        let id = demand.attribute("id").unwrap_or("?");
        let end = |name: &str| -> Result<usize, FormatError> {
            let value = child_text(demand, name)
                .ok_or_else(|| FormatError::line(line, format!("demand {id} has no <{name}>")))?;
            index.get(value.as_str()).copied().ok_or_else(|| {
                FormatError::line(
                    line,
                    format!("demand {id}: {name} {value:?} is not a node of the network"),
                )
            })
        };
        let src = end("source")?;
        let dst = end("target")?;
        let value = child_text(demand, "demandValue")
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| {
                FormatError::line(
                    line,
                    format!("demand {id}: demandValue is not a non-negative number"),
                )
            })?;
        matrix.values[src * n + dst] += value * MBIT;
    }
    Ok(matrix)
}

/// Every `*.xml` demand file of a folder, in file name order (SNDlib names
/// them by time).
pub fn load_demand_folder(
    dir: &Path,
    network: &Network,
) -> Result<Vec<TrafficMatrix>, FormatError> {
    let read_dir = std::fs::read_dir(dir).map_err(|source| FormatError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<_> = read_dir
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("xml")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(FormatError::InFile {
            path: dir.to_path_buf(),
            message: "no .xml demand files in this folder".into(),
        });
    }
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).map_err(|source| FormatError::Read {
                path: path.clone(),
                source,
            })?;
            parse_demands(&text, network).map_err(|e| FormatError::InFile {
                path: path.clone(),
                message: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETWORK: &str = include_str!("../../tests/fixtures/small-sndlib.xml");

    #[test]
    fn reads_network_and_demands() {
        let network = parse_network(NETWORK).unwrap();
        assert_eq!(network.nodes, ["A", "B", "C"]);
        assert_eq!(network.edges.len(), 4);
        assert_eq!(network.edges[0].capacity, 100e6);
        assert_eq!(network.edges[2].capacity, 160e6);
        let matrix = parse_demands(NETWORK, &network).unwrap();
        assert_eq!(matrix.get(0, 2), 2.5e6);
        assert_eq!(matrix.total(), 2.5e6);
    }

    #[test]
    fn errors_name_the_element() {
        let broken = [
            (
                NETWORK.replace("<target>B</target>", "<target>Z</target>"),
                "link L1: target \"Z\" is not a node",
            ),
            (
                NETWORK.replace("<capacity>100.0</capacity>", "<capacity>0</capacity>"),
                "link L1 has no positive capacity module",
            ),
            (NETWORK.replace("</network>", ""), "not XML"),
        ];
        for (text, expected) in broken {
            let error = parse_network(&text).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
        let network = parse_network(NETWORK).unwrap();
        let text = NETWORK.replace(" 2.5 ", "much");
        let error = parse_demands(&text, &network).unwrap_err().to_string();
        assert!(error.contains("demand A_C: demandValue is not"), "{error}");
        assert!(error.starts_with("line 1"), "{error}");
    }
}
