#include "delivery/route_holds.h"

#include <algorithm>
#include <cmath>

namespace switchboard {

void
RouteHolds::Hold(const std::string &route, int64_t until_ms)
{
	int64_t &until = held_[route];
	until = std::max(until, until_ms);
}

std::vector<std::string>
RouteHolds::Held(int64_t now_ms)
{
	std::vector<std::string> routes;
	for (auto it = held_.begin(); it != held_.end();) {
		if (it->second <= now_ms) {
			it = held_.erase(it);
			continue;
		}
		routes.push_back(it->first);
		++it;
	}
	return routes;
}

bool
RouteHolds::IsHeld(const std::string &route, int64_t now_ms)
{
	auto it = held_.find(route);
	if (it == held_.end())
		return false;
	if (it->second > now_ms)
		return true;
	held_.erase(it);
	return false;
}

std::vector<std::string>
RouteHolds::Deferred(int64_t now_ms)
{
	std::vector<std::string> routes;
	for (auto it = deferred_.begin(); it != deferred_.end();) {
		if (it->second <= now_ms) {
			it = deferred_.erase(it);
			continue;
		}
		if (!IsHeld(it->first, now_ms))
			routes.push_back(it->first);
		++it;
	}
	return routes;
}

size_t
NextChunk(size_t learned, size_t left, double ms_per_row, long remaining_ms)
{
	if (left == 0 || remaining_ms <= 0)
		return 0;
	size_t n = learned == 0 ? left : std::min(learned, left);
	if (ms_per_row > 0) {
		// Four fifths of what is left, so that a row a little slower than the last ones does not
		// take the whole chunk with it.
		const double fits = std::floor(0.8 * static_cast<double>(remaining_ms) / ms_per_row);
		if (fits < 1)
			return 0;
		if (fits < static_cast<double>(n))
			n = static_cast<size_t>(fits);
	}
	return n;
}

size_t
LearnChunk(size_t n, bool timed_out, long elapsed_ms, long full_ms, size_t max)
{
	if (n == 0)
		return 0;
	if (timed_out)
		return std::max<size_t>(1, n / 2);
	if (full_ms > 0 && elapsed_ms * 4 < full_ms)
		return std::min(max, n * 2);
	return std::min(max, n);
}

} // namespace switchboard
