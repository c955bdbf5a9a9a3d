use std::collections::BTreeMap;

use crate::Stage;

/// The stage kinds a binary knows, by name.
#[derive(Default)]
pub struct Registry {
    stages: BTreeMap<&'static str, Box<dyn Stage>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a stage kind. Two kinds with one name is a programming error.
    pub fn add(&mut self, stage: impl Stage + 'static) {
        let kind = stage.kind();
        let previous = self.stages.insert(kind, Box::new(stage));
        assert!(previous.is_none(), "stage kind `{kind}` registered twice");
    }

    pub fn get(&self, kind: &str) -> Option<&dyn Stage> {
        self.stages.get(kind).map(|s| s.as_ref())
    }

    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.stages.keys().copied()
    }
}
