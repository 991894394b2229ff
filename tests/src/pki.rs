//! A throwaway PKI (openssl) and web config files for the endpoint tests.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// A directory removed on drop.
pub struct Dir(pub PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `cmd` with `sh -c` in `dir`; fails the test with its stderr.
pub fn sh(cmd: &str, dir: &Path) {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .current_dir(dir)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.crt`), a server certificate for 127.0.0.1 signed by it (`tls.crt`, `tls.key`), a
/// client certificate signed by it (`client.crt`, `client.key`), and an unrelated CA
/// (`other.crt`).
pub fn pki(name: &str) -> Dir {
    let dir = std::env::temp_dir().join(format!(
        "sockscope-web-{name}-{}-{}",
        std::process::id(),
        crate::unique()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    sh(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
           -subj /CN=sockscope-test-ca -keyout ca.key -out ca.crt 2>/dev/null && \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
           -subj /CN=127.0.0.1 -keyout tls.key -out tls.csr 2>/dev/null && \
         printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > ext.cnf && \
         openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
           -extfile ext.cnf -out tls.crt 2>/dev/null && \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
           -subj /CN=sockscope-client -keyout client.key -out client.csr 2>/dev/null && \
         printf 'extendedKeyUsage=clientAuth\\n' > client.cnf && \
         openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
           -extfile client.cnf -out client.crt 2>/dev/null && \
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
           -subj /CN=other-ca -keyout other.key -out other.crt 2>/dev/null",
        &dir,
    );
    Dir(dir)
}

/// `web.yaml` in `dir`: basic auth user `prom` with `password` (bcrypt cost 6), and TLS from
/// [`pki`]'s files when `tls`.
pub fn web_config(dir: &Path, tls: bool, password: &str) -> PathBuf {
    let hash = bcrypt_hash(password, 6);
    let path = dir.join("web.yaml");
    let tls = if tls {
        format!(
            "tls_server_config:\n  cert_file: {d}/tls.crt\n  key_file: {d}/tls.key\n",
            d = dir.display()
        )
    } else {
        String::new()
    };
    std::fs::write(&path, format!("{tls}basic_auth_users:\n  prom: {hash}\n"))
        .expect("write web config");
    path
}

/// A bcrypt hash of `password` at `cost`.
pub fn bcrypt_hash(password: &str, cost: u32) -> String {
    bcrypt::hash(password, cost).expect("bcrypt")
}
