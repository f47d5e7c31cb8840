//! The tab-separated link table of the Abilene data set: a header
//! `Node_num: 12 Edge_num: 30`, a column header, then `index source
//! destination OSPF-weight capacity(kbit/s)` rows.

use super::FormatError;
use crate::network::{Edge, Network};

pub fn parse_link_table(text: &str) -> Result<Network, FormatError> {
    let mut lines = text.lines().enumerate();
    let (_, header) = lines
        .next()
        .ok_or_else(|| FormatError::line(1, "empty file"))?;
    let fields: Vec<&str> = header.split_whitespace().collect();
    let number_after = |key: &str| -> Result<usize, FormatError> {
        fields
            .iter()
            .position(|f| *f == key)
            .and_then(|i| fields.get(i + 1))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| FormatError::line(1, format!("expected `{key} N` in the header")))
    };
    let n = number_after("Node_num:")?;
    let expected_edges = number_after("Edge_num:")?;
    // The header's counts are only claims: a table cannot hold more links
    // than it has lines, and no network needs more nodes than this.
    if n > super::MAX_NODES {
        return Err(FormatError::line(
            1,
            format!("Node_num {n} is more than {} nodes", super::MAX_NODES),
        ));
    }
    let rows = text.lines().count();
    if expected_edges > rows {
        return Err(FormatError::line(
            1,
            format!("Edge_num {expected_edges} is more than the {rows} lines of the file"),
        ));
    }
    let mut edges = Vec::with_capacity(expected_edges);
    for (i, line) in lines {
        let line_no = i + 1;
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() || fields[0].parse::<usize>().is_err() {
            continue; // the column header, or a blank line
        }
        if fields.len() < 5 {
            return Err(FormatError::line(
                line_no,
                format!(
                    "expected 5 fields (index source destination OSPF capacity), got {}",
                    fields.len()
                ),
            ));
        }
        let node = |k: usize, what: &str| -> Result<usize, FormatError> {
            let v: usize = fields[k].parse().map_err(|_| {
                FormatError::line(
                    line_no,
                    format!("{what} {:?} is not a node number", fields[k]),
                )
            })?;
            if v >= n {
                return Err(FormatError::line(
                    line_no,
                    format!("{what} {v} is not below Node_num {n}"),
                ));
            }
            Ok(v)
        };
        let number = |k: usize, what: &str| -> Result<f64, FormatError> {
            fields[k]
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| {
                    FormatError::line(
                        line_no,
                        format!("{what} {:?} is not a positive number", fields[k]),
                    )
                })
        };
        edges.push(Edge {
            src: node(1, "source")?,
            dst: node(2, "destination")?,
            weight: number(3, "OSPF weight")?,
            capacity: number(4, "capacity")? * 1000.0,
            latency_us: 0.0,
        });
    }
    if edges.len() != expected_edges {
        return Err(FormatError::invalid(format!(
            "header says Edge_num {expected_edges}, the table has {} links",
            edges.len()
        )));
    }
    Ok(Network {
        name: String::new(),
        nodes: (0..n).map(|i| i.to_string()).collect(),
        edges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_header_counts_are_refused_not_allocated() {
        for (text, error) in [
            (
                "Node_num: 2\tEdge_num: 1000000000000000000\nh\n0\t0\t1\t1\t5\n",
                "line 1: Edge_num 1000000000000000000 is more than the 3 lines of the file",
            ),
            (
                "Node_num: 1000000000000000000\tEdge_num: 1\nh\n0\t0\t1\t1\t5\n",
                "line 1: Node_num 1000000000000000000 is more than 1000000 nodes",
            ),
        ] {
            assert_eq!(parse_link_table(text).unwrap_err().to_string(), error);
        }
    }

    #[test]
    fn reads_the_table() {
        let text = "Node_num: 2\tEdge_num: 2\nLink_index\tSource\tDestination\tOSPF\tCapacity(kbps)\n0\t0\t1\t1\t9920000\n1\t1\t0\t5\t2480000\n";
        let network = parse_link_table(text).unwrap();
        assert_eq!(network.nodes.len(), 2);
        assert_eq!(network.edges[0].capacity, 9_920_000_000.0);
        assert_eq!(network.edges[1].weight, 5.0);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (
                "Node_num: 2\tEdge_num: 1\nh\n0\t0\t7\t1\t5\n",
                "line 3: destination 7 is not below Node_num 2",
            ),
            (
                "Node_num: 2\tEdge_num: 1\nh\n0\t0\t1\t1\tx\n",
                "line 3: capacity \"x\" is not a positive number",
            ),
            (
                "Node_num: 2\tEdge_num: 2\nh\n0\t0\t1\t1\t5\n",
                "header says Edge_num 2, the table has 1 links",
            ),
            ("Nodes 2\n", "line 1: expected `Node_num: N`"),
            (
                "Node_num: 2\tEdge_num: 1\n0\t0\t1\n",
                "line 2: expected 5 fields",
            ),
        ];
        for (text, expected) in cases {
            let error = parse_link_table(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }
}
