// Rate limiters shared by the workers of all databases (endpoint option rate_limit_group), in
// shared memory: a fixed number of groups, each with room for kMaxGroupSlots grants.
#pragma once

#include <cstddef>
#include <string>

#include "delivery/dispatcher.h"

namespace switchboard {

constexpr int kMaxRateLimitGroups = 32;
constexpr int kMaxGroupSlots = 512;

// From RequestSharedMemory: the size to reserve, and the struct's setup at startup.
size_t SharedLimitsSize();
void SharedLimitsInit(void *memory, bool found);

// Whether switchboard.rate_limit_groups declares the group. A group is one limiter for every
// database of the cluster, so only a superuser (the setting) may create one: a role that may
// configure endpoints in one database must not pause or throttle another database's.
bool RateLimitGroupDeclared(const std::string &group);

// Whether the database may join the group: it is declared, and its entry lists no databases
// ("name@db1 db2" in switchboard.rate_limit_groups) or lists this one. A group open to every
// database lets any database's configuration roles pace it (a member's own rate_limit tightens
// the group, a member's remote's Retry-After pauses it): the list is how a superuser shares a
// group only among the databases of one account.
bool RateLimitGroupAllows(const std::string &group, const std::string &database);
// The database the calling process serves, for the check in the shared store (the worker sets
// it at start: the store runs with no transaction open).
void SetRateLimitDatabase(const std::string &database);

// switchboard.rate_limit_groups entries are "name[@db db...]" or "name[@db db...]=count/duration":
// the declared limit of a group, if any (a group's limit is the strictest of that and its members' own
// rate_limit, see README "Cluster-wide rate limits"). RateLimitGroupsValid checks a setting.
bool RateLimitGroupLimit(const std::string &group, int *count, long *window_ms);
bool RateLimitGroupsValid(const std::string &setting, std::string *error);

// The store the worker's dispatcher uses.
RateLimitStore *SharedRateLimitStore();
// Where a worker leaves its endpoints' limiters and breakers for the next worker of its
// database (in shared memory; lost with it at a server restart).
EndpointStateStore *SharedEndpointStateStore();

} // namespace switchboard
