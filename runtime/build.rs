// Sets `cfg(skiff_root)` when the tests are built by root: tests that need root
// (mounts, ownership, cgroups, seccomp) carry
// `#[cfg_attr(not(skiff_root), ignore = "needs root: ...")]`, so a non-root
// `cargo test` runs everything else and lists those as ignored, with the reason.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(skiff_root)");
    println!("cargo::rerun-if-changed=build.rs");
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|u| u.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false);
    if root {
        println!("cargo::rustc-cfg=skiff_root");
    }
}
