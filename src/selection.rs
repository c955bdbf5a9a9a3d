//! Which stages a run considers (`--to`, `--only`, `--from`) and which it forces (`--force`,
//! `--from`).

use std::collections::HashSet;

use crate::{Error, Project};

/// The stage-selection flags of `run`.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Force this stage and everything downstream (its upstream still runs if stale).
    pub from: Option<String>,
    /// Stop after this stage: only it and its upstream are considered.
    pub to: Option<String>,
    /// Consider only these stages; their inputs come from the committed outputs as they are.
    pub only: Vec<String>,
    /// Run every considered stage, fresh or not.
    pub force: bool,
}

/// Per stage (file order): considered at all, and if forced, why.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub selected: Vec<bool>,
    pub forced: Vec<Option<String>>,
}

impl Selection {
    pub fn resolve(&self, project: &Project) -> Result<Chosen, Error> {
        let dag = project.dag();
        let n = project.pipeline().stages.len();
        let mut selected: HashSet<usize> = (0..n).collect();
        if let Some(to) = &self.to {
            selected = dag.ancestors(project.stage_index(to)?);
        }
        if let Some(from) = &self.from {
            let i = project.stage_index(from)?;
            let related: HashSet<usize> = dag
                .ancestors(i)
                .union(&dag.descendants(i))
                .copied()
                .collect();
            selected = selected.intersection(&related).copied().collect();
        }
        if !self.only.is_empty() {
            let only = self
                .only
                .iter()
                .map(|name| project.stage_index(name))
                .collect::<Result<HashSet<_>, _>>()?;
            selected = selected.intersection(&only).copied().collect();
        }
        if selected.is_empty() {
            return Err(Error::Usage(
                "the combination of --from/--to/--only selects no stage; fix: check the stage names".into(),
            ));
        }
        let mut forced = vec![None; n];
        if self.force {
            for &i in &selected {
                forced[i] = Some("forced by --force".to_string());
            }
        }
        if let Some(from) = &self.from {
            let i = project.stage_index(from)?;
            for d in dag
                .descendants(i)
                .into_iter()
                .filter(|d| selected.contains(d))
            {
                forced[d].get_or_insert_with(|| format!("forced by --from {from}"));
            }
        }
        Ok(Chosen {
            selected: (0..n).map(|i| selected.contains(&i)).collect(),
            forced,
        })
    }
}
