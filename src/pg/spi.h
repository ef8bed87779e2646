// SPI from C++: queries take and return text, copied into C++ containers, through Guarded()
// so a Postgres error surfaces as a PgError. Enough for configuration and control paths.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace switchboard {

using SpiText = std::optional<std::string>; // nullopt is SQL NULL
using SpiRow = std::vector<SpiText>;

struct SpiResult {
	std::vector<std::string> columns;
	std::vector<SpiRow> rows;
	uint64_t processed = 0;
};

// SPI_connect on construction, SPI_finish on destruction.
class SpiConnection {
public:
	SpiConnection();
	~SpiConnection();
	SpiConnection(const SpiConnection &) = delete;
	SpiConnection &operator=(const SpiConnection &) = delete;
};

// Runs sql with text parameters $1..$n (cast them in the SQL as needed).
SpiResult SpiExec(const std::string &sql, const std::vector<SpiText> &args = {}, bool read_only = false);

// The same, keeping the statement's plan for the life of the process (the worker's hot path:
// its statements repeat every round). Postgres' plan cache replans after schema changes.
SpiResult SpiExecPrepared(const std::string &sql, const std::vector<SpiText> &args = {}, bool read_only = false);

// The same, planned and run with the named planner settings off (e.g. {"enable_sort"}), for
// the worker's queue statements whose right plan does not depend on the table's statistics:
// the queue's churn outruns them (a queue analyzed nearly empty, then a backlog of 100,000
// changes, was claimed by a sequential scan and a sort of the whole queue per claim).
SpiResult SpiExecPlanned(const std::string &sql, const std::vector<SpiText> &args,
                         const std::vector<const char *> &disabled);

// First column of the first row, or nullopt when there is no row or it is NULL.
SpiText SpiScalar(const std::string &sql, const std::vector<SpiText> &args = {});

// Text argument n of a SQL-callable function (detoasted through Guarded).
std::string TextArg(struct FunctionCallInfoBaseData *fcinfo, int n);

// "DELETE FROM table WHERE ctid = ANY(ARRAY(SELECT ctid ... WHERE cond LIMIT n)) AND cond": the
// worker's prunes of its history tables. By ctid, a TID scan whatever the statistics say
// (id IN (SELECT id ... LIMIT n) on a table last analyzed nearly empty was planned as a nested
// loop of scans: one prune of 126,000 inbound events ran for minutes while the worker applied
// nothing). cond is repeated outside, so a row changed since the subquery read it (a dead
// letter retried meanwhile) is checked again in its new version, never deleted on the old one.
// Run with SpiExecPlanned(..., kNoSeqScan): a table whose statistics say it is tiny would
// otherwise be scanned whole, every row compared with each chosen ctid.
std::string PruneByCtid(const std::string &table, const std::string &cond, int limit);

// For SpiExecPlanned: a statement over the worker's own tables that an index always serves best
// (a pending partial index, a prune by ctid). Their statistics lag behind (autovacuum off, or
// not yet come round), and planned against a table analyzed nearly empty they were scanned.
inline const std::vector<const char *> kNoSeqScan{"enable_seqscan"};
// For SpiExecPlanned: lookups of a list of keys or ids, written `col IN (SELECT unnest($n))`,
// are a nested loop probing the index once per key. With statistics of a nearly empty table
// the planner scanned the table (or all of the route's index entries) instead, comparing each
// row with the list, and `= ANY($n::text[])` cast the text parameter to an array again for each
// row: a lookup of a WooCommerce page's 100 keys took 30 ms, marking 100 inbound events applied
// 250 ms.
inline const std::vector<const char *> kByIndex{"enable_seqscan", "enable_hashjoin", "enable_mergejoin"};

std::string QuoteIdent(const std::string &ident);
std::string QuoteLiteral(const std::string &text);

} // namespace switchboard
