#include "pg/as_role.h"

#include "pg/boundary.h"
#include "pg/spi.h"

extern "C" {
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/syscache.h"
}

namespace switchboard {

AsRole::AsRole(Oid role)
{
	GetUserIdAndSecContext(&saved_user_, &saved_context_);
	int level = 0;
	Guarded([&] { level = NewGUCNestLevel(); });
	guc_nest_level_ = level;
	try {
		Guarded([&] {
			(void) set_config_option("search_path", kRouteSearchPath, PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true,
			                         0, false);
		});
	} catch (...) {
		AtEOXact_GUC(false, guc_nest_level_); // no destructor runs for a constructor that throws
		throw;
	}
	SetUserIdAndSecContext(role, saved_context_ | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
}

AsRole::~AsRole()
{
	// false: roll back even a plain SET made at this level (true would keep it).
	AtEOXact_GUC(false, guc_nest_level_);
	SetUserIdAndSecContext(saved_user_, saved_context_);
}

Oid
TableOwner(Oid relid)
{
	SpiText owner = SpiScalar("SELECT relowner FROM pg_catalog.pg_class WHERE oid = $1::oid", {std::to_string(relid)});
	return owner ? static_cast<Oid>(std::stoul(*owner)) : InvalidOid;
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
	Guarded([&] { name = GetUserNameFromId(role, true); });
	return name ? std::string(name) : "role with OID " + std::to_string(role);
}

} // namespace switchboard
