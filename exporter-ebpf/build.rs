use which::which;

/// Rebuild when bpf-linker changes: the eBPF object depends on it but cargo cannot see that.
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run scripts/setup.sh"),
    }
}
