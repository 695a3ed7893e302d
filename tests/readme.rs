//! Every Rust block of the README and of `docs/*.md` is a whole program, as
//! a user pastes it into a new crate's `src/main.rs`: this builds each one
//! as a binary of a small crate that depends on this one by path, and runs
//! it. (`cargo test --doc` also runs the README's blocks as doctests, through
//! `include_str!` in `src/lib.rs`; a doctest alone would not catch a block
//! that relies on rustdoc wrapping it in `fn main`, or on a `use` it adds.)
//!
//! Info strings: `rust` blocks are built and run; `rust,no_run` blocks are
//! built only; `rust,ignore` blocks that name `redis` need a server, so they
//! are built (not run) when this test has the `redis` feature.
//!
//! The crate is generated under `<target>/readme-blocks`, builds into the
//! same target directory as this test (so the dependencies are compiled
//! once), and starts from this repository's `Cargo.lock`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One fenced Rust block.
struct Block {
    /// `readme_42`: the file and the line of the opening fence.
    name: String,
    code: String,
    run: bool,
}

fn blocks_of(path: &Path, stem: &str) -> Vec<Block> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut blocks = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```rust") else {
            continue;
        };
        let code: Vec<&str> = lines
            .by_ref()
            .map(|(_, line)| line)
            .take_while(|line| !line.starts_with("```"))
            .collect();
        let code = code.join("\n") + "\n";
        let (run, build) = match info {
            "" => (true, true),
            ",no_run" => (false, true),
            ",ignore" => (false, cfg!(feature = "redis") && code.contains("redis")),
            other => panic!(
                "{}:{}: unexpected info string rust{other}",
                path.display(),
                n + 1
            ),
        };
        if build {
            blocks.push(Block {
                name: format!("{stem}_{}", n + 1),
                code,
                run,
            });
        }
    }
    blocks
}

fn all_blocks() -> Vec<Block> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut blocks = blocks_of(&root.join("README.md"), "readme");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .map(|dir| dir.map(|entry| entry.unwrap().path()).collect())
        .unwrap_or_default();
    pages.retain(|page| page.extension().is_some_and(|e| e == "md"));
    pages.sort();
    for page in pages {
        let stem = page
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .replace('-', "_");
        blocks.extend(blocks_of(&page, &stem));
    }
    blocks
}

/// `<target>` and the profile directory, from this test's own path
/// (`<target>/<profile>/deps/readme-…`).
fn target_and_profile() -> (PathBuf, String) {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let profile = profile_dir.file_name().unwrap().to_string_lossy();
    let profile = if profile == "debug" { "dev" } else { &profile }.to_string();
    (profile_dir.parent().unwrap().to_path_buf(), profile)
}

fn features() -> Vec<&'static str> {
    [
        ("tracing", cfg!(feature = "tracing")),
        ("metrics", cfg!(feature = "metrics")),
        ("redis", cfg!(feature = "redis")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect()
}

/// Writes the crate: one binary per block, each file exactly the block.
fn write_crate(dir: &Path, blocks: &[Block]) {
    let root = env!("CARGO_MANIFEST_DIR");
    let bins = dir.join("src/bin");
    let _ = std::fs::remove_dir_all(&bins);
    std::fs::create_dir_all(&bins).unwrap();
    let manifest = format!(
        "[package]\nname = \"readme-blocks\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\
         publish = false\n\n[dependencies]\n\
         sync-singleflight = {{ path = {root:?}, features = {:?} }}\n\n\
         # Its own workspace, though it sits inside this repository's target/.\n[workspace]\n",
        features()
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::copy(Path::new(root).join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    for block in blocks {
        std::fs::write(bins.join(format!("{}.rs", block.name)), &block.code).unwrap();
    }
}

#[test]
fn every_rust_block_in_the_readme_and_docs_is_a_program_that_builds_and_runs() {
    let blocks = all_blocks();
    assert!(
        blocks
            .iter()
            .any(|b| b.name.starts_with("readme_") && b.run),
        "the README has no runnable Rust block"
    );
    let (target, profile) = target_and_profile();
    let dir = target.join("readme-blocks");
    write_crate(&dir, &blocks);
    let built = Command::new(env!("CARGO"))
        .current_dir(&dir)
        .args([
            "build",
            "--quiet",
            "--bins",
            "--profile",
            &profile,
            "--target-dir",
        ])
        .arg(&target)
        .status()
        .unwrap();
    assert!(
        built.success(),
        "a block does not build as a standalone main.rs (the binary's name is its file and line)"
    );
    let bin_dir = target.join(if profile == "dev" { "debug" } else { &profile });
    for block in blocks.iter().filter(|b| b.run) {
        let out = Command::new(bin_dir.join(&block.name)).output().unwrap();
        assert!(
            out.status.success(),
            "{} failed:\n{}",
            block.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
