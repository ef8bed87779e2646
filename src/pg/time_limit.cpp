#include "pg/time_limit.h"

extern "C" {
#include "miscadmin.h"
#include "utils/timeout.h"
}

namespace switchboard {

StatementTimeLimit::StatementTimeLimit(long ms)
{
	// The worker runs no client statements, so STATEMENT_TIMEOUT is otherwise unused here.
	if (ms <= 0 || get_timeout_active(STATEMENT_TIMEOUT))
		return;
	enable_timeout_after(STATEMENT_TIMEOUT, static_cast<int>(ms));
	armed_ = true;
}

StatementTimeLimit::~StatementTimeLimit()
{
	if (!armed_)
		return;
	disable_timeout(STATEMENT_TIMEOUT, false);
	// Fired after the last CHECK_FOR_INTERRUPTS of the limited code: its cancel is stale. Only
	// ours is withdrawn (the indicator says the timer fired); a real cancel stays pending.
	if (get_timeout_indicator(STATEMENT_TIMEOUT, true))
		QueryCancelPending = false;
}

} // namespace switchboard
