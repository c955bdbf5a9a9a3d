//! The stage graph: edges come from `@stage` inputs.

use std::collections::{BTreeSet, HashSet};

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Bfs, Reversed};

use crate::config::Pipeline;

/// Stages as nodes (node index = position in the file), edges upstream → downstream.
#[derive(Debug, Clone)]
pub struct Dag {
    graph: DiGraph<String, ()>,
    order: Vec<usize>,
}

impl Dag {
    /// Builds the graph; a cycle is returned as the stage names along it, first one repeated
    /// at the end.
    pub fn new(pipeline: &Pipeline) -> Result<Dag, Vec<String>> {
        let mut graph = DiGraph::new();
        for stage in &pipeline.stages {
            graph.add_node(stage.name.clone());
        }
        for (i, stage) in pipeline.stages.iter().enumerate() {
            let ups: BTreeSet<usize> = stage
                .inputs
                .values()
                .filter_map(|input| input.upstream())
                .filter_map(|up| pipeline.index(up))
                .collect();
            for up in ups {
                graph.add_edge(NodeIndex::new(up), NodeIndex::new(i), ());
            }
        }
        let order = stable_toposort(&graph).ok_or_else(|| find_cycle(&graph))?;
        Ok(Dag { graph, order })
    }

    /// Stage indices, upstream first; ties keep file order.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    pub fn name(&self, i: usize) -> &str {
        &self.graph[NodeIndex::new(i)]
    }

    /// Direct upstream stages.
    pub fn parents(&self, i: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .graph
            .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
            .map(NodeIndex::index)
            .collect();
        v.sort_unstable();
        v
    }

    /// Direct downstream stages.
    pub fn children(&self, i: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .graph
            .neighbors_directed(NodeIndex::new(i), Direction::Outgoing)
            .map(NodeIndex::index)
            .collect();
        v.sort_unstable();
        v
    }

    /// `i` and every stage downstream of it.
    pub fn descendants(&self, i: usize) -> HashSet<usize> {
        let mut bfs = Bfs::new(&self.graph, NodeIndex::new(i));
        std::iter::from_fn(|| bfs.next(&self.graph))
            .map(NodeIndex::index)
            .collect()
    }

    /// `i` and every stage upstream of it.
    pub fn ancestors(&self, i: usize) -> HashSet<usize> {
        let reversed = Reversed(&self.graph);
        let mut bfs = Bfs::new(reversed, NodeIndex::new(i));
        std::iter::from_fn(|| bfs.next(reversed))
            .map(NodeIndex::index)
            .collect()
    }

    /// An indented tree: each stage under its first upstream stage; a stage with several
    /// upstream stages names the others.
    pub fn to_text(&self, kinds: &[String]) -> String {
        let mut out = String::new();
        // Depth = longest path from a source; parents come first in `order`.
        let mut depths = vec![0usize; self.order.len()];
        for &i in &self.order {
            let parents = self.parents(i);
            let depth = parents.iter().map(|&p| depths[p] + 1).max().unwrap_or(0);
            depths[i] = depth;
            let extra = if parents.len() > 1 {
                let names: Vec<&str> = parents.iter().map(|&p| self.name(p)).collect();
                format!("  ← {}", names.join(", "))
            } else {
                String::new()
            };
            let branch = if depth == 0 {
                String::new()
            } else {
                format!("{}└─ ", "   ".repeat(depth - 1))
            };
            out.push_str(&format!("{branch}{} ({}){extra}\n", self.name(i), kinds[i]));
        }
        out
    }

    pub fn to_dot(&self, kinds: &[String]) -> String {
        let mut out = String::from("digraph pipeline {\n  rankdir=LR;\n");
        for &i in &self.order {
            out.push_str(&format!(
                "  \"{}\" [label=\"{}\\n({})\"];\n",
                self.name(i),
                self.name(i),
                kinds[i]
            ));
        }
        for &i in &self.order {
            for c in self.children(i) {
                out.push_str(&format!(
                    "  \"{}\" -> \"{}\";\n",
                    self.name(i),
                    self.name(c)
                ));
            }
        }
        out.push_str("}\n");
        out
    }

    pub fn to_mermaid(&self, kinds: &[String]) -> String {
        let mut out = String::from("flowchart LR\n");
        for &i in &self.order {
            out.push_str(&format!(
                "  {}[\"{} ({})\"]\n",
                self.name(i),
                self.name(i),
                kinds[i]
            ));
        }
        for &i in &self.order {
            for c in self.children(i) {
                out.push_str(&format!("  {} --> {}\n", self.name(i), self.name(c)));
            }
        }
        out
    }
}

/// Kahn's algorithm, always taking the ready stage that comes first in the file.
fn stable_toposort(graph: &DiGraph<String, ()>) -> Option<Vec<usize>> {
    let mut indegree: Vec<usize> = graph
        .node_indices()
        .map(|n| graph.neighbors_directed(n, Direction::Incoming).count())
        .collect();
    let mut ready: BTreeSet<usize> = (0..indegree.len()).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(indegree.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for c in graph.neighbors_directed(NodeIndex::new(i), Direction::Outgoing) {
            indegree[c.index()] -= 1;
            if indegree[c.index()] == 0 {
                ready.insert(c.index());
            }
        }
    }
    (order.len() == indegree.len()).then_some(order)
}

/// Names one cycle of a graph known to have one.
fn find_cycle(graph: &DiGraph<String, ()>) -> Vec<String> {
    let scc = petgraph::algo::tarjan_scc(graph)
        .into_iter()
        .find(|c| c.len() > 1)
        .expect("a graph without a topological order has a cycle");
    let members: HashSet<NodeIndex> = scc.iter().copied().collect();
    let start = *scc.iter().min().expect("non-empty");
    // Walk inside the component until a node repeats.
    let mut path = vec![start];
    let mut current = start;
    loop {
        let mut next: Vec<NodeIndex> = graph
            .neighbors_directed(current, Direction::Outgoing)
            .filter(|n| members.contains(n))
            .collect();
        next.sort_unstable();
        current = next[0];
        if let Some(pos) = path.iter().position(|&n| n == current) {
            let mut cycle: Vec<String> = path[pos..].iter().map(|&n| graph[n].clone()).collect();
            cycle.push(graph[current].clone());
            return cycle;
        }
        path.push(current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{InputRef, StageDecl};
    use std::collections::BTreeMap;

    fn pipeline(edges: &[(&str, &[&str])]) -> Pipeline {
        Pipeline {
            stages: edges
                .iter()
                .map(|(name, ups)| StageDecl {
                    name: name.to_string(),
                    kind: "cmd".into(),
                    inputs: ups
                        .iter()
                        .map(|u| {
                            (
                                format!("in_{u}"),
                                InputRef::Stage {
                                    stage: u.to_string(),
                                    sub: None,
                                },
                            )
                        })
                        .collect::<BTreeMap<_, _>>(),
                    params: serde_json::Value::Null,
                })
                .collect(),
        }
    }

    #[test]
    fn orders_and_selects() {
        let dag = Dag::new(&pipeline(&[
            ("c", &["a", "b"]),
            ("a", &[]),
            ("b", &["a"]),
            ("d", &[]),
        ]))
        .unwrap();
        let names: Vec<&str> = dag.order().iter().map(|&i| dag.name(i)).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert_eq!(dag.descendants(2), HashSet::from([2, 0]));
        assert_eq!(dag.ancestors(0), HashSet::from([0, 1, 2]));
    }

    #[test]
    fn names_the_cycle() {
        let cycle = Dag::new(&pipeline(&[
            ("a", &["c"]),
            ("b", &["a"]),
            ("c", &["b"]),
            ("d", &[]),
        ]))
        .unwrap_err();
        assert_eq!(cycle, ["a", "b", "c", "a"]);
    }
}
