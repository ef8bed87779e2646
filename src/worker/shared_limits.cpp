#include "worker/shared_limits.h"

#include <cstring>

#include "pg/prelude.h"
#include "settings.h"

extern "C" {
#include "storage/spin.h"
}

namespace switchboard {

namespace {

struct Group {
	char name[64]; // "" when free
	int64_t penalty_until_ms;
	uint64_t next_ticket;
	int slot_count;
	RateLimiter::Slot slots[kMaxGroupSlots];
};

struct SharedLimits {
	slock_t mutex;
	Group groups[kMaxRateLimitGroups];
};

SharedLimits *limits = nullptr;

// A spinlock, held only to copy a group in and out and run the limiter's arithmetic (no
// allocation beyond the limiter's own, no call that can raise).
class ShmemStore : public RateLimitStore {
public:
	bool Run(const std::string &group, RateLimiter *limiter, const std::function<void()> &fn) override
	{
		// An undeclared group (removed from the setting since) is the endpoint's own limiter.
		if (limits == nullptr || group.empty() || group.size() >= sizeof(Group::name) ||
		    limiter->count() > kMaxGroupSlots || !RateLimitGroupDeclared(group))
			return false;
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
			if (index >= 0)
				memcpy(&copy, &limits->groups[index],
				       offsetof(Group, slots) + limits->groups[index].slot_count * sizeof(RateLimiter::Slot));
			uint64_t version = index >= 0 ? copy.next_ticket : 0;
			SpinLockRelease(&limits->mutex);
			if (index < 0)
				return false; // every group taken
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

} // namespace

bool
RateLimitGroupDeclared(const std::string &group)
{
	std::string list = setting_rate_limit_groups ? setting_rate_limit_groups : "";
	size_t start = 0;
	while (start <= list.size()) {
		size_t end = list.find(',', start);
		if (end == std::string::npos)
			end = list.size();
		std::string name = list.substr(start, end - start);
		size_t first = name.find_first_not_of(" \t"), last = name.find_last_not_of(" \t");
		if (first != std::string::npos && name.substr(first, last - first + 1) == group)
			return true;
		start = end + 1;
	}
	return false;
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
	}
}

RateLimitStore *
SharedRateLimitStore()
{
	return &store;
}

} // namespace switchboard
