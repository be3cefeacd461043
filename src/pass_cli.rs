//! `switchyard pass`: a tester pass for one route and group, signed with the
//! route's pin keys from the config (so it needs the same secrets as `run`).
//! The pass goes in the config's `override_header`; the proxy honours it
//! until it expires, or until its key leaves the key list.

use std::path::Path;

use anyhow::{Context, Result, bail};
use switchyard::assign::PassCodec;
use switchyard::config::{self, SystemKeys, Ttl, ValidateOptions};

/// What the command was asked for.
pub struct Call<'a> {
    pub config: &'a Path,
    /// `None`: the config's only route.
    pub route: Option<&'a str>,
    pub group: &'a str,
    pub ttl: &'a str,
}

/// Prints the pass on stdout and how to send it on stderr.
pub fn run(call: &Call<'_>) -> Result<()> {
    // Real keys only: a pass signed with a key made for this run is void.
    let (cfg, _) = config::load_file(call.config, &SystemKeys, ValidateOptions::default())?;
    let Some(header) = &cfg.override_header else {
        bail!(
            "{} has no override_header: the proxy would ignore any pass",
            call.config.display()
        );
    };
    let route = match call.route {
        Some(name) => cfg.routes.iter().find(|r| r.name.as_str() == name),
        None if cfg.routes.len() == 1 => cfg.routes.first(),
        None => bail!(
            "the config has {} routes: name one with --route",
            cfg.routes.len()
        ),
    }
    .with_context(|| {
        format!(
            "no route {:?} in {}",
            call.route.unwrap_or(""),
            call.config.display()
        )
    })?;
    let in_split = route
        .split
        .iter()
        .any(|s| cfg.groups[s.group].name.as_str() == call.group);
    if !in_split {
        bail!(
            "route {} does not split to a group {:?}",
            route.name.as_str(),
            call.group
        );
    }
    let ttl = config::duration::parse_duration(call.ttl)
        .and_then(Ttl::try_new)
        .map_err(|e| anyhow::anyhow!("--ttl {}: {e}", call.ttl))?;
    let now = switchyard::clock::unix_now();
    let expires = now.saturating_add(ttl.secs());
    let codec = PassCodec::new(&route.sticky.keys, route.name.as_str());
    let pass = codec
        .issue(call.group, now, expires)
        .context("the group's name is too long for a pass")?;
    println!("{pass}");
    eprintln!(
        "pass for route {} -> {}, valid for {}; send it as\n  {}: {pass}",
        route.name.as_str(),
        call.group,
        config::duration::format_duration(std::time::Duration::from_secs(u64::from(ttl.secs()))),
        header.as_str()
    );
    Ok(())
}
