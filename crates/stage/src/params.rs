use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::PathBuf;

use crate::{Context, InputSlot, ParamError, Stage, StageError};

/// A stage's typed parameters. Derive `Deserialize` with `#[serde(deny_unknown_fields,
/// default)]` and a documented `Default`, so that every key is optional and typos are caught.
pub trait Params: Serialize + DeserializeOwned + Default + Send + Sync {
    /// Checks that go beyond types (ranges, combinations). Name the key in the error.
    fn validate(&self) -> Result<(), ParamError> {
        Ok(())
    }
}

/// The convenient way to write a stage: typed parameters, everything else derived.
pub trait TypedStage: Send + Sync {
    const KIND: &'static str;
    const CODE_VERSION: u32;
    const INPUTS: &'static [InputSlot];
    const RESUMABLE: bool = false;
    /// See [`Stage::side_effects`](crate::Stage::side_effects).
    const SIDE_EFFECTS: bool = false;
    type Params: Params;

    fn outputs(&self, params: &Self::Params) -> Vec<PathBuf>;

    fn extra_dependencies(&self, _params: &Self::Params) -> Vec<PathBuf> {
        Vec::new()
    }

    fn run(&self, params: &Self::Params, ctx: &mut Context<'_>) -> Result<(), StageError>;
}

/// Deserializes a stage's parameter table, reporting the exact key path that failed.
pub fn parse_params<P: Params>(raw: &toml::Table) -> Result<P, ParamError> {
    let value = toml::Value::Table(raw.clone());
    let params: P = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        ParamError {
            path,
            // `message()`, not `to_string()`: the latter appends "in `key`" on a new line,
            // and a diagnostic is one line (the path is reported separately).
            message: e.into_inner().message().to_owned(),
        }
    })?;
    params.validate()?;
    Ok(params)
}

fn typed<P: Params>(canonical: &serde_json::Value) -> Result<P, StageError> {
    serde_json::from_value(canonical.clone()).map_err(|e| {
        StageError::Failed(format!("internal: canonical parameters do not parse: {e}"))
    })
}

impl<T: TypedStage> Stage for T {
    fn kind(&self) -> &'static str {
        T::KIND
    }

    fn code_version(&self) -> u32 {
        T::CODE_VERSION
    }

    fn input_slots(&self) -> Option<&'static [InputSlot]> {
        Some(T::INPUTS)
    }

    fn resolve_params(&self, raw: &toml::Table) -> Result<serde_json::Value, ParamError> {
        let params: T::Params = parse_params(raw)?;
        serde_json::to_value(&params).map_err(|e| ParamError::new(&[], e.to_string()))
    }

    fn outputs(&self, params: &serde_json::Value) -> Vec<PathBuf> {
        typed::<T::Params>(params)
            .map(|p| TypedStage::outputs(self, &p))
            .unwrap_or_default()
    }

    fn extra_dependencies(&self, params: &serde_json::Value) -> Vec<PathBuf> {
        typed::<T::Params>(params)
            .map(|p| TypedStage::extra_dependencies(self, &p))
            .unwrap_or_default()
    }

    fn resumable(&self) -> bool {
        T::RESUMABLE
    }

    fn side_effects(&self) -> bool {
        T::SIDE_EFFECTS
    }

    fn run(&self, ctx: &mut Context<'_>) -> Result<(), StageError> {
        let params = typed::<T::Params>(ctx.params)?;
        TypedStage::run(self, &params, ctx)
    }
}
