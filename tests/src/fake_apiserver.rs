//! An in-test Kubernetes API server: the list and watch protocol of the real API
//! (`GET /api/v1/pods`, `?watch=true&resourceVersion=N`, chunked JSON event lines, metadata-only
//! lists when asked with `Accept: ...;as=PartialObjectMetadataList`), serving real Kubernetes
//! JSON objects, with a switch that takes it off the network (connections refused, streams cut)
//! and brings it back with its event history, as an API server restart would.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::{Shutdown, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// The resources the server knows, by collection path.
pub const RESOURCES: [(&str, &str, &str); 11] = [
    ("/api/v1/pods", "v1", "Pod"),
    ("/api/v1/services", "v1", "Service"),
    ("/api/v1/nodes", "v1", "Node"),
    ("/api/v1/namespaces", "v1", "Namespace"),
    ("/apis/apps/v1/replicasets", "apps/v1", "ReplicaSet"),
    ("/apis/apps/v1/deployments", "apps/v1", "Deployment"),
    ("/apis/apps/v1/statefulsets", "apps/v1", "StatefulSet"),
    ("/apis/apps/v1/daemonsets", "apps/v1", "DaemonSet"),
    ("/apis/batch/v1/jobs", "batch/v1", "Job"),
    ("/apis/batch/v1/cronjobs", "batch/v1", "CronJob"),
    (
        "/apis/discovery.k8s.io/v1/endpointslices",
        "discovery.k8s.io/v1",
        "EndpointSlice",
    ),
];

struct Event {
    rv: u64,
    kind: &'static str,
    path: &'static str,
    object: Value,
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// (collection path, namespace/name) -> object.
    objects: BTreeMap<(&'static str, String), Value>,
    events: Vec<Event>,
}

struct Shared {
    store: Mutex<Store>,
    changed: Condvar,
    /// Off the network: listener closed, every connection cut.
    down: AtomicBool,
    /// Bumped on every outage so connections opened before it close.
    epoch: AtomicU64,
    requests: AtomicU64,
    /// How list requests are answered.
    misbehaviour: Mutex<Misbehaviour>,
}

/// How the server answers list requests, for tests of an API that does not play along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// As the real API does.
    None,
    /// Accepts the request and never answers (until the misbehaviour changes).
    Hang,
    /// Answers 200 with JSON that ends in the middle of an object.
    Garbage,
    /// Answers with a list holding an extra pod carrying an annotation of this many bytes.
    Huge(usize),
}

/// The server. Dropping it stops it.
pub struct KubeApi {
    pub port: u16,
    shared: Arc<Shared>,
    acceptor: Mutex<Option<thread::JoinHandle<()>>>,
}

fn key_of(obj: &Value) -> String {
    let m = &obj["metadata"];
    format!(
        "{}/{}",
        m["namespace"].as_str().unwrap_or(""),
        m["name"].as_str().unwrap_or("")
    )
}

fn resource(kind: &str) -> (&'static str, &'static str, &'static str) {
    *RESOURCES
        .iter()
        .find(|r| r.2 == kind)
        .unwrap_or_else(|| panic!("unknown kind {kind}"))
}

impl KubeApi {
    /// Starts on a free port of 127.0.0.1.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            changed: Condvar::new(),
            down: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            misbehaviour: Mutex::new(Misbehaviour::None),
        });
        let api = KubeApi {
            port,
            shared,
            acceptor: Mutex::new(None),
        };
        api.serve(listener);
        api
    }

    fn serve(&self, listener: TcpListener) {
        let shared = self.shared.clone();
        let h = thread::spawn(move || {
            for conn in listener.incoming() {
                if shared.down.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let shared = shared.clone();
                thread::spawn(move || {
                    let _ = handle(conn, &shared);
                });
            }
        });
        *self.acceptor.lock().expect("lock") = Some(h);
    }

    /// Adds or replaces an object (ADDED or MODIFIED); returns it with its resourceVersion.
    pub fn apply(&self, mut obj: Value) -> Value {
        let kind = obj["kind"].as_str().expect("kind").to_string();
        let (path, _, kind) = resource(&kind);
        let mut st = self.shared.store.lock().expect("lock");
        st.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        let key = (path, key_of(&obj));
        let ev = if st.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        st.objects.insert(key, obj.clone());
        let rv = st.rv;
        st.events.push(Event {
            rv,
            kind: ev,
            path,
            object: obj.clone(),
        });
        let _ = kind;
        self.shared.changed.notify_all();
        obj
    }

    /// Deletes an object (DELETED event with its last state).
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) {
        let (path, _, _) = resource(kind);
        let mut st = self.shared.store.lock().expect("lock");
        let Some(mut obj) = st.objects.remove(&(path, format!("{namespace}/{name}"))) else {
            return;
        };
        st.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        let rv = st.rv;
        st.events.push(Event {
            rv,
            kind: "DELETED",
            path,
            object: obj,
        });
        self.shared.changed.notify_all();
    }

    /// Takes the server off the network: the port refuses connections and open ones are cut.
    pub fn stop(&self) {
        self.shared.down.store(true, Ordering::SeqCst);
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        self.shared.changed.notify_all();
        // Wake the acceptor so it drops the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.acceptor.lock().expect("lock").take() {
            let _ = h.join();
        }
    }

    /// Brings it back on the same port, with everything that changed meanwhile.
    pub fn resume(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("rebind {}: {e}", self.port),
            }
        };
        self.shared.down.store(false, Ordering::SeqCst);
        self.serve(listener);
    }

    /// Changes how list requests are answered from now on.
    pub fn misbehave(&self, m: Misbehaviour) {
        *self.shared.misbehaviour.lock().expect("lock") = m;
    }

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Writes a kubeconfig pointing at this server; returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("kubeconfig-{}", self.port));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://127.0.0.1:{}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\ncurrent-context: test\nusers:\n- name: test\n  user:\n    token: test-token\n",
                self.port
            ),
        )
        .expect("write kubeconfig");
        path
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Request {
    path: String,
    query: BTreeMap<String, String>,
    metadata_only: bool,
}

fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut metadata_only = false;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if lower.starts_with("accept:") && lower.contains("as=partialobjectmetadata") {
            metadata_only = true;
        }
    }
    let (path, q) = target.split_once('?').unwrap_or((&target, ""));
    let query = q
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), decode(v)))
        .collect();
    Ok(Some(Request {
        path: path.to_string(),
        query,
        metadata_only,
    }))
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => out.push(v),
                    Err(_) => out.extend_from_slice(&b[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `spec.nodeName=X` (the only field selector sockscope uses); others match everything.
fn matches(obj: &Value, selector: Option<&String>) -> bool {
    let Some(sel) = selector else { return true };
    match sel.split_once('=') {
        Some(("spec.nodeName", node)) => obj["spec"]["nodeName"].as_str() == Some(node),
        _ => true,
    }
}

fn metadata_only(obj: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": obj["metadata"]})
}

fn handle(conn: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let epoch = shared.epoch.load(Ordering::SeqCst);
    conn.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    loop {
        if shared.epoch.load(Ordering::SeqCst) != epoch {
            let _ = w.shutdown(Shutdown::Both);
            return Ok(());
        }
        let req = match read_request(&mut r) {
            Ok(Some(req)) => req,
            Ok(None) => return Ok(()),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        shared.requests.fetch_add(1, Ordering::SeqCst);
        let Some(&(path, api_version, kind)) = RESOURCES.iter().find(|r| r.0 == req.path) else {
            let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": format!("the server could not find the requested resource ({})", req.path),
                "reason": "NotFound", "code": 404})
            .to_string();
            write!(
                w,
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )?;
            continue;
        };
        let selector = req.query.get("fieldSelector");
        let watch = req
            .query
            .get("watch")
            .is_some_and(|v| v == "true" || v == "1");
        if !watch {
            let mut mode = *shared.misbehaviour.lock().expect("lock");
            while mode == Misbehaviour::Hang && shared.epoch.load(Ordering::SeqCst) == epoch {
                thread::sleep(Duration::from_millis(50));
                mode = *shared.misbehaviour.lock().expect("lock");
            }
            if let Misbehaviour::Huge(n) = mode {
                // Streamed, not serialized: a 50 MB object is cheap to send, as a broken or
                // hostile API server would.
                let head = format!(
                    "{{\"kind\":\"{kind}List\",\"apiVersion\":\"{api_version}\",\"metadata\":{{\"resourceVersion\":\"1\"}},\"items\":[{{\"metadata\":{{\"name\":\"huge\",\"namespace\":\"default\",\"uid\":\"{}\",\"annotations\":{{\"huge\":\"",
                    objects::uid(999_999)
                );
                let tail = "\"}}}]}";
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{head}",
                    head.len() + n + tail.len()
                )?;
                let chunk = vec![b'x'; 1 << 20];
                let mut left = n;
                while left > 0 {
                    let k = left.min(chunk.len());
                    w.write_all(&chunk[..k])?;
                    left -= k;
                }
                w.write_all(tail.as_bytes())?;
                continue;
            }
            if mode == Misbehaviour::Garbage {
                let body = format!(
                    "{{\"kind\":\"{kind}List\",\"apiVersion\":\"{api_version}\",\"metadata\":{{\"resourceVersion\":\"1\"}},\"items\":[{{\"metadata\":{{\"name\":"
                );
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )?;
                continue;
            }
            // Pages of `limit` objects, `continue` being the offset of the next one.
            let limit: usize = req
                .query
                .get("limit")
                .and_then(|v| v.parse().ok())
                .filter(|l| *l > 0)
                .unwrap_or(usize::MAX);
            let offset: usize = req
                .query
                .get("continue")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let st = shared.store.lock().expect("lock");
            let selected: Vec<&Value> = st
                .objects
                .iter()
                .filter(|((p, _), o)| *p == path && matches(o, selector))
                .map(|(_, o)| o)
                .collect();
            let end = offset.saturating_add(limit).min(selected.len());
            let more = end < selected.len();
            let list_meta = if more {
                json!({"resourceVersion": st.rv.to_string(), "continue": end.to_string(),
                       "remainingItemCount": selected.len() - end})
            } else {
                json!({"resourceVersion": st.rv.to_string()})
            };
            let items: Vec<Value> = selected[offset.min(end)..end]
                .iter()
                .map(|o| {
                    if req.metadata_only {
                        metadata_only(o)
                    } else {
                        let mut o = (*o).clone();
                        if let Some(m) = o.as_object_mut() {
                            m.remove("kind");
                            m.remove("apiVersion");
                        }
                        o
                    }
                })
                .collect();
            let body = if req.metadata_only {
                json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                       "metadata": list_meta, "items": items})
            } else {
                json!({"kind": format!("{kind}List"), "apiVersion": api_version,
                       "metadata": list_meta, "items": items})
            }
            .to_string();
            drop(st);
            write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )?;
            continue;
        }
        // Watch: every event after resourceVersion, then new ones as they come, until the
        // timeout the client asked for or an outage.
        let mut from: u64 = req
            .query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let timeout = req
            .query
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(300u64);
        let deadline = Instant::now() + Duration::from_secs(timeout);
        write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )?;
        w.flush()?;
        loop {
            let lines: Vec<String> = {
                let mut st = shared.store.lock().expect("lock");
                while st.events.last().is_none_or(|e| e.rv <= from)
                    && shared.epoch.load(Ordering::SeqCst) == epoch
                    && Instant::now() < deadline
                {
                    st = shared
                        .changed
                        .wait_timeout(st, Duration::from_millis(200))
                        .expect("wait")
                        .0;
                }
                let lines = st
                    .events
                    .iter()
                    .filter(|e| e.rv > from && e.path == path && matches(&e.object, selector))
                    .map(|e| {
                        let object = if req.metadata_only {
                            metadata_only(&e.object)
                        } else {
                            e.object.clone()
                        };
                        json!({"type": e.kind, "object": object}).to_string()
                    })
                    .collect();
                from = st.rv.max(from);
                lines
            };
            if shared.epoch.load(Ordering::SeqCst) != epoch {
                let _ = w.shutdown(Shutdown::Both);
                return Ok(());
            }
            for line in lines {
                let chunk = format!("{line}\n");
                write!(w, "{:x}\r\n{chunk}\r\n", chunk.len())?;
            }
            w.flush()?;
            if Instant::now() >= deadline {
                write!(w, "0\r\n\r\n")?;
                w.flush()?;
                break;
            }
        }
    }
}

/// Kubernetes objects as the API serves them.
pub mod objects {
    use serde_json::{Value, json};

    /// A UID from a number, in the API's format.
    pub fn uid(n: u64) -> String {
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            n >> 32,
            (n >> 16) & 0xffff,
            n & 0xfff,
            (n >> 12) & 0xfff,
            n
        )
    }

    fn meta(namespace: Option<&str>, name: &str, uid: &str) -> Value {
        let mut m = json!({
            "name": name,
            "uid": uid,
            "creationTimestamp": "2026-11-22T00:00:00Z",
            "generation": 1,
        });
        if let Some(ns) = namespace {
            m["namespace"] = json!(ns);
        }
        m
    }

    /// A running pod. `owner` is its controller (kind, name); containers are (name, id).
    #[allow(clippy::too_many_arguments)]
    pub fn pod(
        namespace: &str,
        name: &str,
        uid: &str,
        node: &str,
        ip: &str,
        owner: Option<(&str, &str)>,
        template_hash: Option<&str>,
        containers: &[(&str, &str)],
    ) -> Value {
        let mut m = meta(Some(namespace), name, uid);
        let mut labels = json!({"app": name});
        if let Some(h) = template_hash {
            labels["pod-template-hash"] = json!(h);
        }
        m["labels"] = labels;
        if let Some((kind, oname)) = owner {
            let api = match kind {
                "Job" => "batch/v1",
                _ => "apps/v1",
            };
            m["ownerReferences"] = json!([{"apiVersion": api, "kind": kind, "name": oname,
                "uid": uid.replace('-', "").chars().rev().collect::<String>(),
                "controller": true, "blockOwnerDeletion": true}]);
        }
        m["managedFields"] = json!([{"manager": "kubelet", "operation": "Update", "apiVersion": "v1",
            "time": "2026-11-22T00:00:01Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:status": {"f:conditions": {}, "f:podIP": {}}}, "subresource": "status"}]);
        let specs: Vec<Value> = containers
            .iter()
            .map(|(n, _)| json!({"name": n, "image": format!("registry.example/{n}:1.0"),
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                "env": [{"name": "LOG_LEVEL", "value": "info"}],
                "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent"}))
            .collect();
        let statuses: Vec<Value> = containers
            .iter()
            .map(|(n, id)| {
                json!({"name": n, "ready": true, "restartCount": 0, "started": true,
                "image": format!("registry.example/{n}:1.0"),
                "imageID": format!("registry.example/{n}@sha256:{}", "ab".repeat(32)),
                "containerID": format!("containerd://{id}"),
                "state": {"running": {"startedAt": "2026-11-22T00:00:02Z"}}})
            })
            .collect();
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": m,
            "spec": {"nodeName": node, "containers": specs, "restartPolicy": "Always",
                     "serviceAccountName": "default", "dnsPolicy": "ClusterFirst",
                     "volumes": [{"name": "kube-api-access", "projected": {"sources": []}}]},
            "status": {"phase": "Running", "hostIP": "192.0.2.10", "hostIPs": [{"ip": "192.0.2.10"}],
                       "podIP": ip, "podIPs": [{"ip": ip}], "qosClass": "Burstable",
                       "startTime": "2026-11-22T00:00:00Z",
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": statuses}
        })
    }

    /// A ClusterIP Service.
    pub fn service(namespace: &str, name: &str, uid: &str, cluster_ip: &str, port: u16) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service", "metadata": meta(Some(namespace), name, uid),
            "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                     "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                     "ports": [{"name": "tcp", "port": port, "protocol": "TCP", "targetPort": port}],
                     "selector": {"app": name}, "sessionAffinity": "None"},
            "status": {"loadBalancer": {}}
        })
    }

    /// A node with an InternalIP.
    pub fn node(name: &str, uid: &str, ip: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Node", "metadata": meta(None, name, uid),
            "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
                       "nodeInfo": {"kubeletVersion": "v1.33.1", "containerRuntimeVersion": "containerd://2.1.0",
                                    "kernelVersion": "6.18.0", "osImage": "Debian GNU/Linux 12"}}
        })
    }

    /// A ReplicaSet owned by Deployment `deployment`.
    pub fn replicaset(namespace: &str, name: &str, uid: &str, deployment: &str) -> Value {
        let mut m = meta(Some(namespace), name, uid);
        m["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment,
            "uid": format!("{uid}-d"), "controller": true, "blockOwnerDeletion": true}]);
        m["annotations"] = json!({"deployment.kubernetes.io/revision": "1"});
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": m,
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": deployment}}},
               "status": {"replicas": 1, "readyReplicas": 1}})
    }

    fn labels(l: &[(&str, &str)]) -> Value {
        Value::Object(l.iter().map(|(k, v)| (k.to_string(), json!(v))).collect())
    }

    /// Replaces a pod's labels.
    pub fn with_labels(mut pod: Value, l: &[(&str, &str)]) -> Value {
        pod["metadata"]["labels"] = labels(l);
        pod
    }

    /// A pod template with these labels and one container with these named TCP ports.
    fn template(l: &[(&str, &str)], ports: &[(&str, u16)]) -> Value {
        let ports: Vec<Value> = ports
            .iter()
            .map(|(n, p)| json!({"name": n, "containerPort": p, "protocol": "TCP"}))
            .collect();
        json!({"metadata": {"labels": labels(l)},
               "spec": {"containers": [{"name": "main", "image": "registry.example/main:1.0", "ports": ports}]}})
    }

    /// A controller (`Deployment`, `StatefulSet`, `DaemonSet`) selecting pods by `selector`,
    /// whose template carries `selector` plus `extra` labels.
    pub fn controller(
        kind: &str,
        namespace: &str,
        name: &str,
        uid: &str,
        selector: &[(&str, &str)],
        extra: &[(&str, &str)],
        ports: &[(&str, u16)],
    ) -> Value {
        let all: Vec<(&str, &str)> = selector.iter().chain(extra).copied().collect();
        let mut spec = json!({"selector": {"matchLabels": labels(selector)},
                              "template": template(&all, ports)});
        if kind == "StatefulSet" {
            spec["serviceName"] = json!(name);
        }
        json!({"apiVersion": "apps/v1", "kind": kind, "metadata": meta(Some(namespace), name, uid),
               "spec": spec})
    }

    /// A CronJob whose job template's pods carry `l`.
    pub fn cronjob(namespace: &str, name: &str, uid: &str, l: &[(&str, &str)]) -> Value {
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta(Some(namespace), name, uid),
               "spec": {"schedule": "0 * * * *",
                        "jobTemplate": {"spec": {"template": {
                            "metadata": {"labels": labels(l)},
                            "spec": {"restartPolicy": "OnFailure",
                                     "containers": [{"name": "main", "image": "registry.example/main:1.0"}]}}}}}})
    }

    /// A namespace (the API server adds kubernetes.io/metadata.name).
    pub fn namespace(name: &str, uid: &str, l: &[(&str, &str)]) -> Value {
        let mut m = meta(None, name, uid);
        let mut all = labels(l);
        all["kubernetes.io/metadata.name"] = json!(name);
        m["labels"] = all;
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": m, "status": {"phase": "Active"}})
    }

    /// A ClusterIP Service with its own labels, selector and ports (name, port, protocol,
    /// targetPort as a number or a name).
    pub fn service_with(
        namespace: &str,
        name: &str,
        uid: &str,
        cluster_ip: &str,
        own: &[(&str, &str)],
        selector: &[(&str, &str)],
        ports: &[(&str, u16, &str, Value)],
    ) -> Value {
        let mut m = meta(Some(namespace), name, uid);
        m["labels"] = labels(own);
        let ports: Vec<Value> = ports
            .iter()
            .map(|(n, p, proto, t)| json!({"name": n, "port": p, "protocol": proto, "targetPort": t}))
            .collect();
        json!({
            "apiVersion": "v1", "kind": "Service", "metadata": m,
            "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                     "ports": ports, "selector": labels(selector)},
            "status": {"loadBalancer": {}}
        })
    }

    /// An EndpointSlice of Service `service`: its addresses on one named port.
    pub fn endpointslice(
        namespace: &str,
        service: &str,
        uid: &str,
        addresses: &[&str],
        (port_name, port): (&str, u16),
    ) -> Value {
        let mut m = meta(Some(namespace), service, uid);
        m["labels"] = json!({"kubernetes.io/service-name": service});
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": m,
               "addressType": "IPv4",
               "endpoints": [{"addresses": addresses, "conditions": {"ready": true}}],
               "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]})
    }

    /// A Job owned by CronJob `cronjob`.
    pub fn job(namespace: &str, name: &str, uid: &str, cronjob: &str) -> Value {
        let mut m = meta(Some(namespace), name, uid);
        m["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "CronJob", "name": cronjob,
            "uid": format!("{uid}-c"), "controller": true, "blockOwnerDeletion": true}]);
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": m,
               "spec": {"completions": 1, "parallelism": 1}, "status": {"active": 1}})
    }
}
