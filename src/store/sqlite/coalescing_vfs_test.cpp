#include "store/sqlite/coalescing_vfs.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <string>

#include "core/temp_dir_for_tests.h"
#include "store/sqlite/raw_db_for_tests.h"

namespace ig::store::detail {
namespace {

constexpr int kCreate = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;

class CoalescingVfsTest : public testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    path_ = (dir_.path() / "t.db").string();
    ASSERT_NE(coalescing_vfs_name(), nullptr);
  }

  TempDir dir_{"vfs"};
  std::string path_;
};

// Another connection (plain VFS) reads a commit straight after it: its frames are in the file
// before SQLite publishes the commit, whatever stayed gathered before it.
TEST_F(CoalescingVfsTest, EveryCommitIsInTheFileForOtherConnections) {
  RawDb writer(path_, coalescing_vfs_name(), kCreate);
  ASSERT_EQ(writer.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                        "PRAGMA wal_autocheckpoint=0; CREATE TABLE t(k INTEGER, v BLOB)"),
            SQLITE_OK);
  RawDb reader(path_);
  for (int i = 1; i <= 200; ++i) {
    // 1 to 40 pages per commit, so some commits outgrow the 1 MiB gathering buffer.
    const int bytes = 1 + (i * 7919) % (160 * 1024);
    ASSERT_EQ(writer.exec("BEGIN; INSERT INTO t VALUES(" + std::to_string(i) + ", randomblob(" +
                          std::to_string(bytes) + ")); INSERT INTO t VALUES(-" + std::to_string(i) +
                          ", zeroblob(" + std::to_string(bytes / 3) + ")); COMMIT"),
              SQLITE_OK);
    ASSERT_EQ(reader.last_column("SELECT count(*) || ':' || max(k) FROM t"),
              std::to_string(2 * i) + ":" + std::to_string(i) + "\n");
  }
  EXPECT_EQ(reader.last_column("PRAGMA integrity_check"), "ok\n");
}

// A transaction that spills to the WAL before it ends, then rolls back: its frames are
// overwritten by the next commit at the same offsets, and nothing of it survives.
TEST_F(CoalescingVfsTest, SpilledThenRolledBackWritesLeaveNoTrace) {
  {
    RawDb writer(path_, coalescing_vfs_name(), kCreate);
    ASSERT_EQ(writer.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                          "PRAGMA wal_autocheckpoint=0; PRAGMA cache_size=10;"
                          "CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)"),
              SQLITE_OK);
    ASSERT_EQ(writer.exec("INSERT INTO t VALUES(1, randomblob(5000))"), SQLITE_OK);
    ASSERT_EQ(writer.exec("BEGIN; WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n "
                          "WHERE i < 3000) INSERT INTO t SELECT i, randomblob(900) FROM n"),
              SQLITE_OK);
    ASSERT_EQ(writer.exec("ROLLBACK"), SQLITE_OK);
    ASSERT_EQ(writer.exec("INSERT INTO t VALUES(2, randomblob(100))"), SQLITE_OK);
    // Closing the last connection checkpoints through the VFS's reads of the WAL.
  }
  RawDb reader(path_);
  EXPECT_EQ(reader.last_column("SELECT count(*) || ':' || sum(length(v)) FROM t"), "2:5100\n");
  EXPECT_EQ(reader.last_column("PRAGMA integrity_check"), "ok\n");
}

// What a connection wrote is all in the WAL when it closes without checkpointing: a reopen
// without the VFS (as after a crash of the process) recovers every commit from it.
TEST_F(CoalescingVfsTest, TheWalLeftBehindHoldsEveryCommit) {
  {
    RawDb writer(path_, coalescing_vfs_name(), kCreate);
    ASSERT_EQ(writer.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                          "PRAGMA wal_autocheckpoint=0; CREATE TABLE t(k INTEGER, v TEXT)"),
              SQLITE_OK);
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);  // a second connection...
    for (int i = 0; i < 50; ++i) {
      ASSERT_EQ(writer.exec("INSERT INTO t VALUES(" + std::to_string(i) + ", 'row')"), SQLITE_OK);
    }
    int persist = 1;
    ASSERT_EQ(sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &persist), SQLITE_OK);
    sqlite3_close(db);  // ...keeps the writer from being the last one to close
    std::filesystem::copy_file(path_ + "-wal", dir_.path() / "copy.db-wal");
    std::filesystem::copy_file(path_, dir_.path() / "copy.db");
  }
  RawDb reader((dir_.path() / "copy.db").string());
  EXPECT_EQ(reader.last_column("SELECT count(*) || ':' || sum(k) FROM t"), "50:1225\n");
  EXPECT_EQ(reader.last_column("PRAGMA integrity_check"), "ok\n");
}

}  // namespace
}  // namespace ig::store::detail
