#include "pg/route_budget.h"

#include <chrono>
#include <climits>
#include <cstring>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pg/spi.h"
#include "settings.h"

extern "C" {
#include "miscadmin.h"
#include "storage/ipc.h"
}

namespace switchboard {

int64_t
SteadyMs()
{
	return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
	    .count();
}

namespace {

// The route whose SQL runs now, in a page of a file mapped MAP_SHARED (as pg/time_limit.cpp
// keeps the run in step SQL): it outlives the worker, whether it exits FATAL past the grace
// or the server crashes. One per database.
struct RouteSqlPage {
	uint32_t in_sql;  // the length of in_sql_route; 0: no route's SQL is running
	uint32_t last;    // the length of last_route: the route that ended the last worker(s)
	uint32_t repeats; // how many workers in a row it ended
	uint32_t reserved;
	char in_sql_route[1024];
	char last_route[1024];
};
RouteSqlPage *page = nullptr;
bool page_tried = false;
int active_budgets = 0;

RouteSqlPage *
Page()
{
	if (page_tried)
		return page;
	page_tried = true;
	(void) mkdir("switchboard", S_IRWXU);
	const std::string path = "switchboard/route_sql." + std::to_string(MyDatabaseId);
	const int fd = open(path.c_str(), O_RDWR | O_CREAT, S_IRUSR | S_IWUSR);
	if (fd < 0)
		return nullptr;
	if (ftruncate(fd, sizeof(RouteSqlPage)) == 0) {
		void *at = mmap(nullptr, sizeof(RouteSqlPage), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (at != MAP_FAILED)
			page = static_cast<RouteSqlPage *>(at);
	}
	close(fd);
	return page;
}

// At exit: unless the worker is ending because its SQL ignored the cancel past the grace,
// no route's SQL is to blame (a stop, an error elsewhere).
void
ForgetRouteInSql(int, Datum)
{
	if (page != nullptr && !TimeLimitGraceExpired())
		page->in_sql = 0;
}

} // namespace

RouteSqlBudget::RouteSqlBudget(const std::string &route)
{
	if (!IsBackgroundWorker || setting_route_sql_timeout_ms <= 0 || active_budgets > 0)
		return;
	full_ms_ = setting_route_sql_timeout_ms;
	deadline_ms_ = SteadyMs() + full_ms_;
	limit_.emplace(full_ms_, 0);
	active_budgets++;
	RouteSqlPage *p = Page();
	if (p != nullptr && route.size() < sizeof(p->in_sql_route)) {
		static bool hooked = false;
		if (!hooked) {
			before_shmem_exit(ForgetRouteInSql, 0);
			hooked = true;
		}
		memcpy(p->in_sql_route, route.data(), route.size());
		__atomic_store_n(&p->in_sql, static_cast<uint32_t>(route.size()), __ATOMIC_RELEASE);
		marked_ = true;
	}
}

RouteSqlBudget::~RouteSqlBudget()
{
	if (!limit_)
		return;
	limit_.reset();
	active_budgets--;
	// The worker ends at its next interrupt check (past the grace): the mark stays.
	if (marked_ && !TimeLimitGraceExpired()) {
		RouteSqlPage *p = page;
		// It ended in time: a route that ended workers before is forgiven.
		if (p->last == p->in_sql && memcmp(p->last_route, p->in_sql_route, p->in_sql) == 0) {
			p->last = 0;
			p->repeats = 0;
		}
		__atomic_store_n(&p->in_sql, 0u, __ATOMIC_RELEASE);
	}
}

long
RouteSqlBudget::RemainingMs() const
{
	if (!limit_)
		return LONG_MAX / 2;
	return static_cast<long>(deadline_ms_ - SteadyMs());
}

bool
RouteSqlBudget::Active()
{
	return active_budgets > 0;
}

std::string
SlowRouteReason(const std::string &what, const std::string &error)
{
	return "held for a minute (changes kept): " + what + " ran past switchboard.route_sql_timeout (" +
	       std::to_string(setting_route_sql_timeout_ms) + " ms) on a single change: " + error;
}

void
NoteRouteError(const std::string &route, const std::string &error)
{
	SpiExecPrepared("INSERT INTO switchboard.route_stats AS s (route, last_error, last_error_at) "
	                "VALUES ($1, $2, now()) ON CONFLICT (route) DO UPDATE "
	                "SET last_error = excluded.last_error, last_error_at = excluded.last_error_at",
	                {route, error});
}

RouteHolds &
WorkerRouteHolds()
{
	static RouteHolds holds;
	static bool looked = false;
	if (looked)
		return holds;
	looked = true;
	RouteSqlPage *p = Page();
	if (p == nullptr || p->in_sql == 0 || p->in_sql >= sizeof(p->in_sql_route))
		return holds;
	const std::string route(p->in_sql_route, p->in_sql);
	if (p->last == p->in_sql && memcmp(p->last_route, p->in_sql_route, p->in_sql) == 0)
		p->repeats++;
	else {
		memcpy(p->last_route, p->in_sql_route, p->in_sql);
		p->last = p->in_sql;
		p->repeats = 1;
	}
	p->in_sql = 0;
	const uint32_t doublings = std::min<uint32_t>(p->repeats - 1, 6);
	const int64_t hold_ms = std::min<int64_t>(kSlowRouteHoldMs << doublings, 3600 * 1000);
	holds.Hold(route, SteadyMs() + hold_ms);
	NoteRouteError(route, "held for " + std::to_string(hold_ms / 1000) +
	                          " s (changes kept): the previous worker ended while this route's filters, key or "
	                          "mappings were running (they went on " +
	                          std::to_string(StatementTimeLimit::kGraceMs / 1000) +
	                          " s past switchboard.route_sql_timeout, ignoring the cancel, or the server crashed in "
	                          "them); " +
	                          std::to_string(p->repeats) + " time(s) in a row");
	return holds;
}

} // namespace switchboard
