#pragma once
// A VFS over SQLite's default one ("unix") that turns a commit's writes to the WAL file into
// one pwrite. SQLite writes each WAL frame with two calls (its 24-byte header, then the page),
// so a group commit of twelve pages cost 24 system calls; with the pages this process writes
// per image, that was ~20 pwrites per request.
//
// What it promises: every byte SQLite asked to write is in the file before the write of a
// commit frame's page returns (so before the commit is published in the WAL index for other
// connections, and before the flusher's fdatasync), and before any other call on that file
// (read, size, sync, truncate, lock, close). Writes of a transaction that is not yet committed
// may wait in memory, like SQLite's own page cache: a crash loses them, and their transaction,
// either way. A failed write is reported by the call that would have written it, and the
// gathered bytes are dropped, as SQLite then treats the commit as failed. Other files (the
// database, journals) pass straight through.

namespace ig::store::detail {

// Registers the VFS with SQLite once (thread-safe) and returns its name, for sqlite3_open_v2;
// nullptr (the default VFS) if SQLite has no default VFS to wrap.
const char* coalescing_vfs_name();

}  // namespace ig::store::detail
