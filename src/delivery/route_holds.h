// Routes set aside by the database's worker, and how many changes of a route one statement
// translates: the one mechanism behind "held for a minute" of the push path (store/queue_store)
// and of runs (orchestrate/runs), so that a route whose filters, key or mappings are slow costs
// the other routes about one switchboard.route_sql_timeout per round, not its whole backlog.
// Server-free: times are the caller's milliseconds (a steady clock).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace switchboard {

class RouteHolds {
public:
	// Not fetched at all until until_ms (a longer hold already there stays).
	void Hold(const std::string &route, int64_t until_ms);
	// Fetched after every other route's changes until until_ms, or until it finishes a round
	// within its budget: its time budget ran out with changes left, so the others have their
	// turn first (and, when they always fill the claim, it has its own again at until_ms).
	void Defer(const std::string &route, int64_t until_ms) { deferred_[route] = until_ms; }
	// The route finished its round (nothing left over): no longer deferred.
	void Served(const std::string &route) { deferred_.erase(route); }
	// The routes held at now_ms (the expired holds are forgotten).
	std::vector<std::string> Held(int64_t now_ms);
	// The routes deferred at now_ms and not held (the expired deferrals are forgotten).
	std::vector<std::string> Deferred(int64_t now_ms);
	bool IsHeld(const std::string &route, int64_t now_ms);

private:
	std::map<std::string, int64_t> held_;     // route -> until
	std::map<std::string, int64_t> deferred_; // route -> until
};

// How many changes the next set-based statement of a route translates. learned: what the
// route's last statements showed will fit (kept between rounds; 0: nothing learned yet, the
// whole claim); left: changes still to translate; ms_per_row: measured this round (<= 0: not
// yet); remaining_ms: what is left of the route's budget. Returns 0 when the next change is
// not expected to fit in what is left: the rest waits for the next round.
size_t NextChunk(size_t learned, size_t left, double ms_per_row, long remaining_ms);

// What a route learns from one set-based statement of n changes: halved when it was cut off
// by its time limit (limit_ms, what it was given), doubled when it took under a quarter of
// the full limit (full_ms; so that growing never reaches the limit), else n; at most max.
size_t LearnChunk(size_t n, bool timed_out, long elapsed_ms, long full_ms, size_t max);

} // namespace switchboard
