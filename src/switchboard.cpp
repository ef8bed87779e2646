// _PG_init: settings, shared memory and the wake-up hook. Loaded through
// shared_preload_libraries (the worker launcher needs it); also works when loaded on demand,
// minus the worker.
#include <climits>

#include "inbound/receiver.h"
#include "settings.h"

#include "pg/prelude.h"

extern "C" {
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"
}

#include "worker/launcher.h"
#include "worker/shared_limits.h"
#include "worker/shmem.h"
#include "worker/wake.h"

namespace {

// switchboard.rate_limit_groups: names, each optionally "=count/duration". No C++ object
// outlives a call (a check hook must not raise: it reports through GUC_check_errdetail).
bool
CheckRateLimitGroups(char **newval, void **, GucSource)
{
	char detail[512] = "out of memory";
	bool ok = false;
	try {
		std::string error;
		ok = switchboard::RateLimitGroupsValid(*newval ? *newval : "", &error);
		strlcpy(detail, error.c_str(), sizeof detail);
	} catch (...) {
	}
	if (!ok)
		GUC_check_errdetail("%s", detail); // may raise: no C++ object is alive here
	return ok;
}

} // namespace

extern "C" {
PG_MODULE_MAGIC;
void _PG_init(void);
}

namespace switchboard {
bool setting_enabled = true;
int setting_naptime_ms = 1000;
int setting_http_timeout_ms = 30000;
int setting_route_sql_timeout_ms = 10000;
int setting_max_attempts = 12;
int setting_history_retention_s = 7 * 24 * 3600;
int setting_dead_letter_retention_s = 0;
int setting_inbound_retention_s = 3 * 24 * 3600;
char *setting_allowed_hosts = nullptr;
char *setting_rate_limit_groups = nullptr;
int setting_max_workers = 8;
char *setting_listen_addresses = nullptr;
int setting_listen_port = 8480;
char *setting_listen_certificate = nullptr;
char *setting_listen_key = nullptr;
char *setting_inbound_database = nullptr;
int setting_inbound_max_connections = 256;
int setting_inbound_timeout_s = 10;
int setting_inbound_max_bytes = 1024 * 1024;

bool
RestoringFromDump()
{
	// pg_dump's output turns check_function_bodies off. Anyone may do so too, which is why
	// readers re-check stored definitions before use (config/validate.h).
	return !check_function_bodies;
}
} // namespace switchboard

using namespace switchboard;

namespace {
// switchboard.listen_addresses must parse (a GUC check hook: nothing may throw out of it).
bool
CheckListenAddresses(char **newval, void **, GucSource)
{
	try {
		// The syntax only: entries without a port take switchboard.listen_port, which always has one.
		(void) inbound::ParseListenAddresses(*newval ? *newval : "", 1);
		return true;
	} catch (const std::exception &e) {
		GUC_check_errdetail("%s", e.what());
		return false;
	} catch (...) {
		return false;
	}
}
} // namespace

void
_PG_init(void)
{
	// All PGC_SIGHUP: one value for the whole cluster, changed by pg_reload_conf(), so the
	// worker and every backend agree (a per-session value would mean nothing to the worker).
	DefineCustomBoolVariable("switchboard.enabled", "Deliver and pull; off pauses both while capture goes on.", nullptr,
	                         &setting_enabled, true, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
	DefineCustomIntVariable("switchboard.naptime", "Safety poll interval of the worker.", nullptr, &setting_naptime_ms,
	                        1000, 10, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
	DefineCustomIntVariable("switchboard.http_timeout", "Total time allowed for one HTTP request.", nullptr,
	                        &setting_http_timeout_ms, 30000, 100, 600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr,
	                        nullptr);
	// The superuser's bound on what a configuration role's step SQL may cost the database's
	// worker, which runs it between the rounds of every route (options.timeout_ms may only
	// shorten it).
	DefineCustomIntVariable(
	    "switchboard.route_sql_timeout",
	    "Longest time a route's filters, key and mappings (together, per round) or one step's SQL may run in the worker.",
	    nullptr, &setting_route_sql_timeout_ms, 10000, 10, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr,
	    nullptr);
	DefineCustomIntVariable("switchboard.max_attempts", "Attempts before a change becomes a dead letter.", nullptr,
	                        &setting_max_attempts, 12, 1, 1000, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
	DefineCustomIntVariable("switchboard.history_retention", "How long delivery history is kept.", nullptr,
	                        &setting_history_retention_s, 7 * 24 * 3600, 60, INT_MAX, PGC_SIGHUP, GUC_UNIT_S, nullptr,
	                        nullptr, nullptr);
	DefineCustomIntVariable(
	    "switchboard.dead_letter_retention",
	    "How long a dead letter is kept before it is dropped; 0 keeps it until retried or discarded.", nullptr,
	    &setting_dead_letter_retention_s, 0, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr, nullptr);
	DefineCustomIntVariable("switchboard.inbound_retention",
	                        "How long an applied inbound event is kept (it recognises a sender's redelivery).", nullptr,
	                        &setting_inbound_retention_s, 3 * 24 * 3600, 60, INT_MAX, PGC_SIGHUP, GUC_UNIT_S, nullptr,
	                        nullptr, nullptr);
	DefineCustomIntVariable("switchboard.max_workers",
	                        "Workers of all databases together; more databases take turns, idle ones first.", nullptr,
	                        &setting_max_workers, 8, 1, kMaxDatabases, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
	DefineCustomStringVariable("switchboard.rate_limit_groups",
	                           "Comma list of rate_limit_group names endpoints may share across databases, each "
	                           "optionally with the group's limit (name=100/10s).",
	                           nullptr, &setting_rate_limit_groups, "", PGC_SIGHUP, 0, CheckRateLimitGroups, nullptr,
	                           nullptr);
	DefineCustomStringVariable("switchboard.allowed_hosts",
	                           "Comma list of host patterns endpoints may point at; empty allows any.", nullptr,
	                           &setting_allowed_hosts, "", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
	// The inbound webhook receiver (SPEC §9, src/worker/receiver_main.cpp): it restarts itself
	// when one of these changes.
	DefineCustomStringVariable("switchboard.listen_addresses",
	                           "Addresses the inbound webhook receiver listens on (host or host:port, comma list); "
	                           "empty: no receiver.",
	                           nullptr, &setting_listen_addresses, "", PGC_SIGHUP, 0, CheckListenAddresses, nullptr,
	                           nullptr);
	DefineCustomIntVariable("switchboard.listen_port",
	                        "TCP port of the inbound webhook receiver, for listen_addresses entries without their own.",
	                        nullptr, &setting_listen_port, 8480, 1, 65535, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
	DefineCustomStringVariable("switchboard.listen_certificate",
	                           "PEM certificate file of the receiver; with listen_key it serves HTTPS.", nullptr,
	                           &setting_listen_certificate, "", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
	DefineCustomStringVariable("switchboard.listen_key",
	                           "PEM private key file of the receiver (with listen_certificate).", nullptr,
	                           &setting_listen_key, "", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
	DefineCustomStringVariable("switchboard.inbound_database",
	                           "The database whose routes the receiver serves (one for the cluster).", nullptr,
	                           &setting_inbound_database, "postgres", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
	DefineCustomIntVariable("switchboard.inbound_max_connections", "Connections the receiver accepts at once.", nullptr,
	                        &setting_inbound_max_connections, 256, 1, 65535, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
	DefineCustomIntVariable("switchboard.inbound_timeout",
	                        "Time a webhook request may take, and a connection may stay idle, before it is cut off.",
	                        nullptr, &setting_inbound_timeout_s, 10, 1, 3600, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr,
	                        nullptr);
	DefineCustomIntVariable("switchboard.inbound_max_bytes", "Largest webhook body accepted (413 beyond).", nullptr,
	                        &setting_inbound_max_bytes, 1024 * 1024, 1024, 64 * 1024 * 1024, PGC_SIGHUP, GUC_UNIT_BYTE,
	                        nullptr, nullptr, nullptr);
	// A misspelt switchboard.* setting is then reported instead of silently kept as a
	// placeholder.
	MarkGUCPrefixReserved("switchboard");

	// In every backend, preloaded or not: any backend may capture a change and must wake the
	// worker at commit.
	InstallWakeCallback();
	// Shared memory and background workers can only be requested while the postmaster loads
	// the library; loaded on demand, capture still works, without a worker.
	if (process_shared_preload_libraries_in_progress) {
		RequestSharedMemory();
		RegisterLauncher();
	}
}
