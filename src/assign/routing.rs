//! What a decision needs to know of one route of one config generation, and
//! nothing else: the groups' names, drain flags and target ids, the bucket
//! table over the route's weights, and the pin's lifetime. Built from the
//! config alone (the snapshot holds one per route), so the rules of
//! DESIGN.md §2-§4 are tested without any live state.

use super::bucket::BucketTable;
use crate::config::{Config, GroupName, RouteSpec};

/// The decision's view of one route. Group indices are the config's (and
/// the snapshot's); a group the route does not split to is not there for it.
#[derive(Debug)]
pub struct Routing {
    groups: Vec<RoutedGroup>,
    table: BucketTable,
    ttl_secs: u32,
}

/// One group as the decision sees it (index order: the config's).
#[derive(Debug)]
struct RoutedGroup {
    name: GroupName,
    /// The route splits to it (weight 0 and drained included).
    in_route: bool,
    /// Its weight in the route's split (0 when not in the route).
    weight: u32,
    drain: bool,
    /// The targets' ids ([`target_id`]), in the config's order.
    target_ids: Vec<u32>,
}

/// A target's stable id from its address (FNV-1a: the same across builds,
/// platforms and replicas, which the cookie needs).
pub fn target_id(address: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in address.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

impl Routing {
    /// The view of `route`, one of `config`'s routes.
    pub fn new(config: &Config, route: &RouteSpec) -> Self {
        let groups: Vec<RoutedGroup> = config
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let split = route.split.iter().find(|s| s.group == i);
                RoutedGroup {
                    name: g.name.clone(),
                    in_route: split.is_some(),
                    weight: split.map_or(0, |s| s.weight.get()),
                    drain: split.is_some_and(|s| s.drain),
                    target_ids: g
                        .targets
                        .iter()
                        .map(|t| target_id(t.address.as_str()))
                        .collect(),
                }
            })
            .collect();
        let table = BucketTable::new(
            route
                .split
                .iter()
                .filter(|s| !s.drain)
                .map(|s| (s.group, s.weight.get())),
        );
        Self {
            groups,
            table,
            ttl_secs: route.sticky.ttl.secs(),
        }
    }

    /// The index of the group named `name`, if this route splits to it.
    pub fn group_by_name(&self, name: &[u8]) -> Option<usize> {
        self.groups
            .iter()
            .position(|g| g.in_route && g.name.as_str().as_bytes() == name)
    }

    /// The name of group `g`.
    pub fn group_name(&self, g: usize) -> &str {
        self.groups.get(g).map_or("", |g| g.name.as_str())
    }

    /// The groups this route splits to, each with its weight and whether it
    /// drains: where a failing group's clients may be served instead.
    pub fn split_groups(&self) -> impl Iterator<Item = (usize, u32, bool)> + '_ {
        self.groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.in_route)
            .map(|(i, g)| (i, g.weight, g.drain))
    }

    pub(super) fn draining(&self, g: usize) -> bool {
        self.groups.get(g).is_some_and(|g| g.drain)
    }

    /// The index, in group `g`, of the target whose id is `id`.
    pub fn target_by_id(&self, g: usize, id: u32) -> Option<usize> {
        self.groups.get(g)?.target_ids.iter().position(|&t| t == id)
    }

    /// The id of target `t` of group `g` (0 if there is none).
    pub fn target_id_of(&self, g: usize, t: usize) -> u32 {
        self.groups
            .get(g)
            .and_then(|g| g.target_ids.get(t))
            .copied()
            .unwrap_or(0)
    }

    pub fn table(&self) -> &BucketTable {
        &self.table
    }

    pub(super) fn ttl_secs(&self) -> u32 {
        self.ttl_secs
    }
}
