//! What the config says about a question name: whether it is the cluster's own (the cluster
//! domain and the search domains), in a named suffix set (`dns.domain_classes`), or on a
//! domain watchlist (`dns.watchlists`, files reloaded when they change).
//!
//! Names are compared in the presentation form [`super::names::presentation`] gives them:
//! lower case, no trailing dot.

use std::{
    collections::HashSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::SystemTime,
};

/// `qname_class` of names in the cluster domain or a search domain.
pub const CLUSTER: &str = "cluster";
/// `qname_class` of every other name.
pub const EXTERNAL: &str = "external";
/// `qname_class` when the name is not known (`~overflow`, `~split`, or never learnt).
pub const UNKNOWN: &str = "~unknown";

/// Errors of domain lists.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A line that is neither a domain name nor `*.` followed by one.
    #[error("{path}:{line}: {entry:?} is not a domain name or *.suffix ({why})")]
    Entry {
        /// The file (or config key) the entry is in.
        path: String,
        /// Its 1-based line.
        line: usize,
        /// The entry as written.
        entry: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A watchlist file that cannot be read.
    #[error("watchlist {name}: cannot read {}", path.display())]
    Read {
        /// The watchlist's name.
        name: String,
        /// Its file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A watchlist file that changed while it was read.
    #[error("watchlist {name}: the file changed while it was read; read again at the next drain")]
    Changing {
        /// The watchlist's name.
        name: String,
    },
    /// A class name that would mean something else.
    #[error(
        "dns.domain_classes: {0:?} is reserved or not a plain name (use [a-z0-9_-], not cluster or external)"
    )]
    ClassName(String),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Domain names and `*.suffix` patterns. A name matches itself; `*.example.com` matches every
/// name strictly below `example.com` (as Cilium's `matchPattern` and DNS wildcards do), not
/// `example.com` itself.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DomainSet {
    exact: HashSet<String>,
    /// `s` for each pattern `*.s`.
    below: HashSet<String>,
}

impl DomainSet {
    /// Adds `entry` (a name or `*.suffix`), normalised; the reason when it is malformed.
    pub fn insert(&mut self, entry: &str) -> std::result::Result<(), &'static str> {
        let e = entry.trim().trim_end_matches('.').to_ascii_lowercase();
        match e.strip_prefix("*.") {
            Some(suffix) => {
                check_name(suffix)?;
                self.below.insert(suffix.to_string());
            }
            None => {
                check_name(&e)?;
                self.exact.insert(e);
            }
        }
        Ok(())
    }

    /// Adds `suffix` and every name below it.
    pub fn insert_suffix(&mut self, suffix: &str) -> std::result::Result<(), &'static str> {
        let s = suffix.trim().trim_start_matches("*.").trim_end_matches('.');
        self.insert(s)?;
        self.insert(&format!("*.{s}"))
    }

    /// Entries in the set.
    pub fn len(&self) -> usize {
        self.exact.len() + self.below.len()
    }

    /// Whether the set has no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry `name` matches (the name itself, or the `*.suffix` pattern), if any. The
    /// exact entry wins, then the longest suffix.
    pub fn matching(&self, name: &str) -> Option<String> {
        if self.exact.contains(name) {
            return Some(name.to_string());
        }
        if self.below.is_empty() {
            return None;
        }
        let mut rest = name;
        while let Some((_, tail)) = rest.split_once('.') {
            if self.below.contains(tail) {
                return Some(format!("*.{tail}"));
            }
            rest = tail;
        }
        None
    }

    /// Parses a file's text: one entry per line, `#` starts a comment, blank lines skipped.
    pub fn parse(text: &str, path: &str) -> Result<Self> {
        let mut set = DomainSet::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            set.insert(line).map_err(|why| Error::Entry {
                path: path.to_string(),
                line: i + 1,
                entry: line.to_string(),
                why,
            })?;
        }
        Ok(set)
    }
}

/// A name in presentation form without escapes: labels of 1 to 63 letters, digits, `-` or
/// `_`, 253 characters at most (RFC 1035 2.3.4; `_` for service names).
fn check_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("only letters, digits, - and _ may appear, and * only as a leading *.");
        }
    }
    Ok(())
}

/// `qname_class`: the cluster's own names, then named suffix sets in config order, else
/// [`EXTERNAL`].
#[derive(Debug, Clone, Default)]
pub struct DomainClasses {
    cluster: DomainSet,
    sets: Vec<(String, DomainSet)>,
}

impl DomainClasses {
    /// The cluster domain and search domains are [`CLUSTER`]; `sets` are class name ->
    /// suffixes.
    pub fn new(
        cluster_domain: &str,
        search_domains: &[String],
        sets: &[(String, Vec<String>)],
    ) -> Result<Self> {
        let mut cluster = DomainSet::default();
        for (i, d) in std::iter::once(cluster_domain)
            .chain(search_domains.iter().map(String::as_str))
            .enumerate()
        {
            cluster.insert_suffix(d).map_err(|why| Error::Entry {
                path: "dns.search_domains".into(),
                line: i,
                entry: d.to_string(),
                why,
            })?;
        }
        let mut out = Vec::new();
        for (name, suffixes) in sets {
            if name == CLUSTER
                || name == EXTERNAL
                || name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                return Err(Error::ClassName(name.clone()));
            }
            let mut set = DomainSet::default();
            for (i, s) in suffixes.iter().enumerate() {
                set.insert_suffix(s).map_err(|why| Error::Entry {
                    path: format!("dns.domain_classes.{name}"),
                    line: i + 1,
                    entry: s.clone(),
                    why,
                })?;
            }
            out.push((name.clone(), set));
        }
        Ok(DomainClasses { cluster, sets: out })
    }

    /// The class of a known name.
    pub fn class(&self, name: &str) -> &str {
        if self.cluster.matching(name).is_some() {
            return CLUSTER;
        }
        self.sets
            .iter()
            .find(|(_, set)| set.matching(name).is_some())
            .map_or(EXTERNAL, |(class, _)| class.as_str())
    }
}

/// The search domains of a resolv.conf (its last `search` or `domain` line, as the resolver
/// reads it: resolv.conf(5)).
pub fn resolv_conf_search(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("search") | Some("domain") => {
                out = words
                    .map(|w| w.trim_end_matches('.').to_ascii_lowercase())
                    .filter(|w| !w.is_empty())
                    .collect();
            }
            _ => {}
        }
    }
    out
}

/// What identifies a file's content without reading it: a ConfigMap update replaces the
/// symlinked directory (new inode), an edit in place changes the size or mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: m.modified().ok(),
    })
}

/// One watchlist: its name, file and current entries.
#[derive(Debug)]
pub struct Watchlist {
    /// `list` label value.
    pub name: String,
    path: PathBuf,
    set: DomainSet,
    stamp: Option<Stamp>,
}

/// How a reload went.
#[derive(Debug)]
pub struct Reload {
    /// The watchlist.
    pub name: String,
    /// Entries now in force (the old ones when the reload failed).
    pub entries: usize,
    /// Why the file was not taken.
    pub error: Option<Error>,
}

/// Every configured watchlist.
#[derive(Debug, Default)]
pub struct Watchlists {
    lists: Vec<Watchlist>,
}

impl Watchlists {
    /// Reads every list; a missing or malformed file is an error (at start, nothing was
    /// loaded before to fall back on).
    pub fn load(config: &[(String, PathBuf)]) -> Result<Self> {
        let mut lists = Vec::new();
        for (name, path) in config {
            let st = stamp(path).map_err(|source| Error::Read {
                name: name.clone(),
                path: path.clone(),
                source,
            })?;
            let set = read(name, path)?;
            lists.push(Watchlist {
                name: name.clone(),
                path: path.clone(),
                set,
                stamp: Some(st),
            });
        }
        Ok(Watchlists { lists })
    }

    /// Re-reads the lists whose file changed. A file that cannot be read or parsed leaves the
    /// list as it was (a half-written file must not empty it) and is retried next time.
    pub fn refresh(&mut self) -> Vec<Reload> {
        let mut out = Vec::new();
        for w in &mut self.lists {
            let now = stamp(&w.path).ok();
            // `stamp` is the file as last tried, read or not: each change is tried (and a
            // failure reported) once.
            if now == w.stamp {
                continue;
            }
            w.stamp = now;
            let result = match now {
                // Taken only if the file did not change while it was read: a file written in
                // place can be read half written (then it is read again at the next drain).
                Some(_) => read(&w.name, &w.path).and_then(|set| {
                    if stamp(&w.path).ok() == now {
                        Ok(set)
                    } else {
                        w.stamp = None;
                        Err(Error::Changing {
                            name: w.name.clone(),
                        })
                    }
                }),
                None => Err(Error::Read {
                    name: w.name.clone(),
                    path: w.path.clone(),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                }),
            };
            let error = match result {
                Ok(set) => {
                    w.set = set;
                    None
                }
                Err(e) => Some(e),
            };
            out.push(Reload {
                name: w.name.clone(),
                entries: w.set.len(),
                error,
            });
        }
        out
    }

    /// The lists `name` is on, with the entry it matched.
    pub fn matching<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a str, String)> + 'a {
        self.lists
            .iter()
            .filter_map(move |w| w.set.matching(name).map(|e| (w.name.as_str(), e)))
    }

    /// Name and entries of every list.
    pub fn sizes(&self) -> impl Iterator<Item = (&str, usize)> {
        self.lists.iter().map(|w| (w.name.as_str(), w.set.len()))
    }

    /// Whether no list is configured.
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }
}

fn read(name: &str, path: &Path) -> Result<DomainSet> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        name: name.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    DomainSet::parse(&text, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_patterns() {
        let set = DomainSet::parse(
            "# bad domains\nEvil.example.\n*.tunnel.example  # every subdomain\n\n",
            "list",
        )
        .expect("parse");
        assert_eq!(set.len(), 2);
        assert_eq!(
            set.matching("evil.example").as_deref(),
            Some("evil.example")
        );
        assert_eq!(set.matching("www.evil.example"), None);
        assert_eq!(
            set.matching("a.b.tunnel.example").as_deref(),
            Some("*.tunnel.example")
        );
        assert_eq!(set.matching("tunnel.example"), None);
        assert_eq!(set.matching("xtunnel.example"), None);
    }

    #[test]
    fn malformed_entries_name_their_line() {
        for (text, why) in [
            ("ok.example\nfoo bar\n", "only letters"),
            ("ok.example\n\na..b\n", "empty label"),
            ("evil.*.example\n", "only letters"),
            (&format!("{}.example\n", "a".repeat(64)), "63"),
        ] {
            let e = DomainSet::parse(text, "w.txt").expect_err(text).to_string();
            assert!(e.starts_with("w.txt:"), "{e}");
            assert!(e.contains(why), "{e}");
        }
        let e = DomainSet::parse("ok.example\nfoo bar\n", "w.txt").expect_err("bad");
        assert!(e.to_string().starts_with("w.txt:2:"), "{e}");
    }

    #[test]
    fn classes() {
        let c = DomainClasses::new(
            "cluster.local",
            &["corp.example".into()],
            &[("partner".into(), vec!["partner.example".into()])],
        )
        .expect("classes");
        assert_eq!(c.class("db.shop.svc.cluster.local"), CLUSTER);
        assert_eq!(c.class("cluster.local"), CLUSTER);
        assert_eq!(c.class("host.corp.example"), CLUSTER);
        assert_eq!(c.class("api.partner.example"), "partner");
        assert_eq!(c.class("api.github.com"), EXTERNAL);
        assert_eq!(c.class("notcluster.local"), EXTERNAL);
        assert!(DomainClasses::new("cluster.local", &[], &[("cluster".into(), vec![])]).is_err());
        assert!(DomainClasses::new("cluster local", &[], &[]).is_err());
    }

    #[test]
    fn resolv_conf() {
        let text = "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local Corp.Example.\noptions ndots:5\n";
        assert_eq!(
            resolv_conf_search(text),
            [
                "default.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ]
        );
    }

    #[test]
    fn reloads_on_change_and_keeps_the_old_list_on_error() {
        let dir = std::env::temp_dir().join(format!("sockscope-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("list");
        std::fs::write(&path, "a.example\n").expect("write");
        let mut w = Watchlists::load(&[("bad".into(), path.clone())]).expect("load");
        assert!(w.refresh().is_empty(), "unchanged file is not re-read");
        assert_eq!(w.matching("a.example").count(), 1);
        std::fs::write(&path, "a.example\n*.b.example\n").expect("write");
        let r = w.refresh();
        assert_eq!(r.len(), 1);
        assert!(r[0].error.is_none());
        assert_eq!(r[0].entries, 2);
        assert_eq!(
            w.matching("x.b.example").collect::<Vec<_>>(),
            [("bad", "*.b.example".to_string())]
        );
        std::fs::write(&path, "a.example\nnot valid\n").expect("write");
        let r = w.refresh();
        assert_eq!(r.len(), 1);
        assert!(r[0].error.is_some());
        assert_eq!(r[0].entries, 2, "the old list stays");
        assert_eq!(w.matching("x.b.example").count(), 1);
        assert!(w.refresh().is_empty(), "a bad file is reported once");
        std::fs::remove_file(&path).expect("rm");
        assert_eq!(w.refresh().len(), 1, "a removed file is reported once");
        assert!(w.refresh().is_empty());
        assert_eq!(w.matching("a.example").count(), 1);
        std::fs::write(&path, "c.example\n").expect("write");
        let r = w.refresh();
        assert!(r[0].error.is_none());
        assert_eq!(w.matching("a.example").count(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
