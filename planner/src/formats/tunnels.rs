//! Tunnels files: `SRC DST:p1,p2,p3` a line, each path its node ids joined
//! by `-` (FIGRET's `tunnels.txt`).

use super::FormatError;
use crate::network::Network;

/// The candidate paths of one node pair, as node index sequences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    pub src: usize,
    pub dst: usize,
    pub paths: Vec<Vec<usize>>,
}

/// Parses a tunnels file against `network`: every path must run from SRC to
/// DST over links of the network without visiting a node twice.
pub fn parse_tunnels(text: &str, network: &Network) -> Result<Vec<Tunnel>, FormatError> {
    let index = network.index();
    let node = |line: usize, id: &str, what: &str| -> Result<usize, FormatError> {
        index
            .get(id.trim())
            .copied()
            .ok_or_else(|| FormatError::line(line, format!("{what} {id:?} is not a node")))
    };
    let mut tunnels = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_no = i + 1;
        let (pair, list) = line
            .split_once(':')
            .ok_or_else(|| FormatError::line(line_no, "expected `SRC DST:path,path`"))?;
        let ends: Vec<&str> = pair.split_whitespace().collect();
        let [src, dst] = ends.as_slice() else {
            return Err(FormatError::line(
                line_no,
                format!("expected `SRC DST` before ':', got {pair:?}"),
            ));
        };
        let src = node(line_no, src, "source")?;
        let dst = node(line_no, dst, "destination")?;
        let mut paths = Vec::new();
        for text_path in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let nodes = text_path
                .split('-')
                .map(|id| {
                    index.get(id.trim()).copied().ok_or_else(|| {
                        FormatError::line(
                            line_no,
                            format!("path {text_path:?}: {id:?} is not a node"),
                        )
                    })
                })
                .collect::<Result<Vec<usize>, _>>()?;
            if nodes.first() != Some(&src) || nodes.last() != Some(&dst) {
                return Err(FormatError::line(
                    line_no,
                    format!(
                        "path {text_path:?} does not run from the pair's source to its destination"
                    ),
                ));
            }
            if let Some(hop) = nodes
                .windows(2)
                .find(|h| network.edge_between(h[0], h[1]).is_none())
            {
                return Err(FormatError::line(
                    line_no,
                    format!(
                        "path {text_path:?}: no link from {} to {}",
                        network.nodes[hop[0]], network.nodes[hop[1]]
                    ),
                ));
            }
            let mut seen = nodes.clone();
            seen.sort_unstable();
            if seen.windows(2).any(|w| w[0] == w[1]) {
                return Err(FormatError::line(
                    line_no,
                    format!("path {text_path:?} visits a node twice"),
                ));
            }
            paths.push(nodes);
        }
        if paths.is_empty() {
            return Err(FormatError::line(line_no, "no path given"));
        }
        tunnels.push(Tunnel { src, dst, paths });
    }
    Ok(tunnels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::nodelink::parse_nodelink;

    fn square() -> Network {
        parse_nodelink(
            r#"{"directed": false, "nodes": [{"id": 0}, {"id": 1}, {"id": 2}, {"id": 3}],
            "links": [{"source": 0, "target": 1}, {"source": 1, "target": 3},
                      {"source": 0, "target": 2}, {"source": 2, "target": 3}]}"#,
            Some(1.0),
        )
        .unwrap()
    }

    #[test]
    fn reads_tunnels() {
        let tunnels = parse_tunnels("0 3:0-1-3,0-2-3\n3 0:3-1-0\n", &square()).unwrap();
        assert_eq!(tunnels[0].paths, [vec![0, 1, 3], vec![0, 2, 3]]);
        assert_eq!((tunnels[1].src, tunnels[1].dst), (3, 0));
    }

    #[test]
    fn errors_name_line_and_path() {
        let cases = [
            ("0 3 0-1-3\n", "line 1: expected `SRC DST:path,path`"),
            ("0 3:0-x-3\n", "line 1: path \"0-x-3\": \"x\" is not a node"),
            ("0 3:0-3\n", "line 1: path \"0-3\": no link from 0 to 3"),
            (
                "0 3:0-1-3\n0 3:1-3\n",
                "line 2: path \"1-3\" does not run from",
            ),
            ("0 3:0-1-0-1-3\n", "visits a node twice"),
            ("0 9:0-1\n", "destination \"9\" is not a node"),
        ];
        for (text, expected) in cases {
            let error = parse_tunnels(text, &square()).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }
}
