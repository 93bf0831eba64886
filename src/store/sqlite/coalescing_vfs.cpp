#include "store/sqlite/coalescing_vfs.h"

#include <sqlite3.h>

#include <cstdlib>
#include <cstring>

namespace ig::store::detail {
namespace {

// A commit larger than this goes out in several writes (still far fewer than two per page).
constexpr int kBufferCapacity = 1 << 20;
// The unix VFS writes at most 128 KiB - 1 per call (seekAndWriteFd masks the length with
// 0x1ffff) and reports a shorter write as SQLITE_FULL, so the gathered bytes go in slices.
constexpr int kMaxWriteBytes = 120 * 1024;
constexpr int kFrameHeaderBytes = 24;  // a WAL frame's header; pages are at least 512 bytes

struct File {
  sqlite3_file base;      // pMethods: ours once the real file is open
  sqlite3_file* real;     // the default VFS's file, in the same allocation (after kHead)
  bool wal;               // only WAL files gather their writes
  bool flush_after_next;  // a commit frame's header went in: its page is the commit's last write
  char* data;             // gathered bytes (malloc'd on first use), for file offsets start..+len
  int len;
  sqlite3_int64 start;
};
constexpr int kHead = (sizeof(File) + 15) / 16 * 16;

sqlite3_vfs* g_real = nullptr;
sqlite3_vfs g_vfs;
sqlite3_io_methods g_methods[3];  // one per io_methods version of the wrapped file

File* as_file(sqlite3_file* p) { return reinterpret_cast<File*>(p); }
sqlite3_file* real(sqlite3_file* p) { return as_file(p)->real; }

int flush(File* f) {
  int rc = SQLITE_OK;
  for (int done = 0; rc == SQLITE_OK && done < f->len; done += kMaxWriteBytes) {
    const int n = f->len - done < kMaxWriteBytes ? f->len - done : kMaxWriteBytes;
    rc = f->real->pMethods->xWrite(f->real, f->data + done, n, f->start + done);
  }
  f->len = 0;  // written, or failed: SQLite then treats these writes (their commit) as failed
  return rc;
}

int flush(sqlite3_file* p) { return flush(as_file(p)); }

int x_close(sqlite3_file* p) {
  File* f = as_file(p);
  const int flushed = flush(f);
  const int closed = f->real->pMethods->xClose(f->real);
  std::free(f->data);
  f->data = nullptr;
  return flushed != SQLITE_OK ? flushed : closed;
}

int x_read(sqlite3_file* p, void* out, int amt, sqlite3_int64 offset) {
  if (int rc = flush(p); rc != SQLITE_OK) return rc;
  return real(p)->pMethods->xRead(real(p), out, amt, offset);
}

bool is_commit_frame_header(const void* bytes, int amt) {
  if (amt != kFrameHeaderBytes) return false;
  // Bytes 4-7: the database size in pages after a commit, zero in every other frame.
  const auto* b = static_cast<const unsigned char*>(bytes);
  return (b[4] | b[5] | b[6] | b[7]) != 0;
}

int x_write(sqlite3_file* p, const void* bytes, int amt, sqlite3_int64 offset) {
  File* f = as_file(p);
  if (!f->wal) return f->real->pMethods->xWrite(f->real, bytes, amt, offset);
  const bool contiguous = f->len > 0 && offset == f->start + f->len;
  if (f->len > 0 && (!contiguous || f->len + amt > kBufferCapacity)) {
    if (int rc = flush(f); rc != SQLITE_OK) return rc;
  }
  if (amt > kMaxWriteBytes) return f->real->pMethods->xWrite(f->real, bytes, amt, offset);
  if (f->data == nullptr) {
    f->data = static_cast<char*>(std::malloc(kBufferCapacity));
    if (f->data == nullptr) return f->real->pMethods->xWrite(f->real, bytes, amt, offset);
  }
  if (f->len == 0) f->start = offset;
  std::memcpy(f->data + f->len, bytes, static_cast<std::size_t>(amt));
  f->len += amt;
  if (f->flush_after_next) {
    f->flush_after_next = false;
    return flush(f);
  }
  f->flush_after_next = is_commit_frame_header(bytes, amt);
  return SQLITE_OK;
}

int x_truncate(sqlite3_file* p, sqlite3_int64 size) {
  if (int rc = flush(p); rc != SQLITE_OK) return rc;
  return real(p)->pMethods->xTruncate(real(p), size);
}

int x_sync(sqlite3_file* p, int flags) {
  if (int rc = flush(p); rc != SQLITE_OK) return rc;
  return real(p)->pMethods->xSync(real(p), flags);
}

int x_file_size(sqlite3_file* p, sqlite3_int64* size) {
  if (int rc = flush(p); rc != SQLITE_OK) return rc;
  return real(p)->pMethods->xFileSize(real(p), size);
}

int x_lock(sqlite3_file* p, int level) { return real(p)->pMethods->xLock(real(p), level); }

int x_unlock(sqlite3_file* p, int level) {
  if (int rc = flush(p); rc != SQLITE_OK) return rc;
  return real(p)->pMethods->xUnlock(real(p), level);
}

int x_check_reserved_lock(sqlite3_file* p, int* out) {
  return real(p)->pMethods->xCheckReservedLock(real(p), out);
}

int x_file_control(sqlite3_file* p, int op, void* arg) {
  if (int rc = flush(p); rc != SQLITE_OK) return rc;
  return real(p)->pMethods->xFileControl(real(p), op, arg);
}

int x_sector_size(sqlite3_file* p) { return real(p)->pMethods->xSectorSize(real(p)); }

int x_device_characteristics(sqlite3_file* p) {
  return real(p)->pMethods->xDeviceCharacteristics(real(p));
}

int x_shm_map(sqlite3_file* p, int page, int page_size, int extend, void volatile** out) {
  return real(p)->pMethods->xShmMap(real(p), page, page_size, extend, out);
}

int x_shm_lock(sqlite3_file* p, int offset, int n, int flags) {
  return real(p)->pMethods->xShmLock(real(p), offset, n, flags);
}

void x_shm_barrier(sqlite3_file* p) { real(p)->pMethods->xShmBarrier(real(p)); }

int x_shm_unmap(sqlite3_file* p, int delete_flag) {
  return real(p)->pMethods->xShmUnmap(real(p), delete_flag);
}

int x_fetch(sqlite3_file* p, sqlite3_int64 offset, int amt, void** out) {
  if (int rc = flush(p); rc != SQLITE_OK) return rc;
  return real(p)->pMethods->xFetch(real(p), offset, amt, out);
}

int x_unfetch(sqlite3_file* p, sqlite3_int64 offset, void* ptr) {
  return real(p)->pMethods->xUnfetch(real(p), offset, ptr);
}

int x_open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* file, int flags, int* out_flags) {
  File* f = as_file(file);
  std::memset(f, 0, sizeof(File));
  f->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(file) + kHead);
  const int rc = g_real->xOpen(g_real, name, f->real, flags, out_flags);
  if (rc != SQLITE_OK) {
    if (f->real->pMethods != nullptr) f->real->pMethods->xClose(f->real);
    f->base.pMethods = nullptr;
    return rc;
  }
  f->wal = (flags & SQLITE_OPEN_WAL) != 0;
  const int version = f->real->pMethods->iVersion;
  f->base.pMethods = &g_methods[(version < 1 ? 1 : version > 3 ? 3 : version) - 1];
  return SQLITE_OK;
}

void build_methods() {
  // Fields in sqlite3_io_methods order; a lower version leaves the later ones null.
  const sqlite3_io_methods all = {3,
                                  x_close,
                                  x_read,
                                  x_write,
                                  x_truncate,
                                  x_sync,
                                  x_file_size,
                                  x_lock,
                                  x_unlock,
                                  x_check_reserved_lock,
                                  x_file_control,
                                  x_sector_size,
                                  x_device_characteristics,
                                  x_shm_map,
                                  x_shm_lock,
                                  x_shm_barrier,
                                  x_shm_unmap,
                                  x_fetch,
                                  x_unfetch};
  for (int v = 1; v <= 3; ++v) {
    sqlite3_io_methods& m = g_methods[v - 1];
    m = all;
    m.iVersion = v;
    if (v < 2) {
      m.xShmMap = nullptr;
      m.xShmLock = nullptr;
      m.xShmBarrier = nullptr;
      m.xShmUnmap = nullptr;
    }
    if (v < 3) {
      m.xFetch = nullptr;
      m.xUnfetch = nullptr;
    }
  }
}

}  // namespace

const char* coalescing_vfs_name() {
  static const char* const name = []() -> const char* {
    g_real = sqlite3_vfs_find(nullptr);
    if (g_real == nullptr) return nullptr;
    build_methods();
    // Everything but opening is the wrapped VFS's own (pAppData included: unix reads it).
    g_vfs = *g_real;
    g_vfs.szOsFile = kHead + g_real->szOsFile;
    g_vfs.pNext = nullptr;
    g_vfs.zName = "ig-coalescing";
    g_vfs.xOpen = x_open;
    if (sqlite3_vfs_register(&g_vfs, 0) != SQLITE_OK) return nullptr;
    return g_vfs.zName;
  }();
  return name;
}

}  // namespace ig::store::detail
