//! What an operator grants of spawning: a spawner's budget.

use serde::{Deserialize, Serialize};
use toml::Spanned;
use wasmtime::bail;

use super::spawner::{check_sane, SpawnerHandle};
use super::wit::spawn::{Budget, Limits as ChildLimits};
use crate::core::kind::{Amount, Located};
use crate::core::limits::{parse_count, parse_duration, parse_size};
use crate::core::Invalid;

/// A spawner grant as `capbroker.toml` writes it: `[spawn.NAME]`. Limits
/// left out keep their defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SpawnTable {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fuel: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_children: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<String>>,
}

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
    pub fn parse(spec: &str) -> Result<SpawnGrant, Invalid> {
        let mut g = SpawnGrant::default();
        for pair in spec.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| Invalid::form(pair, "KEY=VALUE"))?;
            match key {
                "components" => g.components = Some(value.split('+').map(str::to_string).collect()),
                "max-memory" | "max-fuel" | "timeout" | "max-children" => g.set(key, value)?,
                other => {
                    return Err(Invalid::Word {
                        what: "key",
                        word: other.into(),
                        within: None,
                        known: "keys are max-memory, max-fuel, timeout, max-children, \
                                components",
                    })
                }
            }
        }
        g.checked()
    }

    /// Sets the limit `key` from its text.
    fn set(&mut self, key: &str, value: &str) -> Result<(), Invalid> {
        match key {
            "max-memory" => self.limits.max_memory = parse_size(value)? as u64,
            "max-fuel" => self.limits.max_fuel = parse_count(value)?,
            "timeout" => self.limits.timeout_ms = parse_duration(value)?.as_millis() as u64,
            _ => {
                self.max_children = value.parse().map_err(|_| Invalid::NotWhole {
                    what: "max-children",
                    text: value.into(),
                })?
            }
        }
        Ok(())
    }

    /// The grant, if its limits mean something.
    fn checked(self) -> Result<SpawnGrant, Invalid> {
        check_sane(&self.limits).map_err(Invalid::Limits)?;
        if self.max_children == 0 {
            return Err(Invalid::Nothing(
                "max-children of 0 would allow no child at all",
            ));
        }
        Ok(self)
    }

    /// The grant a manifest's `[spawn.NAME]` makes.
    pub fn from_table(t: &Spanned<SpawnTable>, name: &str) -> Result<SpawnGrant, Located> {
        let at = |e: Invalid| Located::at(t.span(), format!("[spawn.{name}]: {e}"));
        let spec = t.get_ref();
        let mut g = SpawnGrant::default();
        if let Some(v) = &spec.max_memory {
            g.set("max-memory", &v.text()).map_err(at)?;
        }
        if let Some(v) = &spec.max_fuel {
            g.set("max-fuel", &v.text()).map_err(at)?;
        }
        if let Some(v) = &spec.timeout {
            g.set("timeout", v).map_err(at)?;
        }
        if let Some(v) = spec.max_children {
            g.set("max-children", &v.to_string()).map_err(at)?;
        }
        g.components = spec.components.clone();
        g.checked().map_err(at)
    }

    /// The `[spawn.NAME]` entry that makes this grant again.
    pub fn to_table(&self) -> Spanned<SpawnTable> {
        Spanned::new(
            0..0,
            SpawnTable {
                max_memory: Some(Amount::Number(self.limits.max_memory)),
                max_fuel: Some(Amount::Number(self.limits.max_fuel)),
                timeout: Some(format!("{}ms", self.limits.timeout_ms)),
                max_children: Some(u64::from(self.max_children)),
                components: self.components.clone(),
            },
        )
    }

    /// A spawner for this grant, `name`; `known` are the components the
    /// broker can start.
    pub fn spawner(&self, name: &str, known: &[String]) -> wasmtime::Result<SpawnerHandle> {
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
        Ok(SpawnerHandle::new(
            name,
            Budget {
                limits: self.limits,
                max_children: self.max_children,
                components: allowed,
            },
        ))
    }
}
