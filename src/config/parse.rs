//! Layering raw setting values, and turning them into typed values with
//! errors that name the setting.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use super::settings::{self, SETTINGS};
use super::ConfigError;

/// Setting name -> raw string value, after layering.
pub(crate) struct Raw(BTreeMap<String, String>);

impl Raw {
    pub fn defaults() -> Raw {
        Raw(SETTINGS
            .iter()
            .map(|s| (s.name.to_string(), s.default.to_string()))
            .collect())
    }

    /// TOML keys are setting names in any case. Unknown keys are an error,
    /// because a typo that silently does nothing is worse than a refusal.
    pub fn apply_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e| ConfigError::new("--config", format!("not valid TOML: {e}")))?;
        for (key, value) in table {
            let setting = settings::find(&key)
                .ok_or_else(|| ConfigError::new(&key, "unknown setting in the TOML file"))?;
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => items
                    .into_iter()
                    .map(|v| match v {
                        toml::Value::String(s) => s,
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => {
                    return Err(ConfigError::new(
                        setting.name,
                        format!("unsupported TOML value {other}"),
                    ))
                }
            };
            self.0.insert(setting.name.to_string(), text);
        }
        Ok(())
    }

    pub fn apply_env(&mut self, env: &[(String, String)]) {
        for (key, value) in env {
            if let Some(s) = SETTINGS.iter().find(|s| s.name == key) {
                self.0.insert(s.name.to_string(), value.clone());
            }
        }
    }

    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0
    }

    pub fn get(&self, name: &str) -> &str {
        self.0.get(name).map(|s| s.trim()).unwrap_or("")
    }

    pub fn optional(&self, name: &str) -> Option<String> {
        Some(self.get(name))
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    pub fn non_empty(&self, name: &str) -> Result<&str, ConfigError> {
        match self.get(name) {
            "" => Err(ConfigError::new(name, "must not be empty")),
            v => Ok(v),
        }
    }

    pub fn parse<T: FromStr>(&self, name: &str) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        let v = self.get(name);
        v.parse::<T>()
            .map_err(|e| ConfigError::new(name, format!("{v:?} is not valid: {e}")))
    }

    pub fn positive<T: FromStr + PartialOrd + Default>(&self, name: &str) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        let v: T = self.parse(name)?;
        if v <= T::default() {
            return Err(ConfigError::new(name, "must be greater than 0"));
        }
        Ok(v)
    }

    pub fn positive_f64(&self, name: &str) -> Result<f64, ConfigError> {
        let v: f64 = self.parse(name)?;
        if !v.is_finite() || v <= 0.0 {
            return Err(ConfigError::new(name, "must be a number greater than 0"));
        }
        Ok(v)
    }

    pub fn millis(&self, name: &str) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(self.positive::<u64>(name)?))
    }

    pub fn bool(&self, name: &str) -> Result<bool, ConfigError> {
        match self.get(name).to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            v => Err(ConfigError::new(
                name,
                format!("{v:?} is not true or false"),
            )),
        }
    }
}

pub(super) fn socket_addr(name: &str, v: &str) -> Result<std::net::SocketAddr, ConfigError> {
    v.parse().map_err(|e| {
        ConfigError::new(
            name,
            format!("{v:?} is not an address like 0.0.0.0:8080: {e}"),
        )
    })
}

/// A request path, matched exactly, or as a prefix when it ends in `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Exact(String),
    Prefix(String),
}

impl PathPattern {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => path == p,
            PathPattern::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

pub(super) fn path_patterns(name: &str, v: &str) -> Result<Vec<PathPattern>, ConfigError> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !item.starts_with('/') {
            return Err(ConfigError::new(
                name,
                format!("{item:?} must start with /"),
            ));
        }
        match item.strip_suffix('*') {
            Some(prefix) => out.push(PathPattern::Prefix(prefix.to_string())),
            None => out.push(PathPattern::Exact(item.to_string())),
        }
    }
    Ok(out)
}
