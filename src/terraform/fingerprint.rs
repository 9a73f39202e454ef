//! A fingerprint of a root module's configuration: the terraform version and
//! every configuration file of the root module and of the modules `init`
//! installed (`.terraform/modules/modules.json`), so that what is derived
//! from the configuration alone (dependency edges, output references) can be
//! reused until a file changes.

use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::rundir::OVERRIDE_FILE;

/// `sha256` (hex) over the terraform version and the configuration files
/// (`*.tf`, `*.tf.json`) of `root` and of every installed module, by
/// relative path. `None` when a file cannot be read (then nothing is reused).
pub fn config_fingerprint(root: &Path, tf_data_dir: &Path, tf_version: &str) -> Option<String> {
    let mut h = Sha256::new();
    h.update(b"stategraph config fingerprint 1\0");
    h.update(tf_version.as_bytes());
    h.update(b"\0");
    hash_dir(&mut h, root, ".")?;
    let modules_json = tf_data_dir.join("modules").join("modules.json");
    if let Ok(bytes) = fs::read(&modules_json) {
        h.update(b"modules.json\0");
        h.update(&bytes);
        let parsed: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let mut dirs: Vec<&str> = parsed["Modules"]
            .as_array()?
            .iter()
            .filter_map(|m| m["Dir"].as_str())
            .collect();
        dirs.sort_unstable();
        dirs.dedup();
        for dir in dirs {
            if dir != "." {
                hash_dir(&mut h, &root.join(dir), dir)?;
            }
        }
    }
    Some(
        h.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )
}

fn hash_dir(h: &mut Sha256, dir: &Path, label: &str) -> Option<()> {
    let mut files: Vec<(String, std::path::PathBuf)> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let config = name.ends_with(".tf") || name.ends_with(".tf.json");
            (config && name != OVERRIDE_FILE && e.path().is_file()).then(|| (name, e.path()))
        })
        .collect();
    files.sort();
    for (name, path) in files {
        let bytes = fs::read(&path).ok()?;
        h.update(format!("{label}/{name}\0{}\0", bytes.len()).as_bytes());
        h.update(&bytes);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_with_any_configuration_file_and_only_then() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join(".terraform");
        fs::create_dir_all(data.join("modules")).unwrap();
        fs::create_dir_all(root.path().join("modules/m")).unwrap();
        fs::write(
            root.path().join("main.tf"),
            "resource \"terraform_data\" \"a\" {}",
        )
        .unwrap();
        fs::write(root.path().join("notes.txt"), "x").unwrap();
        fs::write(root.path().join("modules/m/m.tf"), "variable \"v\" {}").unwrap();
        fs::write(
            data.join("modules/modules.json"),
            r#"{"Modules":[{"Key":"","Source":"","Dir":"."},{"Key":"m","Source":"./modules/m","Dir":"modules/m"}]}"#,
        )
        .unwrap();
        let fp = || config_fingerprint(root.path(), &data, "1.11.4").unwrap();
        let first = fp();
        assert_eq!(first, fp());
        fs::write(root.path().join("notes.txt"), "y").unwrap();
        fs::write(root.path().join(OVERRIDE_FILE), "terraform {}").unwrap();
        assert_eq!(first, fp(), "non-configuration files do not count");
        fs::write(root.path().join("modules/m/m.tf"), "variable \"w\" {}").unwrap();
        let second = fp();
        assert_ne!(first, second, "a module file changed");
        fs::write(root.path().join("extra.tf.json"), "{}").unwrap();
        assert_ne!(second, fp(), "a new root file");
        assert_ne!(
            fp(),
            config_fingerprint(root.path(), &data, "1.12.0").unwrap(),
            "another terraform version"
        );
    }
}
