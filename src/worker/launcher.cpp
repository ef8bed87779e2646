// The launcher: a static background worker (needs shared_preload_libraries) that starts one
// worker per database whose worker is not running, at most switchboard.max_workers at once:
// with more databases, workers of idle ones make room and are started again on demand (a
// capturing commit, a retry or pull come due), the longest unserved first (shmem.cpp). A database without the extension
// gets a short-lived worker that finds nothing and exits; the launcher then leaves it alone for a minute unless CREATE
// EXTENSION wakes it. Templates are skipped, so CREATE DATABASE from them is never blocked.
#include "pg/boundary.h"
#include "settings.h"
#include "worker/launcher.h"
#include "worker/shmem.h"

extern "C" {
#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
}

namespace switchboard {

namespace {

ProcessUtility_hook_type prev_process_utility = nullptr;

int
ListDatabases(Oid *out, int max)
{
	int count = 0;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	Relation rel = table_open(DatabaseRelationId, AccessShareLock);
	TableScanDesc scan = table_beginscan_catalog(rel, 0, nullptr);
	HeapTuple tuple;
	bool cut_short = false;
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != nullptr) {
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tuple);
		if (!db->datallowconn || db->datistemplate)
			continue;
		if (count == max) {
			cut_short = true;
			break;
		}
		out[count++] = db->oid;
	}
	table_endscan(scan);
	// Said once per launcher: the databases beyond the limit get no worker.
	static bool warned = false;
	if (cut_short && !warned) {
		warned = true;
		ereport(WARNING,
		        (errmsg("switchboard serves at most %d databases of this cluster; the others get no worker", max)));
	}
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
	return count;
}

void
StartWorker(Oid database)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle = nullptr;
	memset(&worker, 0, sizeof worker);
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART; // the launcher restarts it
	strlcpy(worker.bgw_library_name, "switchboard", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "switchboard_worker_main", BGW_MAXLEN);
	snprintf(worker.bgw_name, BGW_MAXLEN, "switchboard worker for database %u", database);
	strlcpy(worker.bgw_type, "switchboard worker", BGW_MAXLEN);
	worker.bgw_main_arg = ObjectIdGetDatum(database);
	worker.bgw_notify_pid = 0;
	if (!RegisterDynamicBackgroundWorker(&worker, &handle)) {
		MarkStartFailed(database);
		ereport(WARNING, (errmsg("switchboard: could not start a worker for database %u", database),
		                  errhint("Raise max_worker_processes: switchboard needs switchboard.max_workers plus one.")));
	}
}

// The inbound webhook receiver (receiver_main.cpp): one for the cluster while
// switchboard.listen_addresses is set, started again within a second when it exits or dies
// (at most one start in kReceiverRestartMs).
// Only reached on a primary: LauncherLoop runs after WaitForPromotion.
BackgroundWorkerHandle *receiver_handle = nullptr;
constexpr int kReceiverRestartMs = 5000; // at most one start in this time

void
KeepReceiverRunning()
{
	if (setting_listen_addresses == nullptr || setting_listen_addresses[0] == '\0')
		return;
	pid_t pid = 0;
	if (receiver_handle != nullptr && GetBackgroundWorkerPid(receiver_handle, &pid) != BGWH_STOPPED)
		return;
	if (receiver_handle != nullptr) {
		pfree(receiver_handle);
		receiver_handle = nullptr;
	}
	// One that could not even start (switchboard.inbound_database does not exist, an address
	// taken) would otherwise be started again, and log its failure, every second.
	static TimestampTz last_start = 0;
	TimestampTz now = GetCurrentTimestamp();
	if (last_start != 0 && !TimestampDifferenceExceeds(last_start, now, kReceiverRestartMs))
		return;
	last_start = now;
	BackgroundWorker worker;
	memset(&worker, 0, sizeof worker);
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART; // the launcher restarts it
	strlcpy(worker.bgw_library_name, "switchboard", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "switchboard_receiver_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "switchboard receiver", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "switchboard receiver", BGW_MAXLEN);
	worker.bgw_notify_pid = MyProcPid; // its exit sets the launcher's latch
	if (!RegisterDynamicBackgroundWorker(&worker, &receiver_handle)) {
		receiver_handle = nullptr;
		static bool warned = false;
		if (!warned) {
			warned = true;
			ereport(WARNING, (errmsg("switchboard: could not start the inbound webhook receiver"),
			                  errhint("Raise max_worker_processes: the receiver needs one more.")));
		}
	}
}

constexpr const char *kLauncherName = "switchboard launcher";
constexpr const char *kStandbyName = "switchboard launcher (standby)";

// A hot standby: wait until it is promoted (checked four times a second, so the workers start
// within moments of the promotion). Nothing else runs meanwhile.
void
WaitForPromotion()
{
	if (!RecoveryInProgress())
		return;
	pgstat_report_appname(kStandbyName);
	pgstat_report_activity(STATE_IDLE, "waiting for promotion: a standby delivers nothing");
	while (RecoveryInProgress()) {
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 250, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending) {
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
	ereport(LOG, (errmsg("switchboard: this server was promoted; starting its workers")));
	pgstat_report_appname(kLauncherName);
	pgstat_report_activity(STATE_IDLE, nullptr);
}

void
LauncherLoop()
{
	Oid databases[kMaxDatabases];
	for (;;) {
		int rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 1000, PG_WAIT_EXTENSION);
		(void) rc;
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending) {
			ConfigReloadPending = false;
			bool was_enabled = setting_enabled;
			ProcessConfigFile(PGC_SIGHUP);
			// Workers that made room while paused come back for what waited meanwhile.
			if (setting_enabled && !was_enabled)
				MarkAllWanted();
		}
		KeepReceiverRunning();
		int count = ListDatabases(databases, kMaxDatabases);
		ForgetDatabasesExcept(databases, count);
		Oid to_start[kMaxDatabases];
		int starting = PickDatabasesToStart(databases, count, setting_max_workers, setting_enabled, NowMs(), to_start);
		for (int i = 0; i < starting; i++)
			StartWorker(to_start[i]);
	}
}

Oid
TemplateOf(CreatedbStmt *stmt)
{
	ListCell *lc;
	foreach (lc, stmt->options) {
		DefElem *option = (DefElem *) lfirst(lc);
		if (strcmp(option->defname, "template") == 0)
			return get_database_oid(defGetString(option), true);
	}
	return InvalidOid;
}

// Whether the current user may run a command that needs database to itself: its owner
// (renaming also needs CREATEDB), or anyone with CREATEDB copying a template database.
// Postgres makes the same checks itself later; asking first means that a command bound to
// fail with "permission denied" does not stop another database's worker on the way.
bool
MayTakeOverDatabase(Node *node, Oid database)
{
	if (IsA(node, CreatedbStmt)) {
		if (!have_createdb_privilege())
			return false;
		bool is_template = false;
		HeapTuple tuple = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(database));
		if (HeapTupleIsValid(tuple)) {
			is_template = ((Form_pg_database) GETSTRUCT(tuple))->datistemplate;
			ReleaseSysCache(tuple);
		}
		return is_template || pg_database_ownercheck(database, GetUserId());
	}
	if (IsA(node, RenameStmt) && !have_createdb_privilege())
		return false;
	return pg_database_ownercheck(database, GetUserId());
}

// Commands that need a database to themselves stop its worker first (and keep it away for a
// while), so the worker never blocks them; only when the command is allowed at all.
void
ProcessUtility(PlannedStmt *pstmt, const char *query, bool read_only_tree, ProcessUtilityContext context,
               ParamListInfo params, QueryEnvironment *query_env, DestReceiver *dest, QueryCompletion *qc)
{
	Node *node = pstmt->utilityStmt;
	Oid database = InvalidOid;
	if (IsA(node, DropdbStmt))
		database = get_database_oid(((DropdbStmt *) node)->dbname, true);
	else if (IsA(node, RenameStmt) && ((RenameStmt *) node)->renameType == OBJECT_DATABASE)
		database = get_database_oid(((RenameStmt *) node)->subname, true);
	else if (IsA(node, CreatedbStmt))
		database = TemplateOf((CreatedbStmt *) node);
	else if (IsA(node, AlterDatabaseStmt))
		database = get_database_oid(((AlterDatabaseStmt *) node)->dbname, true);
	if (OidIsValid(database) && database != MyDatabaseId && MayTakeOverDatabase(node, database))
		StopWorkerFor(database, 10 * 1000, 5 * 1000);
	// DROP EXTENSION switchboard takes its tables one by one; a worker in the middle of a
	// round could deadlock with it. Stop this database's worker first (it comes back after
	// the hold if the drop rolls back), when the user may drop it (owns the extension).
	if (IsA(node, DropStmt) && ((DropStmt *) node)->removeType == OBJECT_EXTENSION) {
		ListCell *lc;
		Oid extension = get_extension_oid("switchboard", true);
		foreach (lc, ((DropStmt *) node)->objects)
			if (strcmp(strVal(lfirst(lc)), "switchboard") == 0 && OidIsValid(extension) &&
			    pg_extension_ownercheck(extension, GetUserId()))
				StopWorkerFor(MyDatabaseId, 3 * 1000, 5 * 1000);
	}

	if (prev_process_utility)
		prev_process_utility(pstmt, query, read_only_tree, context, params, query_env, dest, qc);
	else
		standard_ProcessUtility(pstmt, query, read_only_tree, context, params, query_env, dest, qc);
}

} // namespace

void
RegisterLauncher()
{
	BackgroundWorker worker;
	memset(&worker, 0, sizeof worker);
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	// Started on a hot standby too, where it only waits for promotion (WaitForPromotion).
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = 5;
	strlcpy(worker.bgw_library_name, "switchboard", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "switchboard_launcher_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "switchboard launcher", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "switchboard launcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);

	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = ProcessUtility;
}

} // namespace switchboard

using namespace switchboard;

// The launcher holds no C++ objects: an error in LauncherLoop ends the process through
// Postgres' handler, and the postmaster starts it again (bgw_restart_time).
SB_BGWORKER_MAIN(switchboard_launcher_main)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(nullptr, nullptr, 0);
	pgstat_report_appname(kLauncherName);
	RegisterLauncherLatch(MyLatch);
	WaitForPromotion();
	LauncherLoop();
}
