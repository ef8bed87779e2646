// Running code as another role, as a SECURITY DEFINER function does: switchboard evaluates a
// route's expressions and writes pulled rows as the owner of the route's source table, so
// configuration can do no more than that role could with its own data.
#pragma once

#include "pg/prelude.h"

extern "C" {
#include "miscadmin.h"
}

namespace switchboard {

class AsRole {
public:
	explicit AsRole(Oid role)
	{
		GetUserIdAndSecContext(&saved_user_, &saved_context_);
		SetUserIdAndSecContext(role, saved_context_ | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	}
	~AsRole() { SetUserIdAndSecContext(saved_user_, saved_context_); }
	AsRole(const AsRole &) = delete;
	AsRole &operator=(const AsRole &) = delete;

private:
	Oid saved_user_ = InvalidOid;
	int saved_context_ = 0;
};

// The owner of a relation (the current user when it is gone).
Oid TableOwner(Oid relid);

} // namespace switchboard
