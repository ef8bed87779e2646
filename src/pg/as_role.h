// Running code as another role, as a SECURITY DEFINER function does (SPEC §8 "Who acts"):
// every expression of a route and every write a pull makes run as the route's owner, so a
// configuration can do no more than that role could with its own privileges.
#pragma once

#include "pg/prelude.h"

namespace switchboard {

// The search_path route expressions are resolved with, at write time and at run time alike:
// pg_catalog first (implicitly), then the owner's schema and public, the temporary schema last.
constexpr const char *kRouteSearchPath = "\"$user\", public, pg_temp";

// The search_path of switchboard's own statements run as the extension owner (AsRole with it):
// nothing a role may create is looked up (an operator in public that fits the argument types
// better would otherwise run as the extension owner).
constexpr const char *kOwnSearchPath = "pg_catalog, pg_temp";

// While it lives, the current user is role, in a security-restricted operation (no SET ROLE,
// no temp tables), with search_path kRouteSearchPath. On destruction every setting changed in
// between is rolled back, including a set_config() by user code, so nothing planted there
// reaches the statements the caller runs afterwards (the pattern of index builds and VACUUM).
// In a background worker it also releases the session-level advisory locks taken meanwhile.
// Nest it inside any Subtransaction it is used with, never around one that commits or rolls
// back while it lives: ending a subtransaction also ends the setting levels opened in it.
class AsRole {
public:
	explicit AsRole(Oid role, const char *search_path = kRouteSearchPath);
	~AsRole();
	AsRole(const AsRole &) = delete;
	AsRole &operator=(const AsRole &) = delete;

private:
	Oid saved_user_ = InvalidOid;
	int saved_context_ = 0;
	int guc_nest_level_ = 0;
};

// The owner of a relation (InvalidOid when it is gone).
Oid TableOwner(Oid relid);

// The owner of the extension, who owns switchboard's tables (the queue among them).
Oid ExtensionOwner();

// True when the current user has the privileges of role (is it, a member that inherits, or a
// superuser), as Postgres checks ownership.
bool CurrentUserHasPrivsOf(Oid role);

// The role's name, or "role with OID n" once it was dropped.
std::string RoleName(Oid role);

bool RoleExists(Oid role);

} // namespace switchboard
