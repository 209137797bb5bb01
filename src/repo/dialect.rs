//! The few places where SQLite and Postgres need different SQL. Everything
//! else is one query text for both.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn from_url(url: &str) -> Option<Dialect> {
        if url.starts_with("sqlite:") {
            Some(Dialect::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Dialect::Postgres)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    /// How a transaction that will write begins. SQLite takes the write
    /// lock up front, so a read-then-write transaction never fails halfway
    /// with SQLITE_BUSY; Postgres locks rows as it goes.
    pub fn begin_write(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }

    /// Appended to the select that picks rows to claim: two Postgres
    /// replicas claiming at once each skip the rows the other has locked.
    /// SQLite has one writer at a time, so nothing races it.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// A statement that serialises transactions about one user, so two
    /// replicas enforcing one user's limit at once never both evict. `None`
    /// where the write lock already does it.
    pub fn lock_user(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some("SELECT pg_advisory_xact_lock(hashtext($1))"),
        }
    }
}
