//! The stored graph, or a change cone in it, drawn for people and tools:
//! plain text, Graphviz `dot`, Mermaid and JSON (the JSON is also what the
//! web page of `stategraph serve` draws).
//!
//! It owns the drawing's model ([`Drawing`]) and the four renderings, with
//! the write set and the read set marked in each. It must not do I/O: the
//! caller builds the graph and the cone (see `engine::deps`).

use std::collections::HashSet;
use std::fmt::Write as _;

use serde::Serialize;

use super::{Cone, StateGraph};

/// The fill of the write set in `dot` and Mermaid (the page uses the same).
pub const WRITE_COLOUR: &str = "#d62728";
/// The fill of the read set in `dot` and Mermaid (the page uses the same).
pub const READ_COLOUR: &str = "#1f77b4";

/// Where an instance stands relative to the cone asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// In the write set: changed, or downstream of a change.
    Write,
    /// In the read set: a dependency of the write set, read not written.
    Read,
    /// Drawn, but outside the cone (the whole graph with a cone marked).
    Outside,
}

/// One instance of the drawing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrawNode {
    pub address: String,
    /// `None` when no cone was asked for.
    pub role: Option<Role>,
    /// Whether the instance is one of those the cone was asked for.
    pub changed: bool,
}

/// One dependency: `to` depends on `from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrawEdge {
    pub from: String,
    pub to: String,
}

/// What is drawn: instances sorted by address, edges from a dependency to
/// its dependent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drawing {
    pub state: String,
    /// How many instances the state holds (more than `nodes` for a cone).
    pub instances: usize,
    /// The instances the cone was asked for (empty: no cone).
    pub changed: Vec<String>,
    /// The cone's write set, in lock order (empty: no cone).
    pub write: Vec<String>,
    /// The cone's read set, in lock order (empty: no cone).
    pub read: Vec<String>,
    pub nodes: Vec<DrawNode>,
    pub edges: Vec<DrawEdge>,
}

impl Drawing {
    /// The whole of `graph`, with `cone` (of the instances `changed`)
    /// marked if given; `only_cone` leaves out what lies outside it.
    pub fn new(
        state: &str,
        instances: usize,
        graph: &StateGraph,
        cone: Option<(&Cone, &[String])>,
        only_cone: bool,
    ) -> Drawing {
        let (write, read, changed): (HashSet<&str>, HashSet<&str>, HashSet<&str>) = match cone {
            Some((c, changed)) => (
                c.write.iter().map(String::as_str).collect(),
                c.read.iter().map(String::as_str).collect(),
                changed.iter().map(String::as_str).collect(),
            ),
            None => Default::default(),
        };
        let role = |a: &str| {
            cone.map(|_| {
                if write.contains(a) {
                    Role::Write
                } else if read.contains(a) {
                    Role::Read
                } else {
                    Role::Outside
                }
            })
        };
        let keep = |a: &str| !only_cone || role(a) != Some(Role::Outside);
        let nodes = graph
            .instance_addresses()
            .into_iter()
            .filter(|a| keep(a))
            .map(|a| DrawNode {
                address: a.to_owned(),
                role: role(a),
                changed: changed.contains(a),
            })
            .collect();
        let edges = graph
            .instance_edges()
            .into_iter()
            .filter(|(from, to)| keep(from) && keep(to))
            .map(|(from, to)| DrawEdge {
                from: from.to_owned(),
                to: to.to_owned(),
            })
            .collect();
        let (write, read, mut changed) = match cone {
            Some((c, changed)) => (c.write.clone(), c.read.clone(), changed.to_vec()),
            None => Default::default(),
        };
        changed.sort();
        Drawing {
            state: state.to_owned(),
            instances,
            changed,
            write,
            read,
            nodes,
            edges,
        }
    }

    /// One line per instance (its role in brackets), each dependency under
    /// it: `  depends on ADDRESS`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&n.address);
            match n.role {
                Some(Role::Write) if n.changed => out.push_str("  [write, changed]"),
                Some(Role::Write) => out.push_str("  [write]"),
                Some(Role::Read) => out.push_str("  [read]"),
                Some(Role::Outside) | None => {}
            }
            out.push('\n');
            for e in self.edges.iter().filter(|e| e.to == n.address) {
                let _ = writeln!(out, "  depends on {}", e.from);
            }
        }
        out
    }

    /// A Graphviz digraph: edges from a dependency to its dependent, the
    /// write set filled red, the read set blue, the changed instances bold.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph stategraph {\n");
        let _ = writeln!(out, "  label={};", dot_quote(&self.title()));
        out.push_str("  labelloc=t;\n  rankdir=LR;\n");
        out.push_str("  node [shape=box, style=\"rounded,filled\", fillcolor=\"#eeeeee\", fontname=\"monospace\"];\n");
        for n in &self.nodes {
            let mut attrs = Vec::new();
            match n.role {
                Some(Role::Write) => attrs.push(format!(
                    "fillcolor=\"{WRITE_COLOUR}\", fontcolor=white, class=write"
                )),
                Some(Role::Read) => attrs.push(format!(
                    "fillcolor=\"{READ_COLOUR}\", fontcolor=white, class=read"
                )),
                Some(Role::Outside) => {
                    attrs.push("color=\"#bbbbbb\", fontcolor=\"#999999\"".into())
                }
                None => {}
            }
            if n.changed {
                attrs.push("penwidth=3".into());
            }
            let _ = write!(out, "  {}", dot_quote(&n.address));
            if !attrs.is_empty() {
                let _ = write!(out, " [{}]", attrs.join(", "));
            }
            out.push_str(";\n");
        }
        for e in &self.edges {
            let _ = writeln!(out, "  {} -> {};", dot_quote(&e.from), dot_quote(&e.to));
        }
        out.push_str("}\n");
        out
    }

    /// A Mermaid flowchart: nodes `n0`, `n1`... labelled with their
    /// address, classes `write` and `read` for the cone.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        let id = |address: &str| {
            let i = self
                .nodes
                .binary_search_by(|n| n.address.as_str().cmp(address))
                .expect("edges join drawn nodes");
            format!("n{i}")
        };
        for (i, n) in self.nodes.iter().enumerate() {
            let _ = writeln!(out, "  n{i}[\"{}\"]", mermaid_label(&n.address));
        }
        for e in &self.edges {
            let _ = writeln!(out, "  {} --> {}", id(&e.from), id(&e.to));
        }
        let mut class = |name: &str, role: Role, style: &str| {
            let members: Vec<String> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].role == Some(role))
                .map(|i| format!("n{i}"))
                .collect();
            if !members.is_empty() {
                let _ = writeln!(out, "  classDef {name} {style}");
                let _ = writeln!(out, "  class {} {name}", members.join(","));
            }
        };
        class(
            "write",
            Role::Write,
            &format!("fill:{WRITE_COLOUR},color:#fff"),
        );
        class(
            "read",
            Role::Read,
            &format!("fill:{READ_COLOUR},color:#fff"),
        );
        class("outside", Role::Outside, "fill:#f4f4f4,color:#999");
        out
    }

    /// What the drawing shows, in one line.
    fn title(&self) -> String {
        if self.changed.is_empty() {
            format!("state {}: {} instances", self.state, self.instances)
        } else {
            format!(
                "state {}: cone of {} ({} write, {} read of {} instances)",
                self.state,
                self.changed.join(", "),
                self.write.len(),
                self.read.len(),
                self.instances
            )
        }
    }
}

/// A dot ID in double quotes (addresses hold `"` in their keys).
fn dot_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Mermaid label inside `"..."`: quotes and markup as entity codes.
fn mermaid_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '#' => out.push_str("#35;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::graph_of;
    use super::*;

    fn drawing(cone_of: &[&str], only_cone: bool) -> Drawing {
        let g = graph_of(&[
            ("terraform_data.a", &[]),
            ("terraform_data.b[\"k\"]", &["terraform_data.a"]),
            ("terraform_data.c", &["terraform_data.b"]),
            ("terraform_data.d", &[]),
        ])
        .unwrap();
        let changed: Vec<String> = cone_of.iter().map(|s| s.to_string()).collect();
        let cone = g.cone(cone_of).unwrap();
        let cone = (!cone_of.is_empty()).then_some((&cone, changed.as_slice()));
        Drawing::new("s", g.instance_count(), &g, cone, only_cone)
    }

    #[test]
    fn edges_see_through_resources_and_a_cone_marks_roles() {
        let d = drawing(&["terraform_data.b[\"k\"]"], false);
        let edges: Vec<(&str, &str)> = d
            .edges
            .iter()
            .map(|e| (e.from.as_str(), e.to.as_str()))
            .collect();
        assert_eq!(
            edges,
            [
                ("terraform_data.a", "terraform_data.b[\"k\"]"),
                ("terraform_data.b[\"k\"]", "terraform_data.c")
            ]
        );
        let roles: Vec<_> = d.nodes.iter().map(|n| (n.role, n.changed)).collect();
        assert_eq!(
            roles,
            [
                (Some(Role::Read), false),
                (Some(Role::Write), true),
                (Some(Role::Write), false),
                (Some(Role::Outside), false)
            ]
        );
        // Only the cone: d is left out.
        let d = drawing(&["terraform_data.b[\"k\"]"], true);
        assert_eq!(d.nodes.len(), 3);
        assert_eq!(d.instances, 4);
        assert!(drawing(&[], false).nodes.iter().all(|n| n.role.is_none()));
    }

    #[test]
    fn dot_quotes_keys_and_colours_the_cone() {
        let dot = drawing(&["terraform_data.b[\"k\"]"], true).to_dot();
        assert!(dot.starts_with("digraph stategraph {\n"), "{dot}");
        assert!(
            dot.contains(&format!(
                "  \"terraform_data.b[\\\"k\\\"]\" [fillcolor=\"{WRITE_COLOUR}\""
            )),
            "{dot}"
        );
        assert!(
            dot.contains(&format!(
                "  \"terraform_data.a\" [fillcolor=\"{READ_COLOUR}\""
            )),
            "{dot}"
        );
        assert!(dot.contains("  \"terraform_data.a\" -> \"terraform_data.b[\\\"k\\\"]\";"));
        assert!(dot.ends_with("}\n"));
    }

    #[test]
    fn mermaid_and_text_shapes() {
        let m = drawing(&["terraform_data.c"], false).to_mermaid();
        let lines: Vec<&str> = m.lines().collect();
        assert_eq!(lines[0], "flowchart LR");
        assert_eq!(lines[2], "  n1[\"terraform_data.b[#quot;k#quot;]\"]");
        assert!(lines.contains(&"  n0 --> n1"), "{m}");
        assert!(lines.contains(&"  class n2 write"), "{m}");
        assert!(lines.contains(&"  class n0,n1 read"), "{m}");
        let t = drawing(&["terraform_data.c"], true).to_text();
        assert_eq!(
            t,
            "terraform_data.a  [read]\n\
             terraform_data.b[\"k\"]  [read]\n  depends on terraform_data.a\n\
             terraform_data.c  [write, changed]\n  depends on terraform_data.b[\"k\"]\n"
        );
    }
}
