//! Cluster-wide address index: pod IPs, Service ClusterIPs and node addresses -> who they are.
//!
//! It holds one small entry per address and shares namespace and workload strings between
//! entries, so 10,000 pods cost about a megabyte; the API objects themselves are never kept.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

/// What an address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerClass {
    /// A pod IP (not host-network).
    Pod,
    /// A Service ClusterIP.
    Service,
    /// A node address (and so every host-network pod on it).
    Node,
}

impl PeerClass {
    /// `remote_class` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerClass::Pod => "pod",
            PeerClass::Service => "service",
            PeerClass::Node => "node",
        }
    }
}

/// One indexed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Pod, service or node.
    pub class: PeerClass,
    /// Kubernetes namespace (empty for nodes).
    pub namespace: Arc<str>,
    /// Workload of a pod, the Service's name, or the node's name.
    pub workload: Arc<str>,
    /// UID of the object the address belongs to: a delete only removes its own addresses
    /// (an IP reused by a newer pod stays).
    owner: u128,
    /// Re-list generation that last saw it.
    generation: u32,
}

/// Up to [`Addrs::MAX`] addresses of one object, inline. An object with more (a node with
/// many addresses) has the rest indexed too; they are only cleaned up by the next re-list.
#[derive(Debug, Clone, Copy)]
struct Addrs {
    ips: [IpAddr; Addrs::MAX],
    len: u8,
}

impl Addrs {
    const MAX: usize = 4;

    fn new(ips: &[IpAddr]) -> Self {
        let mut a = Addrs {
            ips: [IpAddr::from([0u8; 4]); Addrs::MAX],
            len: 0,
        };
        for (slot, ip) in a.ips.iter_mut().zip(ips) {
            *slot = *ip;
            a.len += 1;
        }
        a
    }

    fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ips[..usize::from(self.len)].iter().copied()
    }
}

/// The index, one per cluster.
#[derive(Debug, Default)]
pub struct Peers {
    by_ip: HashMap<IpAddr, Peer>,
    /// Addresses per object, so an update or delete touches only its own entries. Inline,
    /// not one allocation per object: small long-lived allocations scattered through the heap
    /// a big list was decoded in would keep its pages resident.
    by_owner: HashMap<(PeerClass, u128), Addrs>,
    strings: HashSet<Arc<str>>,
    /// Per class: the generation of the running re-list, if any.
    relisting: HashMap<PeerClass, u32>,
    generation: u32,
}

impl Peers {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(a.clone());
        a
    }

    /// Sets the addresses of object `owner` (replacing its earlier ones).
    pub fn apply(
        &mut self,
        class: PeerClass,
        owner: u128,
        namespace: &str,
        workload: &str,
        ips: &[IpAddr],
    ) {
        let generation = self
            .relisting
            .get(&class)
            .copied()
            .unwrap_or(self.generation);
        // Addresses the object no longer has (a pod that lost its IP, a node readdressed).
        if let Some(old) = self.by_owner.insert((class, owner), Addrs::new(ips)) {
            for ip in old.iter().filter(|ip| !ips.contains(ip)) {
                self.remove_if_owned(ip, class, owner);
            }
        }
        let namespace = self.intern(namespace);
        let workload = self.intern(workload);
        for ip in ips {
            // A node address wins over a pod claiming it (a host-network pod reports the
            // node's IP as its own).
            if class == PeerClass::Pod
                && self
                    .by_ip
                    .get(ip)
                    .is_some_and(|p| p.class == PeerClass::Node)
            {
                continue;
            }
            self.by_ip.insert(
                *ip,
                Peer {
                    class,
                    namespace: namespace.clone(),
                    workload: workload.clone(),
                    owner,
                    generation,
                },
            );
        }
    }

    /// Removes the addresses of a deleted object.
    pub fn delete(&mut self, class: PeerClass, owner: u128) {
        if let Some(addrs) = self.by_owner.remove(&(class, owner)) {
            for ip in addrs.iter() {
                self.remove_if_owned(ip, class, owner);
            }
        }
    }

    fn remove_if_owned(&mut self, ip: IpAddr, class: PeerClass, owner: u128) {
        if self
            .by_ip
            .get(&ip)
            .is_some_and(|p| p.owner == owner && p.class == class)
        {
            self.by_ip.remove(&ip);
        }
    }

    /// A re-list of `class` starts.
    pub fn relist_start(&mut self, class: PeerClass) {
        self.generation = self.generation.wrapping_add(1);
        self.relisting.insert(class, self.generation);
    }

    /// A re-list of `class` ended: its entries the re-list did not touch are gone.
    pub fn relist_done(&mut self, class: PeerClass) {
        if let Some(generation) = self.relisting.remove(&class) {
            self.by_ip
                .retain(|_, p| p.class != class || p.generation == generation);
            let by_ip = &self.by_ip;
            self.by_owner.retain(|(c, owner), ips| {
                *c != class
                    || ips
                        .iter()
                        .any(|ip| by_ip.get(&ip).is_some_and(|p| p.owner == *owner))
            });
        }
        self.strings.retain(|s| Arc::strong_count(s) > 1);
    }

    /// Who has `ip`.
    pub fn get(&self, ip: IpAddr) -> Option<&Peer> {
        self.by_ip.get(&ip)
    }

    /// Addresses indexed.
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    /// Nothing indexed.
    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    /// Distinct strings held.
    pub fn strings(&self) -> usize {
        self.strings.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn apply_delete_reuse_and_relist() {
        let mut p = Peers::default();
        p.apply(
            PeerClass::Pod,
            1,
            "shop",
            "web",
            &[ip("10.0.0.1"), ip("fd00::1")],
        );
        p.apply(PeerClass::Service, 2, "shop", "db", &[ip("10.96.0.10")]);
        p.apply(PeerClass::Node, 3, "", "node-a", &[ip("192.168.0.5")]);
        assert_eq!(p.get(ip("fd00::1")).map(|x| &*x.workload), Some("web"));
        assert_eq!(
            p.get(ip("10.96.0.10")).map(|x| x.class),
            Some(PeerClass::Service)
        );
        // A host-network pod reports the node's address: the node keeps it.
        p.apply(
            PeerClass::Pod,
            4,
            "kube-system",
            "proxy",
            &[ip("192.168.0.5")],
        );
        assert_eq!(
            p.get(ip("192.168.0.5")).map(|x| x.class),
            Some(PeerClass::Node)
        );
        // Pod 1 deleted after pod 5 took its IP: pod 5 keeps it.
        p.apply(PeerClass::Pod, 5, "shop", "api", &[ip("10.0.0.1")]);
        p.delete(PeerClass::Pod, 1);
        assert_eq!(p.get(ip("10.0.0.1")).map(|x| &*x.workload), Some("api"));
        assert!(p.get(ip("fd00::1")).is_none());
        // Strings are shared.
        p.apply(PeerClass::Pod, 6, "shop", "api", &[ip("10.0.0.2")]);
        assert!(Arc::ptr_eq(
            &p.get(ip("10.0.0.1")).expect("a").workload,
            &p.get(ip("10.0.0.2")).expect("b").workload
        ));
        // Re-list of pods: pod 6 not listed any more; services untouched.
        p.relist_start(PeerClass::Pod);
        p.apply(PeerClass::Pod, 5, "shop", "api", &[ip("10.0.0.1")]);
        p.relist_done(PeerClass::Pod);
        assert!(p.get(ip("10.0.0.2")).is_none());
        assert!(p.get(ip("10.0.0.1")).is_some());
        assert!(p.get(ip("10.96.0.10")).is_some());
        // "web" is no longer used by anyone.
        assert!(!p.strings.contains("web"));
        // A pod whose IP changed loses the old one.
        p.apply(PeerClass::Pod, 5, "shop", "api", &[ip("10.0.0.9")]);
        assert!(p.get(ip("10.0.0.1")).is_none());
    }
}
