//! Weights a running rollout puts in force over its route's split, in place
//! of what proxy.yaml says. A snapshot is built from the declared config and
//! the overrides of the moment; it keeps the declared config beside the one
//! in force, so a reload still compares YAML with YAML.

use std::collections::HashMap;

use crate::config::rollout::WHOLE;
use crate::config::{Config, ConfigForm, Weight};

/// One route's split as its rollout has it now.
/// Groups are named, not indexed: a reload may reorder `groups:` between
/// the moment a rollout computes this and the build that applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub stable: String,
    pub canary: String,
    /// The canary's weight in basis points; stable has the rest.
    pub canary_weight: u32,
    pub canary_drain: bool,
    pub stable_drain: bool,
}

/// Overrides by route name.
pub type Overrides = HashMap<String, Override>;

/// `config` with `overrides` applied, or `None` when none applies to it.
pub(super) fn apply(config: &Config, overrides: &Overrides) -> Option<Config> {
    let applies = |name: &str| overrides.contains_key(name);
    if !config.routes.iter().any(|r| applies(r.name.as_str())) {
        return None;
    }
    let mut out = config.clone();
    for route in &mut out.routes {
        let Some(o) = overrides.get(route.name.as_str()) else {
            continue;
        };
        let canary = o.canary_weight.min(WHOLE);
        for s in &mut route.split {
            let name = config.groups.get(s.group).map(|g| g.name.as_str());
            let (weight, drain) = match name {
                Some(n) if n == o.canary => (canary, o.canary_drain),
                Some(n) if n == o.stable => (WHOLE - canary, o.stable_drain),
                _ => continue,
            };
            if let Ok(w) = Weight::try_new(i64::from(weight)) {
                s.weight = w;
            }
            s.drain = drain;
        }
        if out.form == ConfigForm::GroupsOnly {
            for s in &route.split {
                if let Some(g) = out.groups.get_mut(s.group) {
                    g.weight = s.weight;
                    g.drain = s.drain;
                }
            }
        }
    }
    Some(out)
}
