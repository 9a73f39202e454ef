//! Where a root module lives: its git repository (identified by the
//! `origin` remote, normalized), its path in it, and the commit and branch
//! checked out. Read from the files under `.git` (no git binary needed, so
//! every machine names a checkout the same way).
//!
//! This names a directory's default state and records, with each state and
//! transaction, where it came from, so that a checkout of another
//! repository is refused instead of planning to destroy what it does not
//! declare.

use std::path::{Path, PathBuf};

/// A root module directory and the repository around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// The root module directory (canonical).
    pub dir: PathBuf,
    /// The git repository, if the directory is in one.
    pub repo: Option<Repo>,
}

/// The git repository around a root module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    /// The top of the work tree.
    pub top: PathBuf,
    /// The root module's path relative to it (`""` at the top).
    pub path: String,
    /// The `origin` remote, normalized (`github.com/acme/infra`), without
    /// credentials; `None` when the repository has none.
    pub remote: Option<String>,
    /// The commit checked out (full hex), if it can be read.
    pub commit: Option<String>,
    /// The branch checked out, unless HEAD is detached.
    pub branch: Option<String>,
}

impl Checkout {
    /// The checkout of the root module in `dir`.
    pub fn of(dir: &Path) -> Checkout {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let repo = dir
            .ancestors()
            .find(|d| d.join(".git").exists())
            .map(|top| Repo::read(top, &dir));
        Checkout { dir, repo }
    }

    /// The default state name of the root module: the normalized remote
    /// plus `//PATH` below the top (`github.com/acme/infra//envs/prod`);
    /// without a remote, the path in the repository (`.` at the top);
    /// outside git, the absolute path.
    pub fn state_name(&self) -> String {
        match &self.repo {
            Some(Repo {
                remote: Some(remote),
                path,
                ..
            }) => match path.as_str() {
                "" => remote.clone(),
                p => format!("{remote}//{p}"),
            },
            Some(repo) if repo.path.is_empty() => ".".to_owned(),
            Some(repo) => repo.path.clone(),
            None => self.dir.to_string_lossy().into_owned(),
        }
    }

    /// What identifies where a state came from: the repository (its
    /// remote, else the top of its work tree on this host) and the path in
    /// it. `None` outside git: nothing tells two copies of a configuration
    /// apart there, so nothing is recorded or checked.
    pub fn origin(&self, host: &str) -> Option<Origin> {
        let repo = self.repo.as_ref()?;
        Some(Origin {
            repository: match &repo.remote {
                Some(remote) => remote.clone(),
                None => format!("{host}:{}", repo.top.display()),
            },
            path: repo.path.clone(),
        })
    }
}

/// Where a state was created from (see [`Checkout::origin`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    pub repository: String,
    pub path: String,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.path.as_str() {
            "" => write!(f, "{}", self.repository),
            p => write!(f, "{}//{p}", self.repository),
        }
    }
}

impl Repo {
    fn read(top: &Path, dir: &Path) -> Repo {
        let path = dir
            .strip_prefix(top)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let git = git_dir(top);
        let common = git.as_deref().map(common_dir);
        let remote = common
            .as_deref()
            .and_then(|c| std::fs::read_to_string(c.join("config")).ok())
            .and_then(|text| origin_url(&text))
            .map(|url| normalize_remote(&url));
        let head = git
            .as_deref()
            .and_then(|g| std::fs::read_to_string(g.join("HEAD")).ok());
        let (commit, branch) = match head.as_deref().map(str::trim) {
            Some(h) => match h.strip_prefix("ref: ") {
                Some(reference) => (
                    common.as_deref().and_then(|c| resolve_ref(c, reference)),
                    reference.strip_prefix("refs/heads/").map(str::to_owned),
                ),
                None => (Some(h.to_owned()), None),
            },
            None => (None, None),
        };
        Repo {
            top: top.to_path_buf(),
            path,
            remote,
            commit,
            branch,
        }
    }
}

/// The git dir of the work tree at `top`: `.git`, or where a `.git` file
/// (`gitdir: ...`, a linked worktree or submodule) points.
fn git_dir(top: &Path) -> Option<PathBuf> {
    let dot = top.join(".git");
    if dot.is_dir() {
        return Some(dot);
    }
    let text = std::fs::read_to_string(&dot).ok()?;
    let target = text.trim().strip_prefix("gitdir:")?.trim();
    Some(top.join(target))
}

/// The common dir of a git dir (a linked worktree's `commondir`): where the
/// config, refs and objects are.
fn common_dir(git: &Path) -> PathBuf {
    match std::fs::read_to_string(git.join("commondir")) {
        Ok(text) => git.join(text.trim()),
        Err(_) => git.to_path_buf(),
    }
}

/// The commit a ref names: its loose file, else `packed-refs`.
fn resolve_ref(common: &Path, reference: &str) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(common.join(reference)) {
        return Some(text.trim().to_owned());
    }
    let packed = std::fs::read_to_string(common.join("packed-refs")).ok()?;
    packed.lines().find_map(|line| {
        let (sha, name) = line.split_once(' ')?;
        (name == reference).then(|| sha.to_owned())
    })
}

/// `url` of `[remote "origin"]` in a git config file.
fn origin_url(config: &str) -> Option<String> {
    let mut in_origin = false;
    for line in config.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            let section: String = line.chars().filter(|c| !c.is_whitespace()).collect();
            in_origin = section == "[remote\"origin\"]";
            continue;
        }
        if !in_origin {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            if key.trim().eq_ignore_ascii_case("url") {
                return Some(value.trim().trim_matches('"').to_owned());
            }
        }
    }
    None
}

/// `git@github.com:Acme/infra.git`, `https://user:token@github.com/Acme/infra`
/// and `ssh://git@github.com:22/Acme/infra.git/` all name
/// `github.com/Acme/infra`: scheme, credentials, port and `.git` dropped,
/// the host lower-cased. Local paths stay paths.
pub fn normalize_remote(url: &str) -> String {
    let url = url.trim();
    let (host, path) = if let Some((_, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        (Some(authority), path)
    } else if let Some((authority, path)) = url
        .split_once(':')
        .filter(|(a, _)| !a.contains('/') && !a.is_empty())
    {
        // scp-like syntax: [user@]host:path
        (Some(authority), path)
    } else {
        (None, url)
    };
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    match host {
        Some(authority) => {
            let host = authority.rsplit('@').next().unwrap_or(authority);
            let host = host.split(':').next().unwrap_or(host).to_lowercase();
            match host.as_str() {
                "" => format!("/{}", path.trim_start_matches('/')),
                _ => format!("{host}/{}", path.trim_start_matches('/')),
            }
        }
        None => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_normalize_to_host_and_path() {
        for url in [
            "git@github.com:acme/infra.git",
            "https://github.com/acme/infra.git",
            "https://alice:s3cret@GitHub.com/acme/infra",
            "ssh://git@github.com:22/acme/infra.git/",
            "git://github.com/acme/infra",
        ] {
            assert_eq!(normalize_remote(url), "github.com/acme/infra", "{url}");
        }
        assert_eq!(normalize_remote("/srv/git/infra.git"), "/srv/git/infra");
        assert_eq!(
            normalize_remote("file:///srv/git/infra.git"),
            "/srv/git/infra"
        );
    }

    #[test]
    fn the_origin_remote_is_read_from_the_config() {
        let config =
            "[core]\n\trepositoryformatversion = 0\n[remote \"upstream\"]\n\turl = git@x:a/b\n\
                      [remote \"origin\"]\n\turl = https://tok@github.com/acme/infra.git\n\
                      \tfetch = +refs/heads/*:refs/remotes/origin/*\n";
        assert_eq!(
            origin_url(config).as_deref(),
            Some("https://tok@github.com/acme/infra.git")
        );
        assert_eq!(origin_url("[core]\n\tbare = false\n"), None);
    }

    #[test]
    fn state_names_follow_the_remote_and_the_path() {
        let repo = |remote: Option<&str>, path: &str| Checkout {
            dir: PathBuf::from("/w/infra").join(path),
            repo: Some(Repo {
                top: PathBuf::from("/w/infra"),
                path: path.to_owned(),
                remote: remote.map(str::to_owned),
                commit: None,
                branch: None,
            }),
        };
        let r = Some("github.com/acme/infra");
        assert_eq!(repo(r, "").state_name(), "github.com/acme/infra");
        assert_eq!(
            repo(r, "envs/prod").state_name(),
            "github.com/acme/infra//envs/prod"
        );
        assert_eq!(repo(None, "").state_name(), ".");
        assert_eq!(repo(None, "envs/prod").state_name(), "envs/prod");
        assert_eq!(
            repo(None, "envs/prod").origin("h").unwrap().to_string(),
            "h:/w/infra//envs/prod"
        );
        assert_eq!(
            repo(r, "").origin("h").unwrap().to_string(),
            "github.com/acme/infra"
        );
        let outside = Checkout {
            dir: PathBuf::from("/w/x"),
            repo: None,
        };
        assert_eq!(outside.origin("h"), None);
    }
}
