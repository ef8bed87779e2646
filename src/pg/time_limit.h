// A time limit on user-written SQL the worker runs (a step's run_if, input, writeback): a
// pg_sleep or a lock wait in a step must not stall every other run of the database.
#pragma once

#include "pg/prelude.h"

namespace switchboard {

// While it lives, statements are cancelled after ms milliseconds with Postgres' own "canceling
// statement due to statement timeout" (STATEMENT_TIMEOUT, as statement_timeout does for a
// client), which reaches the caller as a PgError like any other. On destruction the timer is
// stopped, and a cancel it requested that nothing has seen yet is withdrawn, so it cannot
// cancel whatever the worker runs next. ms <= 0: no limit.
class StatementTimeLimit {
public:
	explicit StatementTimeLimit(long ms);
	~StatementTimeLimit();
	StatementTimeLimit(const StatementTimeLimit &) = delete;
	StatementTimeLimit &operator=(const StatementTimeLimit &) = delete;

private:
	bool armed_ = false;
};

} // namespace switchboard
