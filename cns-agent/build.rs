//! Builds the kernel programs (`cns-ebpf`) with nightly through aya-build and leaves the
//! objects in OUT_DIR (`cns`, and the bench's reference floors `cns-floor`), where
//! `datapath/mod.rs` embeds them. `AYA_BUILD_SKIP=1` skips it (fast
//! `cargo check`/`clippy`); the agent then embeds an empty object and says so at load time.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let skip =
        std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        let out = std::env::var("OUT_DIR").context("OUT_DIR not set")?;
        for object in ["cns", "cns-floor"] {
            std::fs::write(format!("{out}/{object}"), b"")
                .context("writing the placeholder objects")?;
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("cns-agent has no parent directory"))?
        .join("cns-ebpf");
    let root = root
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {root:?}"))?;
    aya_build::build_ebpf(
        [Package {
            name: "cns-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::Custom("nightly"),
    )
}
