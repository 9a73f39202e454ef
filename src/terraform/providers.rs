//! One provider process for each terraform plan, where terraform would
//! start three.
//!
//! Measured with terraform 1.11.4 and hashicorp/aws 5.100.0 (2 cores): one
//! `terraform plan` starts the provider once to read its schema, once for
//! the validate walk and once for the plan walk, and before that hashes its
//! 707 MB package against the lock file (0.67 s); the first call to a
//! fresh process (its schema) takes 1.5 s, 0.27 s in a warm one. A plan of
//! one resource with nothing to do costs 6.4 s, 5.4 s served by one process
//! started here and handed to terraform with `TF_REATTACH_PROVIDERS` (the
//! mechanism terraform's provider test harness uses). Most of the rest is
//! the provider's ~2 s `ValidateProviderConfig`, which terraform calls in
//! both walks whatever process serves it.
//!
//! Only where that is the same run: a plan configures each provider
//! configuration once (the validate walk does not configure), so one process
//! serves a provider with a single configuration; a provider configured
//! twice in one process may refuse (hashicorp/aws does: "unable to add
//! custom RootCAs HTTPClient"). So never for `apply` (plan and apply walks),
//! `plan -destroy` (a refresh walk first), a provider with an aliased or
//! module-level `provider` block, OpenTofu, a user who debugs providers
//! (`TF_LOG*`, `TF_REATTACH_PROVIDERS`, `dev_overrides`), or
//! `STATEGRAPH_SHARED_PROVIDERS=0`.
//!
//! Terraform skips its checks of a provider it does not start, so they are
//! made here first, or the provider is left to terraform: the lock file
//! selects a version, every version constraint of the configuration allows
//! it, and the installed package matches one of the lock file's `h1:`
//! hashes (computed as terraform does, kept per file identity so that an
//! unchanged package is not hashed again). The process listens in the
//! run's private directory (0700; one that listens anywhere else is left
//! to terraform, since nothing like terraform's TLS guards the socket), dies
//! with stategraph (no process is left behind), and is killed when
//! terraform exits.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use hcl_edit::expr::Expression;
use hcl_edit::structure::Body;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::config::{Config, ProviderDeclKind};
use crate::ui::Ui;

/// Terraform's plugin handshake cookie (`plugin.Handshake` in terraform).
const MAGIC_COOKIE_KEY: &str = "TF_PLUGIN_MAGIC_COOKIE";
const MAGIC_COOKIE: &str = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";
/// How long a provider may take to say where it listens (go-plugin's own
/// start timeout is a minute).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// The provider's own output kept for a message if it dies (its tail).
const KEEP_STDERR: usize = 64 * 1024;

/// The environment variables that make terraform (or its providers) behave
/// differently from what one process here would: where one is set, the
/// providers are left to terraform (read by `crate::settings`).
pub const DEBUGGING: &[&str] = &[
    "TF_REATTACH_PROVIDERS",
    "TF_LOG",
    "TF_LOG_PROVIDER",
    "TF_LOG_CORE",
    "TF_LOG_PATH",
];

/// The providers one process each serves for a plan of this run.
#[derive(Debug, Clone)]
pub struct Sharing {
    packages: Vec<Package>,
    /// Where the processes listen (a directory of the private run dir).
    sockets: PathBuf,
    /// Where package hashes are kept (see [`Where::cache`]).
    cache: Option<PathBuf>,
}

/// One installed provider package, checked against the lock file.
#[derive(Debug, Clone)]
struct Package {
    /// `registry.terraform.io/hashicorp/aws`.
    address: String,
    version: String,
    exe: PathBuf,
    /// The package's directory and the lock file's `h1:` hashes, checked
    /// before its first start (not before: a run that starts no plan
    /// hashes nothing).
    dir: PathBuf,
    h1: Vec<String>,
    /// Whether the package matched one of them, once checked.
    verified: std::sync::Arc<std::sync::OnceLock<bool>>,
}

impl Package {
    /// Whether the installed package is the one the lock file lists
    /// (always, where it lists no hash: terraform checks none then).
    async fn verified(&self, cache: Option<PathBuf>) -> bool {
        if let Some(v) = self.verified.get() {
            return *v;
        }
        let (dir, h1, all) = (self.dir.clone(), self.h1.clone(), self.verified.clone());
        // Hashing the package reads hundreds of MB: off the async threads.
        tokio::task::spawn_blocking(move || {
            *all.get_or_init(|| {
                h1.is_empty() || package_hash(&dir, cache.as_deref()).is_ok_and(|h| h1.contains(&h))
            })
        })
        .await
        .unwrap_or(false)
    }
}

/// Where a run's terraform finds its files.
pub struct Where<'a> {
    /// The root module's directory (its `.terraform.lock.hcl`).
    pub root: &'a Path,
    /// The data dir terraform runs with (its `providers/`).
    pub data_dir: &'a Path,
    /// Where the processes listen: created 0700 when first used.
    pub sockets: PathBuf,
    /// Where package hashes are kept by file identity (`None`: hashed each run).
    pub cache: Option<&'a Path>,
}

impl Sharing {
    /// The providers of `config` one process each may serve, checked as
    /// terraform checks them (the package's hash when it is first started);
    /// `None` when there are none (see the module docs for when; the
    /// environment is `crate::settings`' `shared_providers`).
    pub fn of(config: &Config, at: Where<'_>) -> Option<Sharing> {
        let locks = locks(&std::fs::read_to_string(at.root.join(".terraform.lock.hcl")).ok()?)?;
        let addresses = addresses(config)?;
        let mut packages = Vec::new();
        for (address, lock) in &locks {
            if !single_configuration(config, &addresses, address)
                || !allowed(config, &addresses, address, &lock.version)
            {
                continue;
            }
            let Some(dir) = package_dir(at.data_dir, address, &lock.version) else {
                continue;
            };
            let Some(exe) = executable(&dir, address) else {
                continue;
            };
            let h1: Vec<String> = lock
                .hashes
                .iter()
                .filter(|h| h.starts_with("h1:"))
                .cloned()
                .collect();
            // Hashes listed, none of them `h1:`: nothing to check a
            // directory against (terraform refuses it then).
            if h1.is_empty() && !lock.hashes.is_empty() {
                continue;
            }
            packages.push(Package {
                address: address.clone(),
                version: lock.version.clone(),
                exe,
                dir,
                h1,
                verified: Default::default(),
            });
        }
        (!packages.is_empty()).then_some(Sharing {
            packages,
            sockets: at.sockets,
            cache: at.cache.map(Path::to_path_buf),
        })
    }

    /// Starts one process per provider in `cwd` with terraform's
    /// environment (`env` applied to ours); those that fail to start are
    /// left to terraform.
    pub(super) async fn serve(&self, cwd: &Path, env: &[(OsString, Option<OsString>)]) -> Served {
        let mut served = Served::default();
        if std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.sockets)
            .is_err()
        {
            return served;
        }
        let starts = self.packages.iter().map(|p| async move {
            match p.verified(self.cache.clone()).await {
                true => start(p, cwd, env, &self.sockets).await,
                false => None,
            }
        });
        served.processes = futures_util::future::join_all(starts)
            .await
            .into_iter()
            .flatten()
            .collect();
        served
    }
}

/// Whether terraform's command `args`, with the `env` an invocation sets,
/// configures each provider once: `plan`, but not `plan -destroy` (the
/// user's own `TF_CLI_ARGS*` are `crate::settings`' to check).
pub(super) fn configures_once(args: &[OsString], env: &[(OsString, Option<OsString>)]) -> bool {
    let destroy = |a: &str| {
        a.split_whitespace()
            .any(|w| w == "-destroy" || w.starts_with("-destroy="))
    };
    args.first().is_some_and(|a| a == "plan")
        && !args.iter().any(|a| destroy(&a.to_string_lossy()))
        && !env.iter().any(|(k, v)| {
            k.to_string_lossy().starts_with("TF_CLI_ARGS")
                && v.as_ref().is_some_and(|v| destroy(&v.to_string_lossy()))
        })
}

/// The processes serving one terraform command.
#[derive(Default)]
pub(super) struct Served {
    processes: Vec<Process>,
}

struct Process {
    address: String,
    version: String,
    child: tokio::process::Child,
    reattach: serde_json::Value,
    socket: PathBuf,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
}

impl Served {
    /// `TF_REATTACH_PROVIDERS` for terraform, and what it names
    /// (`hashicorp/aws 5.100.0, ...`); `None` when nothing was started.
    pub(super) fn reattach(&self) -> Option<(String, String)> {
        if self.processes.is_empty() {
            return None;
        }
        let map: serde_json::Map<String, serde_json::Value> = self
            .processes
            .iter()
            .map(|p| (p.address.clone(), p.reattach.clone()))
            .collect();
        let what = self
            .processes
            .iter()
            .map(|p| {
                let short = p
                    .address
                    .strip_prefix("registry.terraform.io/")
                    .unwrap_or(&p.address);
                format!("{short} {}", p.version)
            })
            .collect::<Vec<_>>()
            .join(", ");
        Some((serde_json::Value::Object(map).to_string(), what))
    }

    /// Ends the processes now that terraform exited; a process that ended
    /// before (it crashed) has what it printed shown.
    pub(super) async fn stop(self, ui: Ui) {
        for mut p in self.processes {
            let crashed = matches!(p.child.try_wait(), Ok(Some(_)));
            let _ = p.child.start_kill();
            let _ = p.child.wait().await;
            // A process it started may still hold the pipe: not waited for long.
            let stderr = match tokio::time::timeout(Duration::from_secs(2), &mut p.stderr).await {
                Ok(Ok(kept)) => kept,
                _ => {
                    p.stderr.abort();
                    Vec::new()
                }
            };
            let _ = std::fs::remove_file(&p.socket);
            if crashed {
                ui.warn(format!(
                    "the provider {} stopped while terraform ran; it printed:\n{}",
                    p.address,
                    String::from_utf8_lossy(&stderr).trim_end()
                ));
            }
        }
    }
}

/// Starts `p` and reads its handshake (`1|5|unix|/path|grpc|`).
async fn start(
    p: &Package,
    cwd: &Path,
    env: &[(OsString, Option<OsString>)],
    sockets: &Path,
) -> Option<Process> {
    let mut cmd = tokio::process::Command::new(&p.exe);
    cmd.current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.env(MAGIC_COOKIE_KEY, MAGIC_COOKIE)
        .env("PLUGIN_PROTOCOL_VERSIONS", "5,6")
        .env("PLUGIN_UNIX_SOCKET_DIR", sockets);
    // It serves plans only: nothing is lost if it dies with stategraph,
    // and nothing is left running.
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().ok()?;
    let mut stdout = BufReader::new(child.stdout.take()?);
    let mut err = child.stderr.take()?;
    let stderr = tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = err.read(&mut buf).await {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > 2 * KEEP_STDERR {
                kept.drain(..kept.len() - KEEP_STDERR);
            }
        }
        kept
    });
    let mut line = String::new();
    let read = tokio::time::timeout(HANDSHAKE_TIMEOUT, stdout.read_line(&mut line)).await;
    // Only on a socket in the private dir: without terraform's TLS
    // between them, no one else may reach it (a provider whose go-plugin
    // ignores PLUGIN_UNIX_SOCKET_DIR is left to terraform).
    let handshake = match read {
        Ok(Ok(n)) if n > 0 => handshake(line.trim_end())
            .filter(|(_, network, addr)| network == "unix" && Path::new(addr).starts_with(sockets)),
        _ => None,
    };
    let Some((version, network, addr)) = handshake else {
        let _ = child.start_kill();
        let _ = child.wait().await;
        return None;
    };
    // The rest of its stdout (go-plugin forwards its output over gRPC once
    // terraform connects) is read and dropped, so that it never blocks.
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut stdout, &mut tokio::io::sink()).await;
    });
    let pid = child.id()?;
    Some(Process {
        address: p.address.clone(),
        version: p.version.clone(),
        reattach: serde_json::json!({
            "Protocol": "grpc",
            "ProtocolVersion": version,
            "Pid": pid,
            // Terraform neither waits for nor stops a process it did not start.
            "Test": true,
            "Addr": { "Network": network, "String": addr },
        }),
        socket: PathBuf::from(&addr),
        child,
        stderr,
    })
}

/// go-plugin's handshake line: `CORE|APP|NETWORK|ADDR|PROTOCOL[|CERT]`.
/// Returns the app protocol version, network and address of a gRPC server
/// without TLS of its own (none was asked).
fn handshake(line: &str) -> Option<(u32, String, String)> {
    let parts: Vec<&str> = line.split('|').collect();
    match parts.as_slice() {
        ["1", app, network, addr, "grpc", rest @ ..]
            if rest.iter().all(|c| c.is_empty()) && matches!(*network, "unix" | "tcp") =>
        {
            let version: u32 = app.parse().ok()?;
            matches!(version, 5 | 6).then(|| (version, (*network).to_owned(), (*addr).to_owned()))
        }
        _ => None,
    }
}

/// Whether one of terraform's CLI configuration files overrides providers
/// (`dev_overrides`): terraform then runs another binary than the one
/// installed. `files` as `crate::settings` finds them.
pub fn dev_overrides(files: &[PathBuf]) -> bool {
    files
        .iter()
        .any(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains("dev_overrides")))
}

/// A provider's entry in the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lock {
    version: String,
    hashes: Vec<String>,
}

/// The lock file's providers by address; `None` when it does not read.
fn locks(text: &str) -> Option<BTreeMap<String, Lock>> {
    let body: Body = text.parse().ok()?;
    let string = |e: &Expression| match e {
        Expression::String(s) => Some(s.as_str().to_owned()),
        _ => None,
    };
    let mut out = BTreeMap::new();
    for b in body.get_blocks("provider") {
        let [label] = b.labels.as_slice() else {
            return None;
        };
        let version = string(&b.body.get_attribute("version")?.value)?;
        let hashes = match b.body.get_attribute("hashes").map(|a| &a.value) {
            None => Vec::new(),
            Some(Expression::Array(a)) => a.iter().map(string).collect::<Option<Vec<_>>>()?,
            Some(_) => return None,
        };
        out.insert(label.as_str().to_lowercase(), Lock { version, hashes });
    }
    Some(out)
}

/// `hashicorp/aws` → `registry.terraform.io/hashicorp/aws`, as terraform
/// reads a provider source (lowercased).
fn normalize(source: &str) -> Option<String> {
    let parts: Vec<&str> = source.trim().split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let (host, namespace, name) = match parts.as_slice() {
        [n] => ("registry.terraform.io", "hashicorp", *n),
        [ns, n] => ("registry.terraform.io", *ns, *n),
        [h, ns, n] => (*h, *ns, *n),
        _ => return None,
    };
    Some(format!("{host}/{namespace}/{name}").to_lowercase())
}

/// Each module's local provider names with the address they stand for
/// (`required_providers`, else `hashicorp/<name>`); `None` when an entry
/// cannot be read.
fn addresses(config: &Config) -> Option<BTreeMap<(String, String), String>> {
    let mut out = BTreeMap::new();
    for d in &config.providers {
        if let ProviderDeclKind::Required {
            source, readable, ..
        } = &d.kind
        {
            if !readable {
                return None;
            }
            let address = normalize(source.as_deref().unwrap_or(&d.name))?;
            out.insert((d.module.clone(), d.name.clone()), address);
        }
    }
    Some(out)
}

/// The address local name `name` stands for in `module`.
fn address_of(addresses: &BTreeMap<(String, String), String>, module: &str, name: &str) -> String {
    addresses
        .get(&(module.to_owned(), name.to_owned()))
        .cloned()
        .or_else(|| normalize(name))
        .unwrap_or_default()
}

/// Whether `address` has one configuration in the run: no `provider` block
/// for it has an alias or sits in a module other than the root (the root's
/// block, or the empty configuration terraform implies, serves it all).
fn single_configuration(
    config: &Config,
    addresses: &BTreeMap<(String, String), String>,
    address: &str,
) -> bool {
    config.providers.iter().all(|d| match d.kind {
        ProviderDeclKind::Config { aliased } => {
            address_of(addresses, &d.module, &d.name) != address
                || (!aliased && d.module.is_empty())
        }
        ProviderDeclKind::Required { .. } => true,
    })
}

/// Whether every version constraint the configuration gives `address`
/// allows `version`.
fn allowed(
    config: &Config,
    addresses: &BTreeMap<(String, String), String>,
    address: &str,
    version: &str,
) -> bool {
    config.providers.iter().all(|d| match &d.kind {
        ProviderDeclKind::Required {
            version: Some(c), ..
        } if address_of(addresses, &d.module, &d.name) == address => {
            satisfies(version, c) == Some(true)
        }
        _ => true,
    })
}

/// `5.100.0` as numbers (at most three, no pre-release).
fn numbers(v: &str) -> Option<Vec<u64>> {
    let parts: Vec<u64> = v
        .trim()
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    (1..=3).contains(&parts.len()).then_some(parts)
}

/// Whether `version` meets `constraint` (`~> 5.0, != 5.1.0`) as terraform
/// reads it; `None` where this reader is not sure (pre-releases, `~> 5`).
fn satisfies(version: &str, constraint: &str) -> Option<bool> {
    let v = numbers(version)?;
    let full = |n: &[u64]| [0, 1, 2].map(|i| n.get(i).copied().unwrap_or(0));
    let v = full(&v);
    let mut all = true;
    for c in constraint.split(',') {
        let c = c.trim();
        let (op, rest) = ["~>", ">=", "<=", "!=", ">", "<", "="]
            .iter()
            .find_map(|op| c.strip_prefix(op).map(|r| (*op, r)))
            .unwrap_or(("=", c));
        let n = numbers(rest)?;
        let w = full(&n);
        all &= match op {
            "=" => v == w,
            "!=" => v != w,
            ">" => v > w,
            ">=" => v >= w,
            "<" => v < w,
            "<=" => v <= w,
            _ => match n.len() {
                2 => v >= w && v < [w[0] + 1, 0, 0],
                3 => v >= w && v < [w[0], w[1] + 1, 0],
                _ => return None,
            },
        };
    }
    Some(all)
}

/// `<data dir>/providers/<address>/<version>/<os>_<arch>`, if installed.
fn package_dir(data_dir: &Path, address: &str, version: &str) -> Option<PathBuf> {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        os => os,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        a => a,
    };
    let dir = data_dir
        .join("providers")
        .join(address)
        .join(version)
        .join(format!("{os}_{arch}"));
    dir.is_dir().then_some(dir)
}

/// The package's one `terraform-provider-<type>` executable.
fn executable(dir: &Path, address: &str) -> Option<PathBuf> {
    let kind = address.rsplit('/').next()?;
    let prefix = format!("terraform-provider-{kind}");
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    match found.as_slice() {
        [one] if one.is_file() => Some(one.clone()),
        _ => None,
    }
}

/// The files of `dir`, recursively, relative with `/`, sorted bytewise
/// (Go's `dirhash.DirFiles`: anything not a directory is a file).
fn files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let path = e.path();
            if e.file_type()?.is_dir() {
                walk(base, &path, out)?;
            } else {
                let rel = path.strip_prefix(base).map_err(std::io::Error::other)?;
                out.push((rel.to_string_lossy().into_owned(), path));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(out)
}

/// The package's `h1:` hash as terraform computes it (Go's
/// `dirhash.Hash1`: SHA-256 of the lines `<sha256 hex>  <name>\n` of its
/// files), from `cache` where the files are the ones hashed before (same
/// device, inode, size, modification and change times).
fn package_hash(dir: &Path, cache: Option<&Path>) -> std::io::Result<String> {
    let dir = dir.canonicalize()?;
    let files = files(&dir)?;
    let mut identity = Sha256::new();
    identity.update(b"stategraph package hash 1\n");
    identity.update(dir.as_os_str().as_encoded_bytes());
    for (name, path) in &files {
        let m = std::fs::metadata(path)?;
        identity.update(
            format!(
                "\n{name}\0{} {} {} {}.{} {}.{}",
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec()
            )
            .as_bytes(),
        );
    }
    let key: String = identity
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let entry = cache.map(|c| c.join(key));
    if let Some(found) = entry
        .as_ref()
        .and_then(|e| std::fs::read_to_string(e).ok())
        .filter(|h| h.starts_with("h1:"))
    {
        return Ok(found);
    }
    let mut summary = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for (name, path) in &files {
        if name.contains('\n') {
            return Err(std::io::Error::other("file name with a newline"));
        }
        let mut f = std::fs::File::open(path)?;
        let mut h = Sha256::new();
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        summary.update(format!("{hex}  {name}\n").as_bytes());
    }
    let h1 = format!(
        "h1:{}",
        base64::engine::general_purpose::STANDARD.encode(summary.finalize())
    );
    if let Some(entry) = entry {
        // Best effort: a cache that cannot be written costs a hash next time.
        let _ = super::write_private(&entry, h1.as_bytes());
    }
    Ok(h1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn debugging(name: &OsStr) -> bool {
        DEBUGGING.iter().any(|k| OsStr::new(k) == name)
    }

    #[test]
    fn reads_the_lock_file() {
        let text = r#"
# This file is maintained automatically by "terraform init".
provider "registry.terraform.io/hashicorp/aws" {
  version     = "5.100.0"
  constraints = "~> 5.0"
  hashes = [
    "h1:edXOJWE4ORX8Fm+dpVpICzMZJat4AX0VRCAy/xkcOc0=",
    "zh:01a2",
  ]
}
provider "registry.terraform.io/hashicorp/null" {
  version = "3.2.1"
}
"#;
        let found = locks(text).unwrap();
        assert_eq!(
            found["registry.terraform.io/hashicorp/aws"],
            Lock {
                version: "5.100.0".into(),
                hashes: vec![
                    "h1:edXOJWE4ORX8Fm+dpVpICzMZJat4AX0VRCAy/xkcOc0=".into(),
                    "zh:01a2".into()
                ],
            }
        );
        assert!(found["registry.terraform.io/hashicorp/null"]
            .hashes
            .is_empty());
        assert!(locks("provider \"x\" {}").is_none(), "no version");
    }

    #[test]
    fn version_constraints_as_terraform_reads_them() {
        let cases = [
            ("5.100.0", "5.100.0", Some(true)),
            ("5.100.0", "= 5.100.0", Some(true)),
            ("5.100.0", "~> 5.0", Some(true)),
            ("5.100.0", "~> 4.0", Some(false)),
            ("5.100.0", "~> 5.100.1", Some(false)),
            ("5.100.2", "~> 5.100.1", Some(true)),
            ("5.101.0", "~> 5.100.1", Some(false)),
            ("5.100.0", ">= 4.0, < 6.0", Some(true)),
            ("5.100.0", ">= 4.0, < 5.0", Some(false)),
            ("5.100.0", "!= 5.100.0", Some(false)),
            ("5.100.0", "> 5.100", Some(false)),
            ("5.100.0", "<= 5.100", Some(true)),
            ("5.100.0", "~> 5", None),
            ("5.100.0", ">= 5.0.0-beta1", None),
            ("5.100.0-rc1", ">= 5.0", None),
            ("5.100.0", "latest", None),
        ];
        for (v, c, want) in cases {
            assert_eq!(satisfies(v, c), want, "{v} against {c}");
        }
    }

    #[test]
    fn provider_sources_normalized() {
        assert_eq!(
            normalize("hashicorp/aws").as_deref(),
            Some("registry.terraform.io/hashicorp/aws")
        );
        assert_eq!(
            normalize("aws").as_deref(),
            Some("registry.terraform.io/hashicorp/aws")
        );
        assert_eq!(
            normalize("Example.com/Corp/Thing").as_deref(),
            Some("example.com/corp/thing")
        );
        assert_eq!(normalize("a/b/c/d"), None);
        assert_eq!(normalize("/aws"), None);
    }

    /// The configurations one process may serve, from the configuration's
    /// text as the reader records it.
    #[test]
    fn a_provider_is_shared_only_with_one_configuration() {
        let shared = |files: &[(&str, &str)]| -> Vec<String> {
            let dir = tempfile::tempdir().unwrap();
            for (name, text) in files {
                let path = dir.path().join(name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
            let config = crate::terraform::config::read(
                dir.path(),
                &crate::terraform::config::Inputs::default(),
            )
            .unwrap();
            let addresses = addresses(&config).unwrap();
            [
                "registry.terraform.io/hashicorp/aws",
                "example.com/corp/thing",
            ]
            .into_iter()
            .filter(|a| single_configuration(&config, &addresses, a))
            .filter(|a| allowed(&config, &addresses, a, "5.100.0"))
            .map(str::to_owned)
            .collect()
        };
        let required = r#"terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.0" }
    thing = { source = "example.com/corp/thing" }
  }
}
"#;
        let both = vec![
            "registry.terraform.io/hashicorp/aws".to_owned(),
            "example.com/corp/thing".to_owned(),
        ];
        assert_eq!(shared(&[("main.tf", required)]), both);
        assert_eq!(
            shared(&[
                ("main.tf", required),
                ("p.tf", "provider \"aws\" {\n  region = \"x\"\n}\n")
            ]),
            both
        );
        // An alias: two configurations of aws.
        assert_eq!(
            shared(&[
                ("main.tf", required),
                (
                    "p.tf",
                    "provider \"aws\" {}\nprovider \"aws\" {\n  alias = \"west\"\n}\n"
                ),
            ]),
            vec!["example.com/corp/thing".to_owned()]
        );
        // A module's own provider block, under another local name.
        let module = r#"terraform {
  required_providers {
    amazon = { source = "hashicorp/aws" }
  }
}
provider "amazon" {}
"#;
        assert_eq!(
            shared(&[
                (
                    "main.tf",
                    &format!("{required}module \"m\" {{\n  source = \"./m\"\n}}\n")
                ),
                ("m/main.tf", module),
            ]),
            vec!["example.com/corp/thing".to_owned()]
        );
        // A constraint the locked version does not meet: terraform says so.
        assert_eq!(
            shared(&[(
                "main.tf",
                "terraform {\n  required_providers {\n    aws = \"< 5.0\"\n  }\n}\n"
            )]),
            vec!["example.com/corp/thing".to_owned()]
        );
    }

    #[test]
    fn only_a_plan_that_configures_once() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        let none: &[(OsString, Option<OsString>)] = &[];
        assert!(configures_once(&args(&["plan", "-lock=false"]), none));
        assert!(configures_once(&args(&["plan", "-refresh-only"]), none));
        assert!(!configures_once(&args(&["plan", "-destroy"]), none));
        assert!(!configures_once(&args(&["plan", "-destroy=true"]), none));
        assert!(!configures_once(&args(&["apply", "x.tfplan"]), none));
        let destroying = [(
            OsString::from("TF_CLI_ARGS_plan"),
            Some(OsString::from("-destroy")),
        )];
        assert!(!configures_once(&args(&["plan"]), &destroying));
        assert!(debugging(OsStr::new("TF_LOG")));
    }

    #[test]
    fn reads_the_plugin_handshake() {
        assert_eq!(
            handshake("1|5|unix|/tmp/x/plugin123|grpc|"),
            Some((5, "unix".into(), "/tmp/x/plugin123".into()))
        );
        assert_eq!(
            handshake("1|6|tcp|127.0.0.1:1234|grpc"),
            Some((6, "tcp".into(), "127.0.0.1:1234".into()))
        );
        // TLS of its own, netrpc, another core protocol: left to terraform.
        assert_eq!(handshake("1|5|unix|/tmp/p|grpc|MIIB..."), None);
        assert_eq!(handshake("1|5|unix|/tmp/p|netrpc|"), None);
        assert_eq!(handshake("2|5|unix|/tmp/p|grpc|"), None);
        assert_eq!(handshake("Starting..."), None);
    }

    /// The `h1:` hash of a package, pinned to the value Go's
    /// `dirhash.Hash1` gives for the same files (computed independently:
    /// `sha256sum` of each file, then of the lines, base64).
    #[test]
    fn package_hash_as_terraform_computes_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("terraform-provider-x_v1.0.0"), b"binary\n").unwrap();
        std::fs::write(dir.path().join("LICENSE"), b"MIT\n").unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        std::fs::write(dir.path().join("docs/a.md"), b"# a\n").unwrap();
        let cache = tempfile::tempdir().unwrap();
        let first = package_hash(dir.path(), Some(cache.path())).unwrap();
        assert_eq!(first, "h1:1AV7i+RwqeazK/O5FI/QT1YXQ8/JK3CUFd5q/Cs7P4U=");
        // Kept by file identity: the same answer without reading the files.
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 1);
        assert_eq!(package_hash(dir.path(), Some(cache.path())).unwrap(), first);
        // A file changed: hashed again.
        std::fs::write(dir.path().join("LICENSE"), b"MIT!\n").unwrap();
        assert_ne!(package_hash(dir.path(), Some(cache.path())).unwrap(), first);
    }
}
