//! Who owns a socket (cgroup -> workload, network namespace) and who is on the other end
//! (address -> class, and the hostname the owner's namespace resolved for it).

pub mod cgroup;
pub mod hosts;
pub mod kubepods;
pub mod netns;
pub mod remote;

use std::{
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use cgroup::{Owner, Resolver};
use hosts::HostCache;
use netns::NetnsResolver;

/// Everything that labels a kernel key, shared by the drain thread and the DNS answer reader.
pub struct Identity {
    /// cgroup id -> owner.
    pub cgroups: Resolver,
    /// cgroup id -> network namespace.
    pub netns: NetnsResolver,
    /// (network namespace, IP) -> hostname.
    pub hosts: HostCache,
}

impl Identity {
    /// Resolvers for cgroups below `root` in the cgroup2 mount `mount`, the kernel's
    /// `CGROUP_NETNS` map (when loaded), and a hostname cache.
    pub fn new(
        mount: PathBuf,
        root: PathBuf,
        cgroup_netns: Option<aya::maps::HashMap<aya::maps::MapData, u64, u64>>,
        hosts: HostCache,
    ) -> Self {
        Identity {
            cgroups: Resolver::new(mount.clone(), root, Duration::from_secs(1)),
            netns: NetnsResolver::new(mount, cgroup_netns),
            hosts,
        }
    }

    /// The owner of a cgroup.
    pub fn owner(&mut self, cgroup_id: u64) -> Owner {
        self.cgroups.resolve(cgroup_id)
    }

    /// The network namespace of a cgroup's processes.
    pub fn netns(&mut self, cgroup_id: u64) -> Option<u64> {
        let owner = self.cgroups.resolve(cgroup_id);
        self.netns.netns_of(cgroup_id, &owner.path)
    }

    /// The hostname the cgroup's network namespace resolved for `ip`.
    pub fn remote_host(&mut self, cgroup_id: u64, ip: IpAddr, now: Instant) -> Option<String> {
        let ns = self.netns(cgroup_id)?;
        self.hosts.lookup(ns, ip, now).map(str::to_string)
    }
}
