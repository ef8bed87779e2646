// retry() and discard() (src/sql/66_repair.sql): the caller is the current user as they are
// entered, the work is done by the extension owner's _retry_*/_discard_* functions, told whom
// they act for. SECURITY DEFINER functions cannot do this alone: inside one, current_user is its
// owner, and the outer (session) user is not whoever runs the code (a route's expression the
// worker runs as the route's owner, a SECURITY DEFINER function of another role).

#include "pg/as_role.h"
#include "pg/boundary.h"
#include "pg/spi.h"

extern "C" {
#include "miscadmin.h"
}

namespace switchboard {
namespace {

// Calls the extension owner's function fn(arg::arg_type, caller) for the SQL function called, and
// returns its result as text.
std::string
CallAsExtensionOwner(const char *called, const char *fn, const char *arg_type, const SpiText &arg)
{
	// Not from code running in a security-restricted operation (a route's expression in the
	// worker, an index expression during ANALYZE): repairs are a person's decision.
	if (InSecurityRestrictedOperation())
		Fail(ERRCODE_INSUFFICIENT_PRIVILEGE,
		     std::string("switchboard.") + called + "() cannot be called within a security-restricted operation");
	const Oid caller = GetUserId();
	SpiConnection spi;
	AsRole as_extension_owner(ExtensionOwner(), kOwnSearchPath);
	SpiText result = SpiScalar(std::string("SELECT switchboard.") + fn + "($1::" + arg_type +
	                               ", $2::pg_catalog.oid)::pg_catalog.text",
	                           {arg, std::to_string(caller)});
	return result.value_or("");
}

} // namespace
} // namespace switchboard

using namespace switchboard;

SB_PG_FUNCTION(switchboard_retry_route)
{
	SpiText route = PG_ARGISNULL(0) ? SpiText() : SpiText(TextArg(fcinfo, 0));
	PG_RETURN_INT64(std::stoll(CallAsExtensionOwner("retry", "_retry_route", "pg_catalog.text", route)));
}

SB_PG_FUNCTION(switchboard_retry_one)
{
	PG_RETURN_BOOL(CallAsExtensionOwner("retry", "_retry_one", "pg_catalog.int8", std::to_string(PG_GETARG_INT64(0))) ==
	               "true");
}

SB_PG_FUNCTION(switchboard_discard_one)
{
	PG_RETURN_BOOL(CallAsExtensionOwner("discard", "_discard_one", "pg_catalog.int8",
	                                    std::to_string(PG_GETARG_INT64(0))) == "true");
}
