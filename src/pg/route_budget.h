// One time budget per route per round of the worker for the route's own SQL (its filters, key
// and mappings as changes are translated, set-based, row by row, or as runs are adopted):
// switchboard.route_sql_timeout in all, one StatementTimeLimit armed for it. Past the budget,
// what was translated goes on, the rest waits, and the route is deferred or held (RouteHolds,
// one for the database's worker), so one route's expressions cost the others about one
// route_sql_timeout a round.
#pragma once

#include <optional>
#include <string>

#include "delivery/route_holds.h"
#include "pg/time_limit.h"

namespace switchboard {

// How long a route whose expressions ran past route_sql_timeout on a single change is held.
constexpr int64_t kSlowRouteHoldMs = 60 * 1000;
// The longest a route whose budget ran out with changes left comes after the other routes':
// should they fill every claim, it has its turn in queue order again then.
constexpr int64_t kDeferMs = 10 * 1000;

class RouteSqlBudget {
public:
	// Armed in the background worker only: a DBA's preview() or resync() runs under the
	// session's statement_timeout. While it lives, the route is marked in a page that outlives
	// the worker (see TakeRouteEndedInSql).
	explicit RouteSqlBudget(const std::string &route);
	~RouteSqlBudget();
	RouteSqlBudget(const RouteSqlBudget &) = delete;
	RouteSqlBudget &operator=(const RouteSqlBudget &) = delete;

	bool Limited() const { return limit_.has_value(); }
	long FullMs() const { return full_ms_; }
	// What is left of the budget (a large number when not limited).
	long RemainingMs() const;
	static bool Active(); // a budget is armed: the SQL run now is bounded by it

private:
	std::optional<StatementTimeLimit> limit_;
	long full_ms_ = 0;
	int64_t deadline_ms_ = 0; // SteadyMs
	bool marked_ = false;
};

int64_t SteadyMs();

// The routes set aside by this database's worker (push path and runs alike). On first use in
// a worker, a route whose SQL was running when the previous worker ended (it went on past the
// grace after route_sql_timeout, ignoring the cancel, and the worker exited FATAL; or the
// server crashed in it) is held: a minute, doubled each time it happens again in a row, at most
// an hour; and route_stats says so (inside a transaction).
RouteHolds &WorkerRouteHolds();

// The reason a route is held after its SQL cut off (for route_stats.last_error).
std::string SlowRouteReason(const std::string &what, const std::string &error);

// Records last_error of a route (route_status shows it). Inside a transaction.
void NoteRouteError(const std::string &route, const std::string &error);

} // namespace switchboard
