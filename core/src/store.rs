//! The state database: one SQLite file in WAL mode under the data root, migrated forward on
//! open. Every call is synchronous; async callers go through [`Store::run`], which moves the
//! work onto the blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_api::ErrorKind;
use rusqlite::{Connection, OptionalExtension};
use rusqlite_migration::{M, Migrations};

/// File name of the database inside the data root.
pub const DB_FILE: &str = "berth.db";

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database file could not be opened or configured.
    #[error("cannot open state database {path}: {source}")]
    Open {
        /// Database path.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A schema migration failed; the database is left at its previous version.
    #[error("cannot migrate state database {path}: {source}")]
    Migrate {
        /// Database path.
        path: PathBuf,
        /// The migration error.
        source: rusqlite_migration::Error,
    },
    /// A query failed.
    #[error("state database: {what}: {source}")]
    Query {
        /// What was being done.
        what: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The kernel's random source could not be read.
    #[error("cannot read /dev/urandom: {0}")]
    Random(std::io::Error),
    /// The blocking task running a query died.
    #[error("state database task failed: {0}")]
    Task(String),
}

impl Error {
    /// How the API reports this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Query { source, .. } if is_busy(source) => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Schema history. Append only: never edit a migration that has shipped.
fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            "CREATE TABLE meta (
                key   TEXT PRIMARY KEY,
                value TEXT NOT NULL
            );
            CREATE TABLE images (
                id         TEXT PRIMARY KEY,
                created_at INTEGER NOT NULL,
                size_bytes INTEGER NOT NULL DEFAULT 0,
                doc        TEXT NOT NULL
            );
            CREATE TABLE containers (
                id         TEXT PRIMARY KEY,
                name       TEXT NOT NULL UNIQUE,
                image_id   TEXT,
                state      TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                doc        TEXT NOT NULL
            );
            CREATE TABLE volumes (
                name       TEXT PRIMARY KEY,
                driver     TEXT NOT NULL,
                ref_count  INTEGER NOT NULL DEFAULT 0,
                created_at INTEGER NOT NULL,
                doc        TEXT NOT NULL
            );
            CREATE TABLE networks (
                id         TEXT PRIMARY KEY,
                name       TEXT NOT NULL UNIQUE,
                driver     TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                doc        TEXT NOT NULL
            );
            CREATE TABLE plugins (
                name       TEXT PRIMARY KEY,
                kind       TEXT NOT NULL,
                enabled    INTEGER NOT NULL DEFAULT 0,
                created_at INTEGER NOT NULL,
                doc        TEXT NOT NULL
            );",
        ),
        M::up(
            "CREATE TABLE snapshots (
                id         INTEGER PRIMARY KEY AUTOINCREMENT,
                chain_id   TEXT NOT NULL UNIQUE,
                parent     TEXT,
                diff_id    TEXT NOT NULL,
                size_bytes INTEGER NOT NULL,
                created_at INTEGER NOT NULL
            );
            CREATE TABLE image_refs (
                name       TEXT PRIMARY KEY,
                image_id   TEXT NOT NULL,
                created_at INTEGER NOT NULL
            );
            CREATE INDEX image_refs_by_image ON image_refs (image_id);",
        ),
        // Which container mounts which volume, under the id given to the driver's `mount`;
        // container_id is NULL between the mount and the container's creation.
        M::up(
            "CREATE TABLE volume_mounts (
                mount_id     TEXT PRIMARY KEY,
                volume       TEXT NOT NULL,
                container_id TEXT,
                anonymous    INTEGER NOT NULL DEFAULT 0
            );
            CREATE INDEX volume_mounts_by_volume ON volume_mounts (volume);
            CREATE INDEX volume_mounts_by_container ON volume_mounts (container_id);",
        ),
        // Networks: which container is on which network (its endpoint while it runs, in doc),
        // and which kernel objects and firewall rules each network driver owns.
        M::up(
            "CREATE TABLE network_members (
                network_id   TEXT NOT NULL,
                container_id TEXT NOT NULL,
                position     INTEGER NOT NULL,
                doc          TEXT NOT NULL,
                PRIMARY KEY (network_id, container_id)
            );
            CREATE INDEX network_members_by_container ON network_members (container_id);
            CREATE TABLE net_links (
                netns      TEXT NOT NULL,
                name       TEXT NOT NULL,
                driver     TEXT NOT NULL,
                kind       TEXT NOT NULL,
                peer_netns TEXT,
                peer       TEXT,
                PRIMARY KEY (netns, name)
            );
            CREATE TABLE net_rules (
                driver TEXT NOT NULL,
                rule   TEXT NOT NULL,
                PRIMARY KEY (driver, rule)
            );",
        ),
        // The event history behind `events.subscribe --since` (the last events.rs HISTORY).
        M::up(
            "CREATE TABLE events (
                seq       INTEGER PRIMARY KEY,
                time_nano INTEGER NOT NULL,
                doc       TEXT NOT NULL
            );",
        ),
    ])
}

/// Object counts as the database sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// All containers.
    pub containers: u64,
    /// Containers in state `running`.
    pub running: u64,
    /// Containers in state `paused`.
    pub paused: u64,
    /// Images.
    pub images: u64,
    /// Images referenced by at least one container.
    pub images_in_use: u64,
    /// Bytes of images no container references.
    pub images_unused_bytes: u64,
    /// Volumes.
    pub volumes: u64,
    /// Volumes mounted by at least one container.
    pub volumes_in_use: u64,
    /// Networks.
    pub networks: u64,
    /// Plugins.
    pub plugins: u64,
    /// Enabled plugins.
    pub plugins_enabled: u64,
}

/// The open state database.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) and migrates the database in `data_root`. Blocking.
    pub fn open(data_root: &Path) -> Result<Store> {
        let path = data_root.join(DB_FILE);
        let open_err = |source| Error::Open {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(open_err)?;
        // berthd is the database's one user (its lock file keeps a second daemon off the data
        // root), so the file lock is taken once and held: set before WAL is entered, it also
        // keeps the WAL index in memory instead of the -shm file, and no transaction then
        // pays the fcntl calls that lock and unlock that index, two system calls on every
        // read of every API call. A process dying releases the lock with it.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(open_err)?;
        // WAL keeps readers off the writer's back and never tears the file on a crash;
        // NORMAL sync is durable across process crashes, which is what berthd must survive.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        migrations()
            .to_latest(&mut conn)
            .map_err(|source| Error::Migrate {
                path: path.clone(),
                source,
            })?;
        Ok(Store {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection, on the current thread. Blocking.
    pub fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back), so a poisoned lock is safe to keep using.
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn)
    }

    /// Runs `f` on the blocking pool: the way async code touches the database.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = Arc::clone(self);
        tokio::task::spawn_blocking(move || store.with_conn(f))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    }

    /// The id of this data root, created on first use.
    pub fn daemon_id(&self) -> Result<String> {
        self.with_conn(|conn| {
            let q = |source| Error::Query {
                what: "read daemon id",
                source,
            };
            if let Some(id) = conn
                .query_row("SELECT value FROM meta WHERE key = 'daemon_id'", [], |r| {
                    r.get::<_, String>(0)
                })
                .optional()
                .map_err(q)?
            {
                return Ok(id);
            }
            let id = random_hex(16).map_err(Error::Random)?;
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('daemon_id', ?1)",
                [&id],
            )
            .map_err(q)?;
            Ok(id)
        })
    }

    /// Object counts for `system.info` and `system.df`.
    /// Containers by state (`running`, `exited`...), for the metrics.
    pub fn container_states(conn: &Connection) -> Result<Vec<(String, i64)>> {
        let q = |source| Error::Query {
            what: "count containers by state",
            source,
        };
        let mut statement = conn
            .prepare_cached("SELECT state, count(*) FROM containers GROUP BY state")
            .map_err(q)?;
        let rows = statement
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(q)?;
        rows.collect::<std::result::Result<_, _>>().map_err(q)
    }

    pub fn counts(conn: &Connection) -> Result<Counts> {
        let q = |source| Error::Query {
            what: "count objects",
            source,
        };
        conn.query_row(
            "SELECT
                (SELECT count(*) FROM containers),
                (SELECT count(*) FROM containers WHERE state = 'running'),
                (SELECT count(*) FROM containers WHERE state = 'paused'),
                (SELECT count(*) FROM images),
                (SELECT count(*) FROM images WHERE id IN (SELECT image_id FROM containers)),
                (SELECT coalesce(sum(size_bytes), 0) FROM images
                    WHERE id NOT IN (SELECT image_id FROM containers WHERE image_id IS NOT NULL)),
                (SELECT count(*) FROM volumes),
                (SELECT count(DISTINCT volume) FROM volume_mounts),
                (SELECT count(*) FROM networks),
                (SELECT count(*) FROM plugins),
                (SELECT count(*) FROM plugins WHERE enabled != 0)",
            [],
            |r| {
                let n = |i| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                Ok(Counts {
                    containers: n(0)?,
                    running: n(1)?,
                    paused: n(2)?,
                    images: n(3)?,
                    images_in_use: n(4)?,
                    images_unused_bytes: n(5)?,
                    volumes: n(6)?,
                    volumes_in_use: n(7)?,
                    networks: n(8)?,
                    plugins: n(9)?,
                    plugins_enabled: n(10)?,
                })
            },
        )
        .map_err(q)
    }
}

/// Maps a SQLite error to this module's error, saying what was being done.
pub(crate) fn q(what: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |source| Error::Query { what, source }
}

/// `n` random bytes from the kernel, hex encoded.
pub(crate) fn random_hex(n: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    // /dev/urandom never blocks once the pool is initialised, which it is long before a
    // container engine starts; std opens it with O_CLOEXEC.
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        migrations().validate().unwrap();
    }

    #[test]
    fn opens_in_wal_mode_and_keeps_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let store = Store::open(dir.path()).unwrap();
            let mode: String = store
                .with_conn(|c| {
                    c.query_row("PRAGMA journal_mode", [], |r| r.get(0))
                        .map_err(|source| Error::Query {
                            what: "pragma",
                            source,
                        })
                })
                .unwrap();
            assert_eq!(mode, "wal");
            let id = store.daemon_id().unwrap();
            // The lock is held: the WAL index lives in memory, and no other connection reads.
            assert!(!dir.path().join("berth.db-shm").exists());
            let other = Connection::open(dir.path().join(DB_FILE)).unwrap();
            assert!(
                other
                    .query_row("SELECT count(*) FROM containers", [], |r| r
                        .get::<_, i64>(0))
                    .is_err()
            );
            id
        };
        assert_eq!(id.len(), 32);
        let again = Store::open(dir.path()).unwrap();
        assert_eq!(again.daemon_id().unwrap(), id);
        let counts = again.with_conn(Store::counts).unwrap();
        assert_eq!(counts, Counts::default());
    }

    #[test]
    fn counts_reflect_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .with_conn(|c| {
                c.execute_batch(
                    "INSERT INTO images VALUES ('i1', 0, 100, '{}'), ('i2', 0, 50, '{}');
                     INSERT INTO containers VALUES ('c1', 'a', 'i1', 'running', 0, '{}'),
                                                   ('c2', 'b', 'i1', 'exited', 0, '{}'),
                                                   ('c3', 'c', NULL, 'paused', 0, '{}');",
                )
                .map_err(|source| Error::Query {
                    what: "seed",
                    source,
                })
            })
            .unwrap();
        let c = store.with_conn(Store::counts).unwrap();
        assert_eq!((c.containers, c.running, c.paused), (3, 1, 1));
        assert_eq!(
            (c.images, c.images_in_use, c.images_unused_bytes),
            (2, 1, 50)
        );
    }
}
