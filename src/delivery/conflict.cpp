#include "delivery/conflict.h"
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

ConflictWinner
SettleConflict(const std::string &rule, int64_t remote_modified_ms, int64_t local_newest_ms)
{
	if (rule == "remote")
		return ConflictWinner::Remote;
	if (rule == "newest" && remote_modified_ms > local_newest_ms)
		return ConflictWinner::Remote;
	return ConflictWinner::Local;
}

} // namespace switchboard
