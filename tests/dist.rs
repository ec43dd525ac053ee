//! Shipping: the static binary and checksums of `scripts/dist`, the action's install script
//! against a folder laid out like a GitHub release, and the file list of `cargo package`.
//!
//! The dist tests build with the `dist-check` profile (the dev profile's speed, the release's
//! static linking and packing): a release build with LTO would take a quarter of an hour here.
//! Its target folder is `target/<triple>/dist-check`, apart from the suite's own. Being a whole
//! build of kiln and its dependencies, they are `#[ignore]`d in the parallel suite, where they
//! would load both cores under the emulator tests' timings, and scripts/test.sh runs them after
//! it: `cargo test --test integration -- --ignored dist::`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::support::repo_root;

fn host_target() -> String {
    let output = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc names its host")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `scripts/dist --profile dist-check` once for the tests of this module: its output folder.
fn dist() -> &'static Path {
    static DIST: OnceLock<PathBuf> = OnceLock::new();
    DIST.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dist-check");
        let _ = std::fs::remove_dir_all(&out);
        let output = Command::new(repo_root().join("scripts/dist"))
            .args(["--profile", "dist-check", "--out"])
            .arg(&out)
            .current_dir(repo_root())
            .env_remove("RUSTFLAGS")
            .output()
            .expect("run scripts/dist");
        assert!(
            output.status.success(),
            "scripts/dist failed:\n{}",
            text(&output)
        );
        out
    })
}

fn unpack(archive: &Path, into: &Path) -> PathBuf {
    std::fs::create_dir_all(into).expect("mkdir");
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .status()
        .expect("tar");
    assert!(status.success());
    into.join("kiln")
}

#[test]
#[ignore = "builds kiln statically (minutes): scripts/test.sh runs it after the suite"]
fn dist_builds_a_static_binary_with_checksums_and_a_full_version() {
    let dist = dist();
    let target = host_target();
    let archive = dist.join(format!("kiln-{target}.tar.gz"));
    assert!(archive.exists(), "no {}", archive.display());

    // SHA256SUMS verifies, and names the archive.
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).expect("SHA256SUMS");
    assert!(sums.contains(&format!("  kiln-{target}.tar.gz")), "{sums}");
    let check = Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(dist)
        .output()
        .expect("sha256sum");
    assert!(check.status.success(), "{}", text(&check));

    // The archive holds exactly `kiln`.
    let list = Command::new("tar")
        .arg("-tzf")
        .arg(&archive)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "kiln");

    let dir = tempfile::tempdir().expect("tempdir");
    let kiln = unpack(&archive, dir.path());

    // Static: `file` says so and `ldd` finds nothing to load.
    let file = Command::new("file")
        .arg("-b")
        .arg(&kiln)
        .output()
        .expect("file");
    let description = String::from_utf8_lossy(&file.stdout);
    assert!(
        description.contains("statically linked") || description.contains("static-pie linked"),
        "not static: {description}"
    );
    let ldd = Command::new("ldd").arg(&kiln).output().expect("ldd");
    let ldd_text = text(&ldd);
    assert!(
        ldd_text.contains("not a dynamic executable") || ldd_text.contains("statically linked"),
        "ldd finds libraries: {ldd_text}"
    );

    // It runs with an empty environment, from an empty folder.
    let empty = tempfile::tempdir().expect("tempdir");
    let version = Command::new(&kiln)
        .arg("--version")
        .env_clear()
        .current_dir(empty.path())
        .output()
        .expect("kiln --version");
    assert!(version.status.success(), "{}", text(&version));
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let commit = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(repo_root())
        .output()
        .expect("git rev-parse");
    let commit = String::from_utf8_lossy(&commit.stdout).trim().to_owned();
    assert_eq!(
        version,
        format!(
            "kiln {} (commit {}, {target})",
            env!("CARGO_PKG_VERSION"),
            &commit[..12]
        )
    );

    let recipes = repo_root().join("recipes");
    let validate = Command::new(&kiln)
        .arg("validate")
        .arg(recipes.join("rudder-dataplane.yaml"))
        .env_clear()
        .env("KILN_STATE_DIR", empty.path().join(".kiln"))
        .current_dir(empty.path())
        .output()
        .expect("kiln validate");
    assert!(validate.status.success(), "{}", text(&validate));
    assert!(
        text(&validate).contains("fingerprint"),
        "{}",
        text(&validate)
    );
}

/// A folder laid out like GitHub's release downloads: `<base>/v<version>/<asset>`.
fn release_folder(root: &Path) -> (String, PathBuf) {
    let version = env!("CARGO_PKG_VERSION");
    let assets = root.join("releases/download").join(format!("v{version}"));
    std::fs::create_dir_all(&assets).expect("mkdir");
    for entry in std::fs::read_dir(dist()).expect("dist") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), assets.join(entry.file_name())).expect("copy");
    }
    (
        format!("file://{}", root.join("releases/download").display()),
        assets,
    )
}

fn install(base_url: &str, dest: &Path) -> Output {
    Command::new(repo_root().join("scripts/install-kiln"))
        .args([
            "--version",
            env!("CARGO_PKG_VERSION"),
            "--base-url",
            base_url,
            "--dest",
        ])
        .arg(dest)
        .output()
        .expect("run scripts/install-kiln")
}

#[test]
#[ignore = "uses scripts/dist's build (minutes): scripts/test.sh runs it after the suite"]
fn the_install_script_verifies_a_release_folder() {
    let root = tempfile::tempdir().expect("tempdir");
    let (base_url, assets) = release_folder(root.path());
    let target = host_target();

    // Installs, and the binary is the release's.
    let dest = root.path().join("tool-cache");
    let ok = install(&base_url, &dest);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("matches SHA256SUMS"), "{}", text(&ok));
    let version = Command::new(dest.join("kiln"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout)
        .starts_with(&format!("kiln {} ", env!("CARGO_PKG_VERSION"))));

    // Again from the cache: nothing downloaded, still checked.
    std::fs::remove_dir_all(root.path().join("releases")).expect("rm");
    let cached = install(&base_url, &dest);
    assert!(cached.status.success(), "{}", text(&cached));
    assert!(!text(&cached).contains("downloading"), "{}", text(&cached));

    // An archive whose bytes are not the listed ones is refused and removed.
    let (base_url, assets_again) = release_folder(root.path());
    assert_eq!(assets, assets_again);
    let archive = assets.join(format!("kiln-{target}.tar.gz"));
    let mut bytes = std::fs::read(&archive).expect("read archive");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&archive, bytes).expect("tamper");
    let dest = root.path().join("tampered");
    let refused = install(&base_url, &dest);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains("refused"), "{}", text(&refused));
    assert!(!dest.join("kiln").exists());

    // A SHA256SUMS that does not list the archive is refused too.
    std::fs::write(assets.join("SHA256SUMS"), "00  kiln-other.tar.gz\n").expect("write");
    let dest = root.path().join("unlisted");
    let unlisted = install(&base_url, &dest);
    assert!(!unlisted.status.success(), "{}", text(&unlisted));
    assert!(text(&unlisted).contains("lists no"), "{}", text(&unlisted));
}

#[test]
fn cargo_package_ships_the_sources_and_nothing_of_the_work_tree() {
    let output = Command::new(env!("CARGO"))
        .args(["package", "--list", "--allow-dirty", "--offline"])
        .current_dir(repo_root())
        .output()
        .expect("cargo package --list");
    assert!(output.status.success(), "{}", text(&output));
    let list = String::from_utf8_lossy(&output.stdout);
    let files: Vec<&str> = list.lines().collect();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "build.rs",
        "src/main.rs",
        "src/lib.rs",
        "schema/recipe.schema.json",
        "schema/fragment.schema.json",
    ] {
        assert!(files.contains(&needed), "{needed} is missing from:\n{list}");
    }
    let unwanted: Vec<&&str> = files
        .iter()
        .filter(|f| {
            [
                ".emulator/",
                ".kiln/",
                ".tools/",
                "target/",
                "tests/",
                "scripts/",
                "docs/",
                ".github/",
                "__pycache__",
            ]
            .iter()
            .any(|p| f.starts_with(p) || f.contains(&format!("/{p}")))
                || f.ends_with(".pyc")
                || f.ends_with(".log")
        })
        .collect();
    assert!(unwanted.is_empty(), "cargo package would ship {unwanted:?}");
    assert!(
        files.len() < 150,
        "{} files: more than the sources?",
        files.len()
    );
}
