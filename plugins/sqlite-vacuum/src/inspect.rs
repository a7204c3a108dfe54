//! What one SQLite file looks like from the inside: its page size, page count and
//! free-list length, read through SQLite itself (read-only) so that WAL content counts.

use std::{fs::File, io::Read, path::Path, time::Duration};

use rusqlite::{Connection, OpenFlags};

/// The first 16 bytes of every SQLite 3 database file.
pub const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Whether `path` starts with the SQLite header (cheap: one 16-byte read). Files that
/// do not are never opened with SQLite.
pub fn looks_like_sqlite(path: &Path) -> std::io::Result<bool> {
    let mut header = [0u8; 16];
    let mut file = File::open(path)?;
    match file.read_exact(&mut header) {
        Ok(()) => Ok(&header == SQLITE_MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// A database's page accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageStats {
    pub page_size: u64,
    pub page_count: u64,
    /// Pages on the free list: what VACUUM gives back.
    pub freelist_count: u64,
}

impl PageStats {
    /// The share of pages that are free (0 for an empty database).
    pub fn free_ratio(&self) -> f64 {
        if self.page_count == 0 { 0.0 } else { self.freelist_count as f64 / self.page_count as f64 }
    }

    /// Bytes a VACUUM would give back.
    pub fn reclaimable_bytes(&self) -> u64 {
        self.freelist_count * self.page_size
    }

    /// Pages that hold data.
    pub fn used_pages(&self) -> u64 {
        self.page_count.saturating_sub(self.freelist_count)
    }
}

/// Reads the page statistics through an open connection.
pub fn stats_of(conn: &Connection) -> rusqlite::Result<PageStats> {
    let pragma = |name: &str| conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
    Ok(PageStats {
        page_size: pragma("page_size")?.max(0) as u64,
        page_count: pragma("page_count")?.max(0) as u64,
        freelist_count: pragma("freelist_count")?.max(0) as u64,
    })
}

/// Opens `path` read-only (never creating it) and reads its page statistics, waiting
/// up to `busy_timeout` for a lock.
pub fn page_stats(path: &Path, busy_timeout: Duration) -> rusqlite::Result<PageStats> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(busy_timeout)?;
    stats_of(&conn)
}
