#include "worker/shared_limits.h"

#include <algorithm>
#include <sstream>
#include <cstring>

#include "connectors/connector.h" // ParseRateLimit
#include "pg/prelude.h"
#include "settings.h"
#include "worker/shmem.h" // NowMs

extern "C" {
#include "miscadmin.h"
#include "storage/spin.h"
}

namespace switchboard {

namespace {

// The database this process serves (SetRateLimitDatabase); "" in other processes.
std::string this_database;

struct Group {
	char name[64]; // "" when free
	// The strictest rate_limit of the members that used the group within kMemberMemoryMs, and
	// when last: the group's limit, with the one declared in switchboard.rate_limit_groups.
	int member_count;
	long member_window_ms;
	int64_t member_seen_ms;
	int64_t penalty_until_ms;
	uint64_t next_ticket;
	int slot_count;
	RateLimiter::Slot slots[kMaxGroupSlots];
};

// An endpoint's limiter and breaker handed over between the workers of a database
// (SavedEndpoint). Grants are kept in kSavedBuckets buckets: with more, neighbours (by the time
// their slot frees) share a bucket with the latest time among them, which can only delay a
// grant, never allow one early.
constexpr int kMaxSavedEndpoints = 1024;
constexpr int kSavedBuckets = 64;

struct SavedBucket {
	int64_t free_at;
	int32_t slots;
};

struct SavedEntry {
	Oid database; // InvalidOid: free
	char endpoint[64];
	uint64_t base_url_hash;
	int64_t relevant_until_ms; // nothing of it matters after this (the first to be replaced)
	int64_t penalty_until_ms;
	int bucket_count;
	SavedBucket buckets[kSavedBuckets];
	CircuitBreaker::Snapshot breaker;
	char breaker_error[256];
};

struct SharedLimits {
	slock_t mutex;
	Group groups[kMaxRateLimitGroups];
	slock_t saved_mutex;
	SavedEntry saved[kMaxSavedEndpoints];
};

SharedLimits *limits = nullptr;

// A member's limit is forgotten a minute after its last use (an endpoint dropped or raised).
constexpr int64_t kMemberMemoryMs = 60 * 1000;

bool
Limited(int count, long window_ms)
{
	return count > 0 && window_ms > 0;
}

// a allows fewer requests per time than b (at the same rate, the smaller burst).
bool
Stricter(int a_count, long a_window, int b_count, long b_window)
{
	if (!Limited(b_count, b_window))
		return Limited(a_count, a_window);
	if (!Limited(a_count, a_window))
		return false;
	int64_t a = static_cast<int64_t>(a_count) * b_window, b = static_cast<int64_t>(b_count) * a_window;
	return a != b ? a < b : a_count < b_count;
}

uint64_t
HashText(const std::string &text)
{
	uint64_t h = 1469598103934665603ULL; // FNV-1a: the same in every process
	for (unsigned char c : text) {
		h ^= c;
		h *= 1099511628211ULL;
	}
	return h;
}

// A spinlock, held only to copy a group in and out and run the limiter's arithmetic (no
// allocation beyond the limiter's own, no call that can raise).
class ShmemStore : public RateLimitStore {
public:
	bool Run(const std::string &group, RateLimiter *limiter, const std::function<void()> &fn) override
	{
		// An undeclared group (removed from the setting since), or one this database may no
		// longer join, is the endpoint's own limiter.
		if (limits == nullptr || group.empty() || group.size() >= sizeof(Group::name) ||
		    limiter->count() > kMaxGroupSlots || !RateLimitGroupAllows(group, this_database))
			return false;
		// The group's limit: the strictest of its declared limit and its members' own (each
		// member's call runs with it, so that every process counts the same slots the same way).
		const int own_count = limiter->count();
		const long own_window = limiter->window_ms();
		int declared_count = 0;
		long declared_window = 0;
		(void) RateLimitGroupLimit(group, &declared_count, &declared_window);
		const int64_t now = NowMs();
		struct OwnLimit {
			RateLimiter *limiter;
			int count;
			long window;
			~OwnLimit() { limiter->SetLimit(count, window); }
		} restore{limiter, own_count, own_window};
		// Copied out and in around the lock: the limiter's deque may allocate, which must not
		// happen under a spinlock, so the arithmetic runs on the copy and the result is stored
		// back only if nobody changed the group meanwhile (ticket counter as version).
		for (int attempt = 0; attempt < 100; attempt++) {
			Group copy;
			int index = -1;
			SpinLockAcquire(&limits->mutex);
			for (int i = 0; i < kMaxRateLimitGroups && index < 0; i++)
				if (strcmp(limits->groups[i].name, group.c_str()) == 0)
					index = i;
			for (int i = 0; i < kMaxRateLimitGroups && index < 0; i++)
				if (limits->groups[i].name[0] == '\0') {
					index = i;
					Group &fresh = limits->groups[i];
					memset(&fresh, 0, offsetof(Group, slots));
					strlcpy(fresh.name, group.c_str(), sizeof fresh.name);
					fresh.next_ticket = 1;
					fresh.penalty_until_ms = INT64_MIN;
				}
			int group_count = 0;
			long group_window = 0;
			if (index >= 0) {
				Group &g = limits->groups[index];
				if (Limited(own_count, own_window) &&
				    (!Limited(g.member_count, g.member_window_ms) || now - g.member_seen_ms > kMemberMemoryMs ||
				     !Stricter(g.member_count, g.member_window_ms, own_count, own_window))) {
					g.member_count = own_count;
					g.member_window_ms = own_window;
					g.member_seen_ms = now;
				}
				if (now - g.member_seen_ms <= kMemberMemoryMs) {
					group_count = g.member_count;
					group_window = g.member_window_ms;
				}
			}
			if (index >= 0)
				memcpy(&copy, &limits->groups[index],
				       offsetof(Group, slots) + limits->groups[index].slot_count * sizeof(RateLimiter::Slot));
			uint64_t version = index >= 0 ? copy.next_ticket : 0;
			SpinLockRelease(&limits->mutex);
			if (index < 0)
				return false; // every group taken
			if (Stricter(declared_count, declared_window, group_count, group_window)) {
				group_count = declared_count;
				group_window = declared_window;
			}
			limiter->SetLimit(group_count, group_window);
			limiter->Import(RateLimiter::State{copy.penalty_until_ms, copy.next_ticket,
			                                   static_cast<size_t>(copy.slot_count), copy.slots});
			// Tickets are drawn from the group's counter: a second draw must not reuse one.
			fn();
			RateLimiter::State out = limiter->Export();
			if (out.slot_count > static_cast<size_t>(kMaxGroupSlots))
				out.slot_count = kMaxGroupSlots;
			bool stored = false;
			SpinLockAcquire(&limits->mutex);
			Group &shared = limits->groups[index];
			if (strcmp(shared.name, group.c_str()) == 0 && shared.next_ticket == version &&
			    shared.penalty_until_ms == copy.penalty_until_ms && shared.slot_count == copy.slot_count &&
			    memcmp(shared.slots, copy.slots, copy.slot_count * sizeof(RateLimiter::Slot)) == 0) {
				shared.penalty_until_ms = out.penalty_until_ms;
				shared.next_ticket = out.next_ticket;
				shared.slot_count = static_cast<int>(out.slot_count);
				memcpy(shared.slots, out.slots, out.slot_count * sizeof(RateLimiter::Slot));
				stored = true;
			}
			SpinLockRelease(&limits->mutex);
			if (stored)
				return true;
		}
		return false;
	}
};

ShmemStore store;

// The workers of a database hand endpoint states over through shared memory: saved when one
// exits, loaded by the next when it first uses the endpoint.
class SavedEndpoints : public EndpointStateStore {
public:
	bool Load(const std::string &endpoint, const std::string &base_url, SavedEndpoint *out) override
	{
		if (limits == nullptr || endpoint.size() >= sizeof(SavedEntry::endpoint))
			return false;
		bool found = false;
		SpinLockAcquire(&limits->saved_mutex);
		SavedEntry *entry = Find(endpoint, false);
		if (entry != nullptr) {
			memcpy(&copy_, entry, sizeof copy_);
			found = true;
		}
		SpinLockRelease(&limits->saved_mutex);
		if (!found || copy_.base_url_hash != HashText(base_url))
			return false;
		out->base_url = base_url;
		out->penalty_until_ms = copy_.penalty_until_ms;
		out->slots.clear();
		for (int b = 0; b < copy_.bucket_count; b++)
			for (int32_t i = 0; i < copy_.buckets[b].slots; i++)
				out->slots.push_back(RateLimiter::Slot{0, copy_.buckets[b].free_at, false});
		out->breaker = copy_.breaker;
		out->breaker_error = copy_.breaker_error;
		return true;
	}

	void Save(const std::string &endpoint, const SavedEndpoint &state) override
	{
		if (limits == nullptr || endpoint.size() >= sizeof(SavedEntry::endpoint))
			return;
		// Built outside the lock.
		std::vector<int64_t> times;
		for (const auto &slot : state.slots)
			times.push_back(slot.free_at);
		std::sort(times.begin(), times.end());
		memset(&copy_, 0, sizeof copy_);
		copy_.database = MyDatabaseId;
		strlcpy(copy_.endpoint, endpoint.c_str(), sizeof copy_.endpoint);
		copy_.base_url_hash = HashText(state.base_url);
		copy_.penalty_until_ms = state.penalty_until_ms;
		size_t n = times.size();
		size_t buckets = std::min<size_t>(n, kSavedBuckets);
		for (size_t b = 0; b < buckets; b++) {
			size_t from = b * n / buckets, to = (b + 1) * n / buckets;
			copy_.buckets[b] = SavedBucket{times[to - 1], static_cast<int32_t>(to - from)};
		}
		copy_.bucket_count = static_cast<int>(buckets);
		copy_.breaker = state.breaker;
		strlcpy(copy_.breaker_error, state.breaker_error.c_str(), sizeof copy_.breaker_error);
		int64_t relevant = std::max(n > 0 ? times.back() : INT64_MIN, state.penalty_until_ms);
		if (state.breaker.state != CircuitBreaker::State::Ok)
			relevant = std::max(relevant, state.breaker.next_attempt_at_ms + CircuitBreaker::kOpenCapMs);
		copy_.relevant_until_ms = relevant;
		bool nothing = n == 0 && state.breaker.state == CircuitBreaker::State::Ok && relevant <= NowMs();
		SpinLockAcquire(&limits->saved_mutex);
		SavedEntry *entry = Find(endpoint, !nothing);
		if (entry != nullptr) {
			if (nothing)
				entry->database = InvalidOid; // nothing to hand over: the entry is free again
			else
				memcpy(entry, &copy_, sizeof copy_);
		}
		SpinLockRelease(&limits->saved_mutex);
	}

private:
	// Callers hold saved_mutex. With create, the entry to overwrite: this endpoint's, a free
	// one, or the one that matters for the shortest time.
	SavedEntry *Find(const std::string &endpoint, bool create)
	{
		SavedEntry *victim = nullptr;
		for (auto &entry : limits->saved) {
			if (entry.database == MyDatabaseId && strcmp(entry.endpoint, endpoint.c_str()) == 0)
				return &entry;
			if (!create)
				continue;
			if (entry.database == InvalidOid) {
				if (victim == nullptr || victim->database != InvalidOid)
					victim = &entry;
			} else if (victim == nullptr ||
			           (victim->database != InvalidOid && entry.relevant_until_ms < victim->relevant_until_ms)) {
				victim = &entry;
			}
		}
		return victim;
	}

	SavedEntry copy_; // not on the stack: it is large
};

SavedEndpoints saved_endpoints;

} // namespace

namespace {

std::string
Trimmed(const std::string &text)
{
	size_t first = text.find_first_not_of(" \t"), last = text.find_last_not_of(" \t");
	return first == std::string::npos ? std::string() : text.substr(first, last - first + 1);
}

// The entry "name[@db db...][=limit]" of switchboard.rate_limit_groups for group: its limit and
// its database list ("" when either is not given); false if none.
bool
FindGroupEntry(const std::string &group, std::string *limit, std::string *databases = nullptr)
{
	std::string list = setting_rate_limit_groups ? setting_rate_limit_groups : "";
	size_t start = 0;
	while (start <= list.size()) {
		size_t end = list.find(',', start);
		if (end == std::string::npos)
			end = list.size();
		std::string entry = list.substr(start, end - start);
		size_t eq = entry.find('=');
		std::string head = entry.substr(0, eq);
		size_t at = head.find('@');
		if (Trimmed(head.substr(0, at)) == group) {
			*limit = eq == std::string::npos ? std::string() : Trimmed(entry.substr(eq + 1));
			if (databases != nullptr)
				*databases = at == std::string::npos ? std::string() : Trimmed(head.substr(at + 1));
			return true;
		}
		start = end + 1;
	}
	return false;
}

} // namespace

bool
RateLimitGroupDeclared(const std::string &group)
{
	std::string limit;
	return !group.empty() && FindGroupEntry(group, &limit);
}

void
SetRateLimitDatabase(const std::string &database)
{
	this_database = database;
}

bool
RateLimitGroupAllows(const std::string &group, const std::string &database)
{
	std::string limit, databases;
	if (group.empty() || !FindGroupEntry(group, &limit, &databases))
		return false;
	if (databases.empty())
		return true;
	std::istringstream names(databases);
	std::string name;
	while (names >> name)
		if (name == database)
			return true;
	return false;
}

bool
RateLimitGroupLimit(const std::string &group, int *count, long *window_ms)
{
	std::string limit;
	return FindGroupEntry(group, &limit) && !limit.empty() && ParseRateLimit(limit, count, window_ms);
}

bool
RateLimitGroupsValid(const std::string &setting, std::string *error)
{
	size_t start = 0;
	int groups = 0;
	while (start <= setting.size()) {
		size_t end = setting.find(',', start);
		if (end == std::string::npos)
			end = setting.size();
		std::string entry = setting.substr(start, end - start);
		size_t eq = entry.find('=');
		std::string head = entry.substr(0, eq);
		size_t at = head.find('@');
		std::string name = Trimmed(head.substr(0, at));
		if (at != std::string::npos) {
			std::istringstream names(head.substr(at + 1));
			std::string database;
			int listed = 0;
			while (names >> database) {
				listed++;
				if (database.size() > 63) {
					*error = "group \"" + name + "\" lists database \"" + database + "\", longer than 63 characters";
					return false;
				}
			}
			if (listed == 0) {
				*error = "group \"" + name + "\" has an empty database list after @";
				return false;
			}
		}
		int count = 0;
		long window_ms = 0;
		if (!name.empty() && ++groups > kMaxRateLimitGroups) {
			*error = "more than " + std::to_string(kMaxRateLimitGroups) + " groups (shared memory holds that many)";
			return false;
		}
		if (name.empty() && (eq != std::string::npos || !Trimmed(entry).empty())) {
			*error = "an entry has no group name: \"" + Trimmed(entry) + "\"";
			return false;
		}
		if (name.size() > 63) {
			*error = "group name \"" + name + "\" is longer than 63 characters";
			return false;
		}
		if (eq != std::string::npos &&
		    (!ParseRateLimit(Trimmed(entry.substr(eq + 1)), &count, &window_ms) || count > kMaxGroupSlots)) {
			*error = "group \"" + name + "\" has limit \"" + Trimmed(entry.substr(eq + 1)) +
			         "\"; a limit is count/duration like 100/10s (units ms, s, m, h), at most " +
			         std::to_string(kMaxGroupSlots) + " per window";
			return false;
		}
		start = end + 1;
	}
	return true;
}

size_t
SharedLimitsSize()
{
	return sizeof(SharedLimits);
}

void
SharedLimitsInit(void *memory, bool found)
{
	limits = static_cast<SharedLimits *>(memory);
	if (!found) {
		memset(limits, 0, sizeof(SharedLimits));
		SpinLockInit(&limits->mutex);
		SpinLockInit(&limits->saved_mutex);
	}
}

RateLimitStore *
SharedRateLimitStore()
{
	return &store;
}

EndpointStateStore *
SharedEndpointStateStore()
{
	return &saved_endpoints;
}

} // namespace switchboard
