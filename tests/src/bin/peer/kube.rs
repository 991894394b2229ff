//! A synthetic cluster behind the in-test Kubernetes API server.

use super::{Res, say};

/// A synthetic cluster behind the in-test Kubernetes API: `<pods> <services> <nodes>` spread
/// over 100 namespaces, pods owned by Deployments' ReplicaSets. Prints `ready <port>
/// <kubeconfig>`, then takes commands on stdin: `add <n>` / `del <n>` a pod `churn-<n>` on
/// node `bench-node` (namespace `churn`, container `app` with id `<n as 16 hex digits> x4`).
pub(crate) fn kube_api(pods: u64, services: u64, nodes: u64) -> Res<()> {
    use sockscope_tests::fake_apiserver::{KubeApi, objects};
    let api = KubeApi::start();
    let ip = |base: u8, n: u64| {
        format!(
            "{base}.{}.{}.{}",
            (n >> 16) & 0xff,
            (n >> 8) & 0xff,
            n & 0xff
        )
    };
    for n in 0..nodes {
        api.apply(objects::node(
            &format!("node-{n}"),
            &objects::uid(1 << 40 | n),
            &ip(172, n + 1),
        ));
    }
    api.apply(objects::node(
        "bench-node",
        &objects::uid(2 << 40),
        "192.0.2.1",
    ));
    // Ten pods per Deployment.
    for d in 0..pods.div_ceil(10) {
        let ns = format!("ns-{}", d % 100);
        api.apply(objects::replicaset(
            &ns,
            &format!("app-{d}-7c9f8d6b5"),
            &objects::uid(3 << 40 | d),
            &format!("app-{d}"),
        ));
    }
    for n in 0..pods {
        let d = n / 10;
        let ns = format!("ns-{}", d % 100);
        let rs = format!("app-{d}-7c9f8d6b5");
        let cid = format!("{:016x}", n).repeat(4);
        api.apply(objects::pod(
            &ns,
            &format!("{rs}-{n:05}"),
            &objects::uid(4 << 40 | n),
            &format!("node-{}", n % nodes.max(1)),
            &ip(10, n + 1),
            Some(("ReplicaSet", &rs)),
            Some("7c9f8d6b5"),
            &[("app", &cid)],
        ));
    }
    for n in 0..services {
        api.apply(objects::service(
            &format!("ns-{}", n % 100),
            &format!("svc-{n}"),
            &objects::uid(5 << 40 | n),
            &ip(100, n + 1),
            80,
        ));
    }
    let kubeconfig = api.kubeconfig(&std::env::temp_dir());
    say(&format!("ready {} {}", api.port, kubeconfig.display()));
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        if stdin.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (Some(cmd), Some(n)) = (
            parts.next(),
            parts.next().and_then(|n| n.parse::<u64>().ok()),
        ) else {
            continue;
        };
        let name = format!("churn-{n}");
        match cmd {
            "add" => {
                let cid = format!("{:016x}", n).repeat(4);
                api.apply(objects::pod(
                    "churn",
                    &name,
                    &objects::uid(6 << 40 | n),
                    "bench-node",
                    "127.0.0.1",
                    None,
                    None,
                    &[("app", &cid)],
                ));
            }
            "del" => api.delete("Pod", "churn", &name),
            _ => {}
        }
        say(&format!("ok {cmd} {n}"));
    }
}
