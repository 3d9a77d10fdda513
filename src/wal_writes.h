#ifndef WAL_WRITES_H
#define WAL_WRITES_H

#include <sqlite3.h>

/* The VFS that writes each transaction's WAL frames in two calls. */
#define WAL_WRITES_VFS "chat-wal-writes"

/* Registers it (not as the default), once per process: SQLITE_OK or an
 * SQLite error code. */
int wal_writes_register(void);

#endif
