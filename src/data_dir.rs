//! The data directory: `member.json` (who this member is, in which cluster) beside the sled
//! database in `db/` (the format marker; in data dirs made before the store moved out, the
//! MVCC store too), the MVCC store's own sled database in `mvcc/` (see `storage::defrag`,
//! which replaces it when defragmenting), Raft's kept snapshot in `snap/` (see
//! `raft::snapshot`), and the Raft log's segments in `wal/`, or in the
//! dedicated directory `--wal-dir` names (recorded in `member.json`, so that a restart with
//! another or no `--wal-dir` is refused instead of starting from an empty log). A directory
//! that holds something else, or a damaged one, is refused with a clear error instead of being
//! overwritten.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod restore;

/// Marks a data dir written by this version of minietcd: the Raft log in its own WAL, Raft
/// snapshots in files under `snap/`.
const FORMAT: &str = "minietcd/3";
/// The first format: the Raft log inside sled. Not readable by this build.
const FORMAT_SLED_LOG: &str = "minietcd/1";
/// The second format: Raft's kept snapshot inside sled (one value holding the whole store).
/// Not readable by this build.
const FORMAT_SLED_SNAPSHOT: &str = "minietcd/2";
/// Raft's snapshot files.
const SNAP_DIR: &str = crate::raft::snapshot::SNAP_DIR;
const WAL_DIR: &str = "wal";
const IDENTITY_FILE: &str = "member.json";
const DB_DIR: &str = "db";
/// Written into sled when the data dir is created. sled recovers a garbled database as a
/// shorter (even empty) one without an error, so a missing marker is how a damaged database
/// is told from a new one.
const DB_MARKER_KEY: &[u8] = b"minietcd/format";

/// A data dir problem, one line each.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data dir {0}: not a minietcd data dir (it holds other files and no {IDENTITY_FILE})")]
    Foreign(PathBuf),
    #[error(
        "data dir {path}: format {found:?} keeps {what} inside sled; this build reads \
         only {FORMAT:?} (Raft log in its own write-ahead log, Raft snapshots in files): move \
         the data with a snapshot (snapshot save, then snapshot restore) or start the member \
         from an empty dir"
    )]
    OldFormat {
        path: PathBuf,
        found: String,
        what: &'static str,
    },
    #[error("data dir {path}: damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error("data dir {path}: belongs to member {stored:?} but --name is {given:?}")]
    WrongMember {
        path: PathBuf,
        stored: String,
        given: String,
    },
    #[error(
        "data dir {path}: belongs to cluster {stored:x} but the flags describe cluster {given:x} \
         (check --initial-cluster, --initial-advertise-peer-urls and --initial-cluster-token, or \
         use another --data-dir)"
    )]
    WrongCluster {
        path: PathBuf,
        stored: u64,
        given: u64,
    },
    #[error(
        "wal dir {0}: not empty (it holds another member's log?); give an empty or new directory"
    )]
    WalDirNotEmpty(PathBuf),
    #[error("data dir {path}: its Raft log is in {stored} but {given}")]
    WrongWalDir {
        path: PathBuf,
        stored: String,
        given: String,
    },
    #[error("data dir {0}: in use by another minietcd process")]
    InUse(PathBuf),
    #[error("data dir {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Who this member is; written once when the data dir is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub format: String,
    pub name: String,
    pub member_id: u64,
    pub cluster_id: u64,
    pub cluster_token: String,
    /// The dedicated WAL directory (`--wal-dir`), absolute; `None`: `wal/` in the data dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_dir: Option<PathBuf>,
}

/// An open data dir.
pub struct DataDir {
    pub path: PathBuf,
    pub identity: Identity,
    pub db: sled::Db,
    /// True when the dir was created by this start (a new member, no Raft state yet).
    pub fresh: bool,
    /// Where the Raft log's segments are.
    wal: PathBuf,
}

impl DataDir {
    /// Whether `path` would be created by [`DataDir::open`] (missing or empty): a member
    /// without state, which may first have to learn its identity from the cluster.
    pub fn is_new(path: &Path) -> Result<bool, DataDirError> {
        match fs::read_dir(path) {
            Ok(mut entries) => Ok(entries.next().is_none()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(source) => Err(DataDirError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Opens `path`, creating it with `identity` when it does not exist or is empty. An
    /// existing dir must belong to the member `identity` names; with `check_ids` (the flags
    /// describe a new cluster, so they determine the ids) its member and cluster ids must
    /// match too. Otherwise the ids on disk win: a member that joined a running cluster got
    /// them from the cluster, not from its flags.
    pub fn open(path: &Path, identity: Identity, check_ids: bool) -> Result<DataDir, DataDirError> {
        DataDir::open_with_wal(path, identity, check_ids, None)
    }

    /// [`DataDir::open`] with the Raft log in `wal_dir` (`--wal-dir`) instead of `wal/`:
    /// created empty with a new data dir; an existing data dir must be opened with the same
    /// WAL dir it was created with.
    pub fn open_with_wal(
        path: &Path,
        mut identity: Identity,
        check_ids: bool,
        wal_dir: Option<&Path>,
    ) -> Result<DataDir, DataDirError> {
        // What the flags say; `identity` becomes what the dir holds.
        let given = identity.clone();
        let io = |source| DataDirError::Io {
            path: path.to_path_buf(),
            source,
        };
        let damaged = |reason: String| DataDirError::Damaged {
            path: path.to_path_buf(),
            reason,
        };
        let id_path = path.join(IDENTITY_FILE);
        let empty = match fs::read_dir(path) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(io(e)),
        };
        let empty = empty || interrupted_creation(path).map_err(io)?;
        let (identity, fresh) = if empty {
            if let Some(wal) = wal_dir {
                identity.wal_dir = Some(create_dedicated_wal(wal)?);
            }
            fs::create_dir_all(path).map_err(io)?;
            if identity.wal_dir.is_none() {
                fs::create_dir_all(path.join(WAL_DIR)).map_err(io)?;
            }
            // `member.json` is written last, once the database holds its marker: it is what
            // makes the dir a member's (see `interrupted_creation`).
            (identity, true)
        } else {
            let raw = match fs::read(&id_path) {
                Ok(raw) => raw,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(DataDirError::Foreign(path.to_path_buf()))
                }
                Err(e) => return Err(io(e)),
            };
            let stored: Identity = serde_json::from_slice(&raw)
                .map_err(|e| damaged(format!("{IDENTITY_FILE}: {e}")))?;
            let old = match stored.format.as_str() {
                FORMAT_SLED_LOG => Some("the Raft log"),
                FORMAT_SLED_SNAPSHOT => Some("Raft snapshots"),
                _ => None,
            };
            if let Some(what) = old {
                return Err(DataDirError::OldFormat {
                    path: path.to_path_buf(),
                    found: stored.format,
                    what,
                });
            }
            if stored.format != FORMAT {
                return Err(damaged(format!(
                    "{IDENTITY_FILE}: unknown format {:?} (expected {FORMAT:?})",
                    stored.format
                )));
            }
            if stored.name != identity.name {
                return Err(DataDirError::WrongMember {
                    path: path.to_path_buf(),
                    stored: stored.name,
                    given: identity.name,
                });
            }
            if !path.join(DB_DIR).is_dir() {
                return Err(damaged(format!("{DB_DIR}/ is missing")));
            }
            check_wal_dir(path, stored.wal_dir.as_deref(), wal_dir)?;
            if stored.wal_dir.is_none() && !path.join(WAL_DIR).is_dir() {
                return Err(damaged(format!("{WAL_DIR}/ is missing")));
            }
            (stored, false)
        };
        let db = open_sled(&path.join(DB_DIR)).map_err(|e| match e {
            SledOpen::Locked => DataDirError::InUse(path.to_path_buf()),
            SledOpen::Failed(reason) => damaged(format!("database: {reason}")),
        })?;
        // After the lock: a second process on a dir in use learns that first.
        if check_ids && !fresh && identity.cluster_id != given.cluster_id {
            return Err(DataDirError::WrongCluster {
                path: path.to_path_buf(),
                stored: identity.cluster_id,
                given: given.cluster_id,
            });
        }
        if check_ids && !fresh && identity.member_id != given.member_id {
            // A member added at run time (its id given by the cluster), restarted with the
            // flags of the cluster's first start: etcd starts it as the member its data
            // says it is, and so does this.
            tracing::info!(
                member_id = %format!("{:x}", identity.member_id),
                from_flags = %format!("{:x}", given.member_id),
                "the data dir is already initialized as this member; its id is kept"
            );
        }
        if fresh {
            db.insert(DB_MARKER_KEY, FORMAT.as_bytes())
                .and_then(|_| db.flush())
                .map_err(|e| damaged(format!("database: {e}")))?;
            write_identity(&id_path, &identity).map_err(io)?;
        } else {
            match db.get(DB_MARKER_KEY) {
                Ok(Some(v)) if v.as_ref() == FORMAT.as_bytes() => {}
                Ok(_) => {
                    return Err(damaged(
                        "database lost its contents (format marker missing): restore it from a \
                         backup or remove the member and add it anew"
                            .into(),
                    ))
                }
                Err(e) => return Err(damaged(format!("database: {e}"))),
            }
        }
        let wal = identity
            .wal_dir
            .clone()
            .unwrap_or_else(|| path.join(WAL_DIR));
        Ok(DataDir {
            path: path.to_path_buf(),
            identity,
            db,
            fresh,
            wal,
        })
    }
}

impl DataDir {
    /// The Raft log's directory.
    pub fn wal_dir(&self) -> PathBuf {
        self.wal.clone()
    }

    /// Where Raft's snapshot files live.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.path.join(SNAP_DIR)
    }

    /// sled's data file, which the Raft log fdatasyncs after each flush.
    pub fn sled_data_file(&self) -> PathBuf {
        self.path.join(DB_DIR).join("db")
    }
}

impl Identity {
    pub fn new(name: &str, member_id: u64, cluster_id: u64, token: &str) -> Identity {
        Identity {
            format: FORMAT.to_string(),
            name: name.to_string(),
            member_id,
            cluster_id,
            cluster_token: token.to_string(),
            wal_dir: None,
        }
    }
}

/// Creates a dedicated WAL dir for a new member; it must be missing or empty. Returns its
/// absolute path, which `member.json` records.
fn create_dedicated_wal(wal: &Path) -> Result<PathBuf, DataDirError> {
    let io = |source| DataDirError::Io {
        path: wal.to_path_buf(),
        source,
    };
    fs::create_dir_all(wal).map_err(io)?;
    if fs::read_dir(wal).map_err(io)?.next().is_some() {
        return Err(DataDirError::WalDirNotEmpty(wal.to_path_buf()));
    }
    fs::canonicalize(wal).map_err(io)
}

/// An existing data dir opens with the WAL dir it was created with.
fn check_wal_dir(
    path: &Path,
    stored: Option<&Path>,
    given: Option<&Path>,
) -> Result<(), DataDirError> {
    let given_abs = given.map(|g| fs::canonicalize(g).unwrap_or_else(|_| g.to_path_buf()));
    if stored == given_abs.as_deref() {
        if let Some(wal) = stored.filter(|w| !w.is_dir()) {
            return Err(DataDirError::Damaged {
                path: path.to_path_buf(),
                reason: format!("wal dir {} is missing", wal.display()),
            });
        }
        return Ok(());
    }
    let describe = |w: Option<&Path>| match w {
        Some(w) => w.display().to_string(),
        None => format!("{}", path.join(WAL_DIR).display()),
    };
    Err(DataDirError::WrongWalDir {
        path: path.to_path_buf(),
        stored: describe(stored),
        given: match given {
            Some(g) => format!("--wal-dir is {}", g.display()),
            None => "--wal-dir is not given".into(),
        },
    })
}

enum SledOpen {
    Locked,
    Failed(String),
}

/// Opens sled, turning its lock error and any panic on garbage into errors.
fn open_sled(path: &Path) -> Result<sled::Db, SledOpen> {
    let prev_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let res = std::panic::catch_unwind(|| sled::Config::new().path(path).open());
    std::panic::set_hook(prev_hook);
    match res {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(sled::Error::Io(e)))
            if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock") =>
        {
            Err(SledOpen::Locked)
        }
        Ok(Err(e)) => Err(SledOpen::Failed(e.to_string())),
        Err(_) => Err(SledOpen::Failed(
            "unreadable (sled could not recover it)".into(),
        )),
    }
}

/// Whether `path` holds only what a first start creates before it writes `member.json` (the
/// database, the WAL dir, a half-written identity file): a start that died there left no
/// member behind, so the dir is cleared and created anew instead of refused as foreign.
fn interrupted_creation(path: &Path) -> std::io::Result<bool> {
    if path.join(IDENTITY_FILE).exists() {
        return Ok(false);
    }
    let tmp_name = format!("{IDENTITY_FILE}.tmp");
    let mut names = Vec::new();
    for e in fs::read_dir(path)? {
        names.push(e?.file_name().to_string_lossy().into_owned());
    }
    let ours = |n: &String| n == DB_DIR || n == WAL_DIR || *n == tmp_name;
    if names.is_empty() || !names.iter().all(ours) {
        return Ok(false);
    }
    // The WAL dir of an unfinished start holds no log yet (Raft starts after this).
    let wal = path.join(WAL_DIR);
    if wal.is_dir()
        && fs::read_dir(&wal)?.any(|e| {
            e.map(|e| e.file_name().to_string_lossy().ends_with(".wal"))
                .unwrap_or(true)
        })
    {
        return Ok(false);
    }
    tracing::warn!(path = %path.display(), "clearing a data dir left by an interrupted first start");
    for n in names {
        let p = path.join(n);
        if p.is_dir() {
            fs::remove_dir_all(p)?;
        } else {
            fs::remove_file(p)?;
        }
    }
    Ok(true)
}

/// Writes the identity file durably: temp file, fsync, rename.
fn write_identity(path: &Path, id: &Identity) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(id).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`DataDir::open_with_wal`], waiting while the database is still locked by a handle of
    /// this process that was just dropped: sled lets its lock go when its flusher thread
    /// ends, a moment after the drop. Another process holding it would still be `InUse`
    /// after the wait.
    fn open_with_wal(
        dir: &Path,
        identity: Identity,
        check_ids: bool,
        wal_dir: Option<&Path>,
    ) -> Result<DataDir, DataDirError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match DataDir::open_with_wal(dir, identity.clone(), check_ids, wal_dir) {
                Err(DataDirError::InUse(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return other,
            }
        }
    }

    fn open(dir: &Path, identity: Identity, check_ids: bool) -> Result<DataDir, DataDirError> {
        open_with_wal(dir, identity, check_ids, None)
    }

    fn id(name: &str) -> Identity {
        Identity::new(name, 1, 2, "t")
    }

    /// A first start that died after creating the database but before `member.json` leaves
    /// a dir that the next start creates anew; anything else in it is still foreign.
    #[test]
    fn an_interrupted_first_start_is_started_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        fs::create_dir_all(dir.join(WAL_DIR)).unwrap();
        drop(sled::open(dir.join(DB_DIR)).unwrap());
        fs::write(dir.join(format!("{IDENTITY_FILE}.tmp")), b"{half").unwrap();
        let d = open(&dir, id("a"), true).unwrap();
        assert!(d.fresh);
        drop(d);
        let d = open(&dir, id("a"), true).unwrap();
        assert!(!d.fresh, "the second start finds a complete member");
        drop(d);

        let other = tmp.path().join("o");
        fs::create_dir_all(other.join(WAL_DIR)).unwrap();
        fs::write(other.join("notes.txt"), b"mine").unwrap();
        assert!(matches!(
            open(&other, id("a"), true),
            Err(DataDirError::Foreign(_))
        ));
        assert!(
            other.join("notes.txt").exists(),
            "a foreign dir is left alone"
        );
    }

    #[test]
    fn create_reopen_and_refuse() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        let d = open(&dir, id("a"), true).unwrap();
        assert!(d.fresh);
        drop(d);
        let d = open(&dir, id("a"), true).unwrap();
        assert!(!d.fresh);
        drop(d);
        let e = open(&dir, id("b"), true).err().unwrap();
        assert!(matches!(e, DataDirError::WrongMember { .. }), "{e}");

        let foreign = tmp.path().join("f");
        fs::create_dir_all(&foreign).unwrap();
        fs::write(foreign.join("x"), b"hello").unwrap();
        assert!(matches!(
            open(&foreign, id("a"), true),
            Err(DataDirError::Foreign(_))
        ));

        let other_cluster = Identity::new("a", 1, 3, "t");
        let e = open(&dir, other_cluster.clone(), true).err().unwrap();
        assert!(matches!(e, DataDirError::WrongCluster { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("cluster 2 but the flags describe cluster 3"),
            "{e}"
        );
        // A member id the flags do not give (a member added at run time, restarted with
        // the first start's flags) is kept, as etcd keeps it.
        let other_member = Identity::new("a", 9, 2, "t");
        let d = open(&dir, other_member.clone(), true).unwrap();
        assert_eq!((d.identity.member_id, d.identity.cluster_id), (1, 2));
        drop(d);
        // A member that joined a running cluster keeps the ids on disk.
        let d = open(&dir, other_cluster, false).unwrap();
        assert_eq!((d.identity.member_id, d.identity.cluster_id), (1, 2));
        drop(d);

        // A data dir of the first format (Raft log inside sled) is refused by name.
        let mut old: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join(IDENTITY_FILE)).unwrap()).unwrap();
        let current = fs::read(dir.join(IDENTITY_FILE)).unwrap();
        old["format"] = "minietcd/1".into();
        fs::write(dir.join(IDENTITY_FILE), serde_json::to_vec(&old).unwrap()).unwrap();
        let e = open(&dir, id("a"), true).err().unwrap();
        assert!(matches!(e, DataDirError::OldFormat { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("\"minietcd/1\" keeps the Raft log inside sled"),
            "{e}"
        );
        // And so is one of the second (Raft snapshots inside sled).
        old["format"] = "minietcd/2".into();
        fs::write(dir.join(IDENTITY_FILE), serde_json::to_vec(&old).unwrap()).unwrap();
        let e = open(&dir, id("a"), true).err().unwrap();
        assert!(
            e.to_string()
                .contains("\"minietcd/2\" keeps Raft snapshots inside sled"),
            "{e}"
        );
        fs::write(dir.join(IDENTITY_FILE), current).unwrap();

        fs::write(dir.join(IDENTITY_FILE), b"{not json").unwrap();
        assert!(matches!(
            open(&dir, id("a"), true),
            Err(DataDirError::Damaged { .. })
        ));
    }

    #[test]
    fn dedicated_wal_dir_is_recorded_and_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        let wal = tmp.path().join("elsewhere/wal");
        let d = open_with_wal(&dir, id("a"), true, Some(&wal)).unwrap();
        assert_eq!(d.wal_dir(), fs::canonicalize(&wal).unwrap());
        assert!(!dir.join(WAL_DIR).exists());
        drop(d);
        let d = open_with_wal(&dir, id("a"), true, Some(&wal)).unwrap();
        assert!(!d.fresh);
        drop(d);
        let e = open(&dir, id("a"), true).err().unwrap();
        assert!(e.to_string().contains("--wal-dir is not given"), "{e}");
        let other = tmp.path().join("other");
        fs::create_dir_all(&other).unwrap();
        let e = open_with_wal(&dir, id("a"), true, Some(&other))
            .err()
            .unwrap();
        assert!(matches!(e, DataDirError::WrongWalDir { .. }), "{e}");
        // A new member refuses a WAL dir that already holds something.
        fs::write(other.join("0000000000000000.wal"), b"x").unwrap();
        let e = open_with_wal(&tmp.path().join("d2"), id("b"), true, Some(&other))
            .err()
            .unwrap();
        assert!(matches!(e, DataDirError::WalDirNotEmpty(_)), "{e}");
    }
}
