#include "pg/as_role.h"

#include "pg/boundary.h"
#include "pg/spi.h"

extern "C" {
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/syscache.h"
}

namespace switchboard {

AsRole::AsRole(Oid role, const char *search_path)
{
	// Saved whole, so the destructor gives back exactly the caller's identity, including
	// restriction bits the caller already had.
	GetUserIdAndSecContext(&saved_user_, &saved_context_);
	// A setting level of our own, as a function with a SET clause opens: whatever is set from
	// here on (our search_path, a set_config() by user code) is undone at this level alone.
	int level = 0;
	Guarded([&] { level = NewGUCNestLevel(); });
	guc_nest_level_ = level;
	try {
		// GUC_ACTION_SAVE: the old value returns when the level ends, like SET LOCAL.
		Guarded([&] {
			(void) set_config_option("search_path", search_path, PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0,
			                         false);
		});
	} catch (...) {
		AtEOXact_GUC(false, guc_nest_level_); // no destructor runs for a constructor that throws
		throw;
	}
	// Last, so a failure above never leaves the user switched. The caller's bits are kept;
	// LOCAL_USERID_CHANGE forbids SET ROLE / SET SESSION AUTHORIZATION in between, and
	// RESTRICTED_OPERATION refuses temp tables and other session state that would outlive
	// the scope.
	SetUserIdAndSecContext(role, saved_context_ | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
}

AsRole::~AsRole()
{
	// false: roll back even a plain SET made at this level (true would keep it).
	AtEOXact_GUC(false, guc_nest_level_);
	// In the worker, a session-level advisory lock user code took (pg_advisory_lock in a step or
	// a mapping) would be held for the worker's life, by the database's one worker. The worker
	// itself holds none. Not in a backend: a preview() or resync() leaves the caller's locks be.
	if (IsBackgroundWorker) {
		try {
			Guarded([] { LockReleaseSession(USER_LOCKMETHOD); });
		} catch (const std::exception &e) {
			try { // a destructor must not throw: the log line is given up rather than the process
				Report(LOG, std::string("switchboard: could not release advisory locks: ") + e.what());
			} catch (...) {
			}
		}
	}
	// In reverse order of the constructor.
	SetUserIdAndSecContext(saved_user_, saved_context_);
}

Oid
TableOwner(Oid relid)
{
	SpiText owner = SpiScalar("SELECT relowner FROM pg_catalog.pg_class WHERE oid = $1::oid", {std::to_string(relid)});
	return owner ? static_cast<Oid>(std::stoul(*owner)) : InvalidOid;
}

Oid
ExtensionOwner()
{
	return static_cast<Oid>(
	    std::stoul(*SpiScalar("SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'switchboard'")));
}

bool
CurrentUserHasPrivsOf(Oid role)
{
	bool has = false;
	Guarded([&] { has = has_privs_of_role(GetUserId(), role); });
	return has;
}

bool
RoleExists(Oid role)
{
	bool exists = false;
	Guarded([&] { exists = SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(role)); });
	return exists;
}

std::string
RoleName(Oid role)
{
	const char *name = nullptr;
	// noerr: a dropped owner must still be nameable in the message that says so.
	Guarded([&] { name = GetUserNameFromId(role, true); });
	return name ? std::string(name) : "role with OID " + std::to_string(role);
}

} // namespace switchboard
