//! The engine in process: an in-memory SQLite and an in-memory object
//! store, with a real HTTP source on loopback for downloads.
