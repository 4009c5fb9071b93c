//! One branch of a repository fetched into a bare cache repository, and
//! the files of a commit's tree read back, with gitoxide (no `git`
//! process: `file://` is the one transport for which gitoxide itself runs
//! `git-upload-pack`, as git does, and `ssh://` runs OpenSSH's `ssh`;
//! see [`crate::transport`] for how each is reached).

use std::path::Path;
use std::sync::atomic::AtomicBool;

use flotilla_proto::bundle::{self, BundleFile};
use flotilla_proto::unit::MAX_UNIT_FILE_BYTES;

use crate::transport::{self, Access, Auth, Scheme};

/// How much of a commit a source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeLimits {
    /// Entries of the tree walked (files and directories, read or not).
    pub max_entries: usize,
    /// Files read (units, drop-ins, the manifest).
    pub max_files: usize,
    /// Bytes of the files read, together.
    pub max_bytes: u64,
    /// Bytes of one file read: a unit file's own limit.
    pub max_file_bytes: u64,
    /// Units one commit may ask for (instances included), so that the
    /// source's status, which names each, fits in one store value.
    pub max_units: usize,
}

impl Default for TreeLimits {
    fn default() -> Self {
        TreeLimits {
            max_entries: 100_000,
            max_files: 5_000,
            max_bytes: 32 * 1024 * 1024,
            max_file_bytes: MAX_UNIT_FILE_BYTES as u64,
            max_units: 1_000,
        }
    }
}

/// What went wrong reading a repository.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot {what}: {message}")]
    Git { what: String, message: String },
    #[error("the repository has no branch {0}")]
    NoBranch(String),
    #[error("the commit has no directory {0}")]
    NoPath(String),
    #[error("{path}: {size} bytes, over the limit of {limit} bytes for one file")]
    FileTooLarge { path: String, size: u64, limit: u64 },
    #[error("the commit has over {limit} {what}")]
    TooMany { what: &'static str, limit: u64 },
}

/// `r`, its error said with what was being done; gitoxide's errors with
/// their causes (`{:#}`), which say what went wrong underneath (a
/// certificate not trusted, a refused login).
fn git<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Result<T, GitError> {
    r.map_err(|e| GitError::Git {
        what: what.to_owned(),
        message: format!("{e:#}"),
    })
}

/// The cache repository at `dir`, made bare when it does not exist;
/// opened isolated from the server's git configuration and environment.
fn open_cache(dir: &Path) -> Result<gix::Repository, GitError> {
    if !dir.join("HEAD").is_file() {
        git(
            "make the cache repository",
            std::fs::create_dir_all(dir).map_err(|e| e.to_string()),
        )?;
        git("make the cache repository", gix::init_bare(dir))?;
    }
    open(dir)
}

/// The cache repository at `dir`, opened isolated from the server's git
/// configuration and environment.
pub(crate) fn open(dir: &Path) -> Result<gix::Repository, GitError> {
    git(
        "open the cache repository",
        gix::open_opts(dir, gix::open::Options::isolated()),
    )
}

/// The local ref a source's branch is fetched into.
fn tracking_ref(branch: &str) -> String {
    format!("refs/flotilla/{branch}")
}

/// Fetches `branch` of `url` into the cache repository at `cache`,
/// reaching it with `access`, and returns the commit it points at (hex).
/// `interrupt` ends a fetch that takes too long.
pub fn fetch(
    cache: &Path,
    url: &str,
    branch: &str,
    access: &Access,
    interrupt: &AtomicBool,
) -> Result<String, GitError> {
    let scheme = Scheme::of(url).map_err(|message| GitError::Git {
        what: "use the repository's address".to_owned(),
        message,
    })?;
    let mut repo = open_cache(cache)?;
    // Kept until the fetch ends.
    let _ssh = match (&access.auth, &access.known_hosts) {
        (Auth::SshKey(key), Some(hosts)) => {
            Some(transport::prepare_ssh(&mut repo, cache, key, hosts)?)
        }
        // Never the server's own keys, agent or known hosts.
        _ if scheme == Scheme::Ssh => {
            return Err(GitError::Git {
                what: "connect to the repository".to_owned(),
                message: "an ssh:// repository needs a deploy key and its host keys".to_owned(),
            });
        }
        _ => None,
    };
    let spec = format!("+refs/heads/{branch}:{}", tracking_ref(branch));
    let remote = git("use the repository's address", repo.remote_at(url))?;
    let remote = git(
        "use the branch",
        remote.with_refspecs([spec.as_str()], gix::remote::Direction::Fetch),
    )?;
    let mut connection = git(
        "connect to the repository",
        remote.connect(gix::remote::Direction::Fetch),
    )?;
    if scheme == Scheme::Https {
        connection
            .set_transport_options(Box::new(transport::http_options(access.ca_pem.as_deref())?));
    }
    // Only the source's own credentials: never a helper or a prompt.
    match &access.auth {
        Auth::Password { user, password } => {
            connection.set_credentials(transport::password_helper(user.clone(), password.clone()))
        }
        _ => connection.set_credentials(|_| Ok(None)),
    };
    // With protocol v2 the server lists only the refs the refspec names:
    // a missing branch is a fetch that matches nothing.
    let no_branch = |e: gix::Error| {
        let message = format!("{e:#}");
        if message.contains("matched any of") {
            GitError::NoBranch(branch.to_owned())
        } else {
            GitError::Git {
                what: "fetch".to_owned(),
                message,
            }
        }
    };
    let prepared = connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(no_branch)?;
    prepared
        .receive(gix::progress::Discard, interrupt)
        .map_err(no_branch)?;
    let reference = git(
        "read the fetched branch",
        repo.find_reference(tracking_ref(branch).as_str()),
    )?;
    let id = git("read the fetched branch", reference.into_fully_peeled_id())?;
    Ok(id.to_string())
}

/// The files of commit `commit` under `path` (the whole tree when empty)
/// that [`bundle::read`] looks at, by their paths relative to `path`.
pub fn read_tree(
    cache: &Path,
    commit: &str,
    path: &str,
    limits: &TreeLimits,
) -> Result<Vec<BundleFile>, GitError> {
    let repo = open(cache)?;
    let id = git(
        "read the commit id",
        gix::ObjectId::from_hex(commit.as_bytes()),
    )?;
    let commit = git("read the commit", repo.find_commit(id))?;
    let mut tree = git("read the commit's tree", commit.tree())?;
    let path = path.trim_matches('/');
    if !path.is_empty() {
        let entry = git(
            "find the directory",
            tree.peel_to_entry_by_path(Path::new(path)),
        )?
        .filter(|e| e.mode().is_tree())
        .ok_or_else(|| GitError::NoPath(path.to_owned()))?;
        tree = git("read the directory", repo.find_tree(entry.object_id()))?;
    }
    let entries = git("walk the tree", tree.traverse().breadthfirst.files())?;
    if entries.len() > limits.max_entries {
        return Err(GitError::TooMany {
            what: "entries",
            limit: limits.max_entries as u64,
        });
    }
    let mut files = Vec::new();
    let mut total = 0u64;
    for entry in entries {
        if !entry.mode.is_blob() {
            continue;
        }
        let Ok(file) = std::str::from_utf8(&entry.filepath) else {
            continue;
        };
        if !bundle::reads(file) {
            continue;
        }
        if files.len() >= limits.max_files {
            return Err(GitError::TooMany {
                what: "unit files",
                limit: limits.max_files as u64,
            });
        }
        let header = git("read a file's size", repo.find_header(entry.oid))?;
        let size = header.size();
        if size > limits.max_file_bytes {
            return Err(GitError::FileTooLarge {
                path: if path.is_empty() {
                    file.to_owned()
                } else {
                    format!("{path}/{file}")
                },
                size,
                limit: limits.max_file_bytes,
            });
        }
        total += size;
        if total > limits.max_bytes {
            return Err(GitError::TooMany {
                what: "bytes of unit files",
                limit: limits.max_bytes,
            });
        }
        let blob = git("read a file", repo.find_blob(entry.oid))?;
        files.push(BundleFile {
            path: file.to_owned(),
            bytes: blob.data.clone(),
        });
    }
    Ok(files)
}

/// The first seven digits of a commit, as people write them.
pub fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}
