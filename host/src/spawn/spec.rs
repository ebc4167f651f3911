//! What an operator grants of spawning: a spawner's budget.

use wasmtime::bail;

use super::spawner::{check_sane, SpawnerHandle};
use super::wit::spawn::{Budget, Limits as ChildLimits};
use crate::core::limits::{parse_count, parse_duration, parse_size};

/// The operator's grant of a spawner. `components: None` means every
/// component the broker knows.
#[derive(Clone, Debug)]
pub struct SpawnGrant {
    pub limits: ChildLimits,
    pub max_children: u32,
    pub components: Option<Vec<String>>,
}

impl Default for SpawnGrant {
    fn default() -> Self {
        SpawnGrant {
            limits: ChildLimits {
                max_memory: 64 << 20,
                max_fuel: 1_000_000_000,
                timeout_ms: 10_000,
            },
            max_children: 16,
            components: None,
        }
    }
}

impl SpawnGrant {
    /// Parses the value part of `--spawn NAME=KEY=VALUE,…`, keys being
    /// `max-memory` (a size), `max-fuel` (a count, `K`/`M`/`G` allowed),
    /// `timeout` (`500ms`, `2s`, `1m`), `max-children` and `components`
    /// (names joined by `+`). Unnamed keys keep their defaults.
    pub fn parse(spec: &str) -> Result<SpawnGrant, String> {
        let mut g = SpawnGrant::default();
        for pair in spec.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not KEY=VALUE"))?;
            match key {
                "max-memory" => g.limits.max_memory = parse_size(value)? as u64,
                "max-fuel" => g.limits.max_fuel = parse_count(value)?,
                "timeout" => g.limits.timeout_ms = parse_duration(value)?.as_millis() as u64,
                "max-children" => {
                    g.max_children = value
                        .parse()
                        .map_err(|_| format!("max-children `{value}` is not a whole number"))?
                }
                "components" => g.components = Some(value.split('+').map(str::to_string).collect()),
                other => {
                    return Err(format!(
                        "unknown key `{other}` (keys are max-memory, max-fuel, timeout, \
                         max-children, components)"
                    ))
                }
            }
        }
        check_sane(&g.limits).map_err(|e| crate::core::Describe(&e).to_string())?;
        if g.max_children == 0 {
            return Err("max-children of 0 would allow no child at all".into());
        }
        Ok(g)
    }

    /// A spawner for this grant; `known` are the components the broker
    /// can start.
    pub fn spawner(&self, known: &[String]) -> wasmtime::Result<SpawnerHandle> {
        let allowed = match &self.components {
            None => known.to_vec(),
            Some(names) => {
                for n in names {
                    if !known.contains(n) {
                        bail!(
                            "--spawn: there is no component `{n}` (known: {})",
                            known.join(", ")
                        );
                    }
                }
                names.clone()
            }
        };
        Ok(SpawnerHandle::new(Budget {
            limits: self.limits,
            max_children: self.max_children,
            components: allowed,
        }))
    }
}
