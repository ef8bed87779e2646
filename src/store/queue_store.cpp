#include "store/queue_store.h"

#include "capture/resync.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <set>

#include "delivery/coalesce.h"
#include "delivery/retry_policy.h"
#include "pg/boundary.h"
#include "pg/spi.h"
#include "pg/route_budget.h"
#include "pg/time_limit.h"
#include "settings.h"
#include "store/pull_store.h"
#include "translate/translator.h"

extern "C" {
#include "access/xact.h"
#include "miscadmin.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/snapmgr.h"
}

namespace switchboard {

WorkerTransaction::WorkerTransaction()
{
	Guarded([] {
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
	});
}

void
WorkerTransaction::Commit()
{
	Guarded([] {
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		pgstat_report_stat(false);
	});
	done_ = true;
}

WorkerTransaction::~WorkerTransaction()
{
	if (!done_)
		AbortCurrentTransaction(); // also closes SPI and pops the snapshot
}

namespace {

std::string
Num(int64_t v)
{
	return std::to_string(v);
}

std::string
InstanceId()
{
	return SpiScalar("SELECT id FROM switchboard.instance").value_or("0");
}

struct QueueRow {
	int64_t id;
	std::string route;
	Op op;
	SpiText new_image, old_image;
	int64_t captured_ms;
	int attempts;
	bool route_exists;
	SpiText key; // known once tried before (or superseded)
};

// One row of delivery_log.
struct LogEntry {
	std::string route;
	SpiText key;
	Op op = Op::Update;
	int64_t change_id = 0;
	std::string outcome; // delivered | skipped | retry | dead
	SpiText http_status; // NULL: nothing was answered
	SpiText latency_ms;
	SpiText error;
};

// Per route: changes delivered, and the last error seen (empty: none).
using RouteStats = std::map<std::string, std::pair<int64_t, std::string>>;

void
LogOutcomes(const std::vector<LogEntry> &entries)
{
	if (entries.empty())
		return;
	// One statement for the whole round: one array per column, unnested together.
	std::vector<SpiText> routes, keys, ops, ids, outcomes, statuses, latencies, errors;
	for (const LogEntry &e : entries) {
		routes.emplace_back(e.route);
		keys.push_back(e.key);
		ops.emplace_back(OpName(e.op));
		ids.emplace_back(Num(e.change_id));
		outcomes.emplace_back(e.outcome);
		statuses.push_back(e.http_status);
		latencies.push_back(e.latency_ms);
		errors.push_back(e.error);
	}
	SpiExecPrepared(
	    "INSERT INTO switchboard.delivery_log (route, key, op, change_id, outcome, http_status, latency_ms, error) "
	    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::int[], "
	    "$7::float8[], $8::text[])",
	    {ArrayLiteral(routes), ArrayLiteral(keys), ArrayLiteral(ops), ArrayLiteral(ids), ArrayLiteral(outcomes),
	     ArrayLiteral(statuses), ArrayLiteral(latencies), ArrayLiteral(errors)});
}

void
NoteRouteStats(const RouteStats &stats)
{
	if (stats.empty())
		return;
	std::vector<SpiText> routes, delivered, errors;
	for (const auto &[route, s] : stats) {
		routes.emplace_back(route);
		delivered.emplace_back(Num(s.first));
		errors.push_back(s.second.empty() ? SpiText() : SpiText(s.second));
	}
	SpiExecPrepared(
	    "INSERT INTO switchboard.route_stats AS s (route, delivered, last_delivered_at, last_error, last_error_at) "
	    "SELECT u.route, u.delivered, CASE WHEN u.delivered > 0 THEN now() END, u.error, "
	    "CASE WHEN u.error IS NOT NULL THEN now() END "
	    "FROM unnest($1::text[], $2::bigint[], $3::text[]) AS u(route, delivered, error) "
	    "ON CONFLICT (route) DO UPDATE SET delivered = s.delivered + excluded.delivered, "
	    "last_delivered_at = coalesce(excluded.last_delivered_at, s.last_delivered_at), "
	    "last_error = coalesce(excluded.last_error, s.last_error), "
	    "last_error_at = coalesce(excluded.last_error_at, s.last_error_at)",
	    {ArrayLiteral(routes), ArrayLiteral(delivered), ArrayLiteral(errors)});
}

} // namespace

bool
ExtensionExists()
{
	bool exists = false;
	Guarded([&] { exists = OidIsValid(get_extension_oid("switchboard", true)); });
	return exists;
}

bool
RecognizeCopy()
{
	// NULL: made before 0.2 (or by its upgrade); this database is where the worker meets it first.
	SpiResult found = SpiExecPrepared("SELECT database_oid IS NOT NULL FROM switchboard.instance "
	                                  "WHERE database_oid IS DISTINCT FROM $1::oid",
	                                  {Num(MyDatabaseId)});
	bool copied = !found.rows.empty() && found.rows[0][0] == SpiText("t");
	if (copied) {
		SpiExecPrepared("UPDATE switchboard.instance SET id = substr(md5(gen_random_uuid()::text), 1, 10), "
		                "created_at = now()");
		SpiExecPrepared("UPDATE switchboard.routes SET enabled = false, disabled_reason = 'this database is a copy "
		                "of another (CREATE DATABASE ... TEMPLATE, found ' || now() || '): its routes, and the changes "
		                "queued with them, wait until a DBA enables them' WHERE enabled");
	}
	if (!found.rows.empty())
		SpiExecPrepared("UPDATE switchboard.instance SET database_oid = $1::oid", {Num(MyDatabaseId)});
	return copied;
}

void
RecoverInFlight()
{
	// Changes the worker was delivering when it stopped are sent again; one that keeps killing
	// the worker (in flight max_attempts times) becomes a dead letter instead of looping.
	// The older changes of its key go with it, as when a delivery makes a dead letter: sent on
	// their own later they would put an older state over the newer one; except behind a delete
	// the remote ignores, which leaves the remote needing the last upsert.
	SpiExecPrepared(
	    "WITH recovered AS (UPDATE switchboard.queue SET attempts = attempts + 1, next_attempt_at = NULL, "
	    "state = CASE WHEN attempts + 1 >= current_setting('switchboard.max_attempts')::int THEN 'dead' "
	    "ELSE 'pending' END, "
	    "failed_at = CASE WHEN attempts + 1 >= current_setting('switchboard.max_attempts')::int THEN now() END, "
	    "last_error = CASE WHEN attempts + 1 >= current_setting('switchboard.max_attempts')::int "
	    "THEN 'the worker stopped while delivering this change ' || (attempts + 1) || ' times' "
	    "ELSE coalesce(last_error, 'worker stopped while delivering; sent again') END "
	    "WHERE state = 'in_flight' RETURNING id, route, key, op, state) "
	    "DELETE FROM switchboard.queue p USING recovered d LEFT JOIN switchboard.routes r ON r.name = d.route "
	    "WHERE d.state = 'dead' AND p.route = d.route AND p.key = d.key AND p.state = 'pending' AND p.id < d.id "
	    "AND NOT (d.op = 'delete' AND coalesce(r.on_delete, 'ignore') = 'ignore')");
}

namespace {

std::string
TextArray(const std::vector<std::string> &items)
{
	return ArrayLiteral(std::vector<SpiText>(items.begin(), items.end()));
}

// Due changes of the routes that `routes` admits (of route_list, a text[], as $2), limit of
// them in id order, with the newer changes of their keys that were tried before.
std::vector<QueueRow>
FetchDueOf(int limit, const std::string &routes, const std::string &route_list)
{
	const std::string columns =
	    "SELECT q.id, q.route, q.op, q.new::text, q.old::text, "
	    "(extract(epoch FROM q.captured_at) * 1000)::bigint, q.attempts, r.name IS NOT NULL, q.key "
	    "FROM switchboard.queue q LEFT JOIN switchboard.routes r ON r.name = q.route "
	    "LEFT JOIN switchboard.endpoints e ON e.name = r.endpoint "
	    "WHERE q.state = 'pending' AND (q.next_attempt_at IS NULL OR q.next_attempt_at <= now()) "
	    "AND (r.name IS NULL OR (r.enabled AND e.enabled)) "
	    // Routes with steps run their changes as runs (orchestrate/runs.cpp).
	    "AND NOT EXISTS (SELECT 1 FROM switchboard.steps s WHERE s.route = q.route) ";
	// In id order from queue_pkey, never a scan and sort of the whole queue: its statistics
	// lag behind its churn (analyzed nearly empty, a backlog looks like a few rows to the planner,
	// and each claim of 2,000 read and sorted all 100,000 queued rows).
	SpiResult r = SpiExecPlanned(columns + "AND " + routes + " ORDER BY q.id LIMIT $1::int FOR UPDATE OF q SKIP LOCKED",
	                             {Num(limit), route_list}, {"enable_sort"});
	// Changes tried before (keyed) whose key has a newer due change beyond the limit: that one
	// comes along, so that the older one is coalesced into it instead of going out alone after
	// the newer was tried (the remote may have applied it: v2, v1, v2). Newer ids only, so the
	// claim stays in id order.
	std::vector<SpiText> key_routes, keys;
	int64_t last_id = 0;
	for (const auto &row : r.rows) {
		last_id = std::max<int64_t>(last_id, std::stoll(*row[0]));
		if (row[8]) {
			key_routes.emplace_back(*row[1]);
			keys.push_back(row[8]);
		}
	}
	if (!keys.empty() && r.rows.size() == static_cast<size_t>(limit)) {
		SpiResult more = SpiExecPrepared(
		    columns + "AND q.id > $1::bigint AND q.key IS NOT NULL AND (q.route, q.key) IN "
		              "(SELECT * FROM unnest($2::text[], $3::text[])) ORDER BY q.id FOR UPDATE OF q SKIP LOCKED",
		    {Num(last_id), ArrayLiteral(key_routes), ArrayLiteral(keys)});
		r.rows.insert(r.rows.end(), more.rows.begin(), more.rows.end());
	}
	std::vector<QueueRow> rows;
	for (const auto &row : r.rows)
		rows.push_back(QueueRow{std::stoll(*row[0]), *row[1], *ParseOp(*row[2]), row[3], row[4], std::stoll(*row[5]),
		                        std::stoi(*row[6]), *row[7] == "t", row[8]});
	return rows;
}

// The claim's SQL fetch: due changes of enabled routes (and of deleted ones, which fail), in
// id order, locked; rows another transaction holds (a DBA's retry()) are left for later. The
// routes held (WorkerRouteHolds) are left out; the deferred ones (their budget ran out last
// round with changes left) come after every other route's changes, so that the others are
// served first.
std::vector<QueueRow>
FetchDue(int limit)
{
	RouteHolds &holds = WorkerRouteHolds();
	const int64_t now = SteadyMs();
	std::vector<std::string> held = holds.Held(now), deferred = holds.Deferred(now);
	std::vector<std::string> left_out = held;
	left_out.insert(left_out.end(), deferred.begin(), deferred.end());
	std::vector<QueueRow> rows = FetchDueOf(limit, "q.route <> ALL($2::text[])", TextArray(left_out));
	if (!deferred.empty() && rows.size() < static_cast<size_t>(limit)) {
		std::vector<QueueRow> more = FetchDueOf(limit - static_cast<int>(rows.size()), "q.route = ANY($2::text[])",
		                                        TextArray(deferred));
		rows.insert(rows.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
	}
	return rows;
}

// Grouped by route, routes in the order of their first change, each route's rows in queue order.
std::vector<std::pair<std::string, std::vector<QueueRow>>>
GroupByRoute(std::vector<QueueRow> rows)
{
	std::vector<std::pair<std::string, std::vector<QueueRow>>> groups;
	std::map<std::string, size_t> index;
	for (auto &q : rows) {
		auto [it, added] = index.emplace(q.route, groups.size());
		if (added)
			groups.emplace_back(q.route, std::vector<QueueRow>());
		groups[it->second].second.push_back(std::move(q));
	}
	return groups;
}

// Older changes of the claimed keys waiting for a retry (not due, so not claimed): coalescing
// may supersede them. Locked, as they may be deleted by this claim.
std::vector<HeldChange>
FetchHeld(const std::string &route, const std::vector<ClaimedRow> &claimed)
{
	std::vector<SpiText> keys, ids;
	int64_t newest = 0;
	for (const ClaimedRow &c : claimed) {
		ids.emplace_back(Num(c.id));
		newest = std::max(newest, c.id);
		if (c.state == ClaimedRow::State::Ok)
			keys.emplace_back(c.key);
	}
	std::vector<HeldChange> held;
	if (keys.empty())
		return held;
	// key IS NOT NULL lets the partial index queue_route_key serve the lookup.
	SpiResult r = SpiExecPrepared(
	    "SELECT id, key, op FROM switchboard.queue "
	    "WHERE route = $1 AND state = 'pending' AND key IS NOT NULL AND key = ANY($2::text[]) "
	    "AND id < $3::bigint AND id <> ALL($4::bigint[]) FOR UPDATE",
	    {route, ArrayLiteral(keys), Num(newest), ArrayLiteral(ids)});
	for (const auto &row : r.rows)
		held.push_back(HeldChange{std::stoll(*row[0]), *row[1], *ParseOp(*row[2])});
	return held;
}

// What a claim settles without sending, written once every route is done (ApplySettled).
struct ClaimSettled {
	struct DeadLetter {
		int64_t id;
		std::string error;
		SpiText key; // NULL when the translation failed before the key was known
	};
	std::vector<SpiText> drop_ids; // filtered
	std::vector<DeadLetter> dead;
	std::vector<LogEntry> log;
	RouteStats stats;
};

void
ApplySettled(const ClaimSettled &settled)
{
	if (!settled.drop_ids.empty())
		SpiExecPrepared("DELETE FROM switchboard.queue WHERE id = ANY($1::bigint[])", {ArrayLiteral(settled.drop_ids)});
	if (!settled.dead.empty()) {
		std::vector<SpiText> ids, errors, keys;
		for (const auto &d : settled.dead) {
			ids.emplace_back(Num(d.id));
			errors.emplace_back(d.error);
			keys.push_back(d.key);
		}
		SpiExecPrepared(
		    "UPDATE switchboard.queue q SET state = 'dead', last_error = k.error, key = k.key, failed_at = now() "
		    "FROM unnest($1::bigint[], $2::text[], $3::text[]) AS k(id, error, key) WHERE q.id = k.id",
		    {ArrayLiteral(ids), ArrayLiteral(errors), ArrayLiteral(keys)});
	}
	LogOutcomes(settled.log);
	NoteRouteStats(settled.stats);
}

// The changes a route sends this round: in flight, with their keys (and, for a change tried
// before, its translated fields), the changes they supersede keyed; the remote ids its
// deletes need (and its updates, for kinds that address records only by their id).
std::map<std::string, std::string>
MarkInFlight(const std::string &route, const std::vector<QueueRow> &rows, const std::vector<Translation> &translations,
             const Coalesced &coalesced, bool every_remote_id)
{
	std::vector<SpiText> keys, ids, states, delete_keys, retried_fields;
	for (const Coalesced::Send &s : coalesced.send) {
		// The key goes into the queue (and its index queue_route_key) only where a later
		// claim, the recovery after a crash or a dead letter needs it: a change tried before,
		// one that supersedes others, one whose crash would make it a dead letter. A change
		// sent for the first time (nearly all of them) is looked up by nobody under its key
		// while in flight (the pull's conflict check computes the keys of unkeyed changes from
		// their images); when it fails, WriteFailed and RequeueInFlight key it. One index
		// entry less per change, and an index that holds only the few keyed changes, so that
		// FetchHeld's and the delivered marks' lookups of every claimed key stay cheap.
		const QueueRow &q = rows[s.row];
		bool keyed = q.attempts > 0 || !s.superseded.empty() || q.attempts + 1 >= setting_max_attempts;
		keys.push_back(keyed ? SpiText(translations[s.row].key) : SpiText());
		ids.emplace_back(Num(rows[s.row].id));
		states.emplace_back("in_flight");
		// A change tried before may be one that kills the worker: keep its translated
		// fields with it, so that the dead letter it may become shows them.
		retried_fields.push_back(rows[s.row].attempts > 0 ? SpiText(translations[s.row].fields.dump()) : SpiText());
		if (s.op == Op::Delete || every_remote_id)
			delete_keys.emplace_back(translations[s.row].key);
		// The changes it supersedes stay pending, keyed: should they outlive this round (a
		// retry, a crash), a later claim of the key finds them as held changes.
		for (int64_t id : s.superseded) {
			keys.emplace_back(translations[s.row].key);
			ids.emplace_back(Num(id));
			states.emplace_back("pending");
			retried_fields.emplace_back(std::nullopt);
		}
	}
	// By id through queue_pkey: a hash join would read the whole queue for each claim.
	SpiExecPlanned(
	    "UPDATE switchboard.queue q SET state = k.state, key = coalesce(k.key, q.key), "
	    "payload = coalesce(k.fields::jsonb, q.payload) "
	    "FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS k(id, key, fields, state) WHERE q.id = k.id",
	    {ArrayLiteral(ids), ArrayLiteral(keys), ArrayLiteral(retried_fields), ArrayLiteral(states)},
	    {"enable_seqscan", "enable_hashjoin", "enable_mergejoin"});
	std::map<std::string, std::string> remote_ids;
	if (!delete_keys.empty()) {
		SpiResult known = SpiExecPrepared(
		    "SELECT key, remote_id FROM switchboard.remote_ids WHERE route = $1 AND key = "
		    "ANY($2::text[])",
		    {route, ArrayLiteral(delete_keys)});
		for (const auto &k : known.rows)
			remote_ids[*k[0]] = *k[1];
	}
	return remote_ids;
}

// The marks of the keys about to be sent (store of delivery/coalesce.h's TakeStale): what is
// not newer than the newest change delivered for its key is settled as skipped, with the
// reason in deliveries, instead of putting an older state over a newer one.
void
SettleStale(const std::string &route, const std::vector<ClaimedRow> &claimed, Coalesced *coalesced,
            ClaimSettled *settled)
{
	std::vector<SpiText> keys;
	for (const Coalesced::Send &s : coalesced->send)
		keys.emplace_back(claimed[s.row].key);
	if (keys.empty())
		return;
	SpiResult found = SpiExecPrepared("SELECT key, change_id FROM switchboard.delivered_marks "
	                                  "WHERE route = $1 AND key = ANY($2::text[])",
	                                  {route, ArrayLiteral(keys)});
	if (found.rows.empty())
		return;
	std::map<std::string, int64_t> marks;
	for (const auto &row : found.rows)
		marks[*row[0]] = std::stoll(*row[1]);
	for (const Coalesced::Send &s : TakeStale(coalesced, claimed, marks)) {
		const ClaimedRow &c = claimed[s.row];
		std::string error = "not sent: change " + Num(marks[c.key]) +
		                    " of this key, captured later, was delivered already (sending this older state would "
		                    "revert it)";
		settled->drop_ids.emplace_back(Num(c.id));
		for (int64_t id : s.superseded)
			settled->drop_ids.emplace_back(Num(id));
		settled->log.push_back(LogEntry{route, c.key, s.op, c.id, "skipped", std::nullopt, std::nullopt, error});
	}
}

// One route's part of the claim: load it, translate its rows, coalesce them (delivery/
// coalesce.h), mark what is sent in flight and add it to out; the rest goes to settled.
// What became of a route's translation this round (TranslateBatch).
struct RouteBudgetUse {
	std::string cut_off; // its budget ran out with changes left
	std::string slow;    // a single change ran past route_sql_timeout
};

void
ClaimRoute(const std::string &route_name, const std::vector<QueueRow> &claimed_rows, const std::string &instance,
           ClaimedBatch *out, ClaimSettled *settled, RouteBudgetUse *use)
{
	std::optional<RouteDef> def;
	if (claimed_rows.front().route_exists) {
		// A route that cannot be loaded (its definition fails the write-time checks, its
		// owner lost a privilege) is refused: the worker disables it with the reason, its
		// changes stay pending, the other routes go on.
		try {
			Subtransaction sub;
			def = FindRoute(route_name, true);
			sub.Commit();
		} catch (const PgError &e) {
			// A lock timeout or a cancel says nothing about the definition: tried next round.
			if (TransientError(e.sqlerrcode))
				throw;
			out->refused.push_back(RouteAction{route_name, e.what()});
			return;
		}
	}
	std::vector<Translation> translations;
	std::vector<QueueRow> rows;
	if (!def) {
		Translation gone;
		gone.status = Translation::Status::Failed;
		gone.error = "route \"" + route_name + "\" was deleted";
		translations.assign(claimed_rows.size(), gone);
		rows = claimed_rows;
	} else {
		std::vector<PendingRow> pending;
		for (const auto &q : claimed_rows)
			pending.push_back(PendingRow{q.op, q.new_image, q.old_image});
		BatchTranslation batch = TranslateBatch(*def, pending);
		use->cut_off = std::move(batch.cut_off);
		use->slow = std::move(batch.slow);
		const size_t done = batch.done.size();
		// The rest waits. A change tried before whose key has a newer change among them waits
		// too, so that it is coalesced into that one instead of going out alone after it was
		// tried (as FetchDue brings such newer changes along).
		std::set<std::string> keys_left;
		for (size_t i = done; i < claimed_rows.size(); i++)
			if (claimed_rows[i].key)
				keys_left.insert(*claimed_rows[i].key);
		for (size_t i = 0; i < done; i++) {
			if (claimed_rows[i].key && keys_left.count(*claimed_rows[i].key))
				continue;
			rows.push_back(claimed_rows[i]);
			translations.push_back(std::move(batch.done[i]));
		}
		if (rows.empty())
			return;
	}

	std::vector<ClaimedRow> claimed;
	for (size_t i = 0; i < rows.size(); i++) {
		const Translation &t = translations[i];
		ClaimedRow::State state = t.status == Translation::Status::Filtered ? ClaimedRow::State::Filtered
		                          : t.status == Translation::Status::Failed ? ClaimedRow::State::Failed
		                                                                    : ClaimedRow::State::Ok;
		claimed.push_back(ClaimedRow{rows[i].id, rows[i].op, t.key, state});
	}
	std::vector<HeldChange> held = FetchHeld(route_name, claimed);
	Coalesced coalesced = Coalesce(claimed, held, def && def->route.on_delete == "delete");
	SettleStale(route_name, claimed, &coalesced, settled);

	for (int64_t id : coalesced.dropped)
		settled->drop_ids.emplace_back(Num(id));
	for (size_t i : coalesced.failed) {
		const Translation &t = translations[i];
		SpiText key = t.key.empty() ? SpiText() : SpiText(t.key);
		settled->dead.push_back(ClaimSettled::DeadLetter{rows[i].id, t.error, key});
		settled->log.push_back(
		    LogEntry{route_name, key, rows[i].op, rows[i].id, "dead", std::nullopt, std::nullopt, t.error});
		settled->stats[route_name].second = t.error;
	}
	if (!def || coalesced.send.empty())
		return;

	const Connector *connector = FindConnector(def->endpoint.kind);
	std::map<std::string, std::string> remote_ids = MarkInFlight(route_name, rows, translations, coalesced,
	                                                             connector != nullptr &&
	                                                                 connector->UpdatesNeedRemoteId());
	RouteBatch batch;
	batch.endpoint = def->endpoint;
	batch.route = def->route;
	for (const Coalesced::Send &s : coalesced.send) {
		const QueueRow &q = rows[s.row];
		Translation &t = translations[s.row]; // each row is sent once: its fields move to the change
		Change change;
		change.id = q.id;
		change.op = s.op;
		change.key = t.key;
		change.event_id = "sb_" + instance + "_" + Num(q.id);
		change.occurred_at_ms = q.captured_ms;
		auto rid = remote_ids.find(t.key);
		if (rid != remote_ids.end())
			change.remote_id = rid->second;
		out->changes[q.id] = ClaimedChange{route_name, t.key, change.op, q.attempts, t.fields.dump(), s.superseded};
		change.fields = std::move(t.fields);
		batch.changes.push_back(std::move(change));
	}
	out->batches.push_back(std::move(batch));
}

} // namespace

ClaimedBatch
ClaimDue(int limit)
{
	ClaimedBatch out;
	std::vector<QueueRow> due = FetchDue(limit);
	out.rows = due.size();
	if (due.empty())
		return out;
	std::string instance = InstanceId();
	ClaimSettled settled;
	for (const auto &[route, rows] : GroupByRoute(std::move(due))) {
		// Each route in its own subtransaction, into its own results: whatever one route raises
		// (a lock timeout, a cancel, a value its fields cannot hold) holds that route for this
		// round, its changes pending and the error in route_status; the other routes go on.
		ClaimedBatch route_out;
		ClaimSettled route_settled;
		RouteBudgetUse use;
		RouteHolds &holds = WorkerRouteHolds();
		try {
			Subtransaction sub;
			ClaimRoute(route, rows, instance, &route_out, &route_settled, &use);
			sub.Commit();
		} catch (const PgError &e) {
			if (CancelledByTimeLimit(e.sqlerrcode, e.what())) {
				holds.Hold(route, SteadyMs() + kSlowRouteHoldMs);
				settled.stats[route].second = SlowRouteReason("its filters, key or mappings", e.what());
			} else
				settled.stats[route].second = std::string("held for a round (changes kept): ") + e.what();
			continue;
		} catch (const std::exception &e) {
			settled.stats[route].second = std::string("held for a round (changes kept): ") + e.what();
			continue;
		}
		// Its budget ran out: the changes translated go on, the others wait, a minute when a
		// single change took the whole budget, else until the other routes' changes were claimed.
		if (!use.slow.empty()) {
			holds.Hold(route, SteadyMs() + kSlowRouteHoldMs);
			route_settled.stats[route].second = SlowRouteReason("its filters, key or mappings", use.slow);
		} else if (!use.cut_off.empty()) {
			holds.Defer(route, SteadyMs() + kDeferMs);
			route_settled.stats[route].second = use.cut_off;
		} else
			holds.Served(route);
		for (auto &b : route_out.batches)
			out.batches.push_back(std::move(b));
		out.changes.merge(route_out.changes);
		for (auto &r : route_out.refused)
			out.refused.push_back(std::move(r));
		for (auto &id : route_settled.drop_ids)
			settled.drop_ids.push_back(std::move(id));
		for (auto &d : route_settled.dead)
			settled.dead.push_back(std::move(d));
		for (auto &l : route_settled.log)
			settled.log.push_back(std::move(l));
		for (auto &[name, st] : route_settled.stats)
			settled.stats[name] = std::move(st);
	}
	ApplySettled(settled);
	return out;
}

void
NoteRoundFailure(const std::string &error)
{
	// Every route with changes waiting shows it; none of them is set aside, since nothing says
	// which change (if any) is to blame.
	SpiExecPrepared(
	    "INSERT INTO switchboard.route_stats AS s (route, last_error, last_error_at) "
	    "SELECT r.name, $1, now() FROM switchboard.routes r WHERE EXISTS (SELECT 1 FROM switchboard.queue q "
	    "WHERE q.route = r.name AND q.state = 'pending') "
	    "ON CONFLICT (route) DO UPDATE SET last_error = excluded.last_error, last_error_at = excluded.last_error_at",
	    {"the worker's round failed (changes kept, tried again): " + error});
}

void
RequeueInFlight(const ClaimedBatch &claimed, int max_attempts)
{
	std::vector<SpiText> ids, keys, superseded, superseded_by;
	for (const auto &[id, change] : claimed.changes) {
		ids.emplace_back(Num(id));
		keys.emplace_back(change.key); // in flight for the first time, it went unkeyed (MarkInFlight)
		for (int64_t s : change.superseded) {
			superseded.emplace_back(Num(s));
			superseded_by.emplace_back(Num(id));
		}
	}
	// Counted as an attempt, like a crash: a change whose result can never be recorded ends
	// as a dead letter instead of being sent forever. The changes it superseded stay pending
	// (coalesced with it again next claim), unless it became a dead letter: then they go too,
	// as they would had it been delivered.
	SpiExecPrepared(
	    "WITH requeued AS (UPDATE switchboard.queue q "
	    "SET state = CASE WHEN q.attempts + 1 >= $2::int THEN 'dead' ELSE 'pending' END, "
	    "attempts = q.attempts + 1, next_attempt_at = NULL, key = coalesce(k.key, q.key), "
	    "failed_at = CASE WHEN q.attempts + 1 >= $2::int THEN now() END, "
	    "last_error = 'the result of its delivery could not be recorded; sent again' "
	    "FROM unnest($1::bigint[], $5::text[]) AS k(id, key) "
	    "WHERE q.id = k.id AND q.state = 'in_flight' RETURNING q.id, q.state) "
	    "DELETE FROM switchboard.queue s USING unnest($3::bigint[], $4::bigint[]) AS u(id, rep), requeued r "
	    "WHERE r.id = u.rep AND r.state = 'dead' AND s.id = u.id AND s.state = 'pending'",
	    {ArrayLiteral(ids), Num(max_attempts), ArrayLiteral(superseded), ArrayLiteral(superseded_by),
	     ArrayLiteral(keys)});
}

namespace {

// A change that failed: to be tried again later, or a dead letter.
struct FailedChange {
	int64_t id = 0;
	std::string key; // sent unkeyed the first time (MarkInFlight): a retry or a dead letter has it
	bool dead = false;
	int attempts = 0;
	long delay_ms = 0;   // until the next try (pending only)
	SpiText http_status; // NULL: nothing was sent
	std::string error;
	SpiText payload; // dead: the translated fields, shown by dead_letters
};

// What a delivery taught about a key's remote record.
struct RemoteIdChange {
	std::string route;
	std::string key;
	std::string remote_id; // empty: the record was deleted, forget its id
};

void
WriteFailed(const std::vector<FailedChange> &failed)
{
	if (failed.empty())
		return;
	std::vector<SpiText> ids, keys, states, attempts, delays, statuses, errors, payloads;
	for (const FailedChange &f : failed) {
		ids.emplace_back(Num(f.id));
		keys.push_back(f.key.empty() ? SpiText() : SpiText(f.key));
		states.emplace_back(f.dead ? "dead" : "pending");
		attempts.emplace_back(Num(f.attempts));
		delays.emplace_back(Num(f.delay_ms));
		statuses.push_back(f.http_status);
		errors.emplace_back(f.error);
		payloads.push_back(f.payload);
	}
	SpiExecPrepared(
	    "UPDATE switchboard.queue q SET state = u.state, attempts = u.attempts, key = coalesce(u.key, q.key), "
	    "next_attempt_at = CASE WHEN u.state = 'pending' THEN clock_timestamp() + u.delay_ms * interval '1 ms' END, "
	    "last_status = coalesce(u.status, q.last_status), last_error = u.error, "
	    "failed_at = CASE WHEN u.state = 'dead' THEN now() END, "
	    "payload = CASE WHEN u.state = 'dead' THEN u.payload::jsonb END "
	    "FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bigint[], $5::int[], $6::text[], $7::text[], $8::text[]) "
	    "AS u(id, state, attempts, delay_ms, status, error, payload, key) WHERE q.id = u.id",
	    {ArrayLiteral(ids), ArrayLiteral(states), ArrayLiteral(attempts), ArrayLiteral(delays), ArrayLiteral(statuses),
	     ArrayLiteral(errors), ArrayLiteral(payloads), ArrayLiteral(keys)});
}

void
WriteRemoteIds(const std::vector<RemoteIdChange> &changes)
{
	std::vector<SpiText> rid_routes, rid_keys, rid_values, gone_routes, gone_keys;
	for (const RemoteIdChange &c : changes) {
		if (c.remote_id.empty()) {
			gone_routes.emplace_back(c.route);
			gone_keys.emplace_back(c.key);
		} else {
			rid_routes.emplace_back(c.route);
			rid_keys.emplace_back(c.key);
			rid_values.emplace_back(c.remote_id);
		}
	}
	if (!rid_routes.empty())
		SpiExecPrepared(
		    "INSERT INTO switchboard.remote_ids AS r (route, key, remote_id) "
		    "SELECT DISTINCT ON (route, key) * FROM unnest($1::text[], $2::text[], $3::text[]) AS u(route, key, rid) "
		    "ON CONFLICT (route, key) DO UPDATE SET remote_id = excluded.remote_id, updated_at = now()",
		    {ArrayLiteral(rid_routes), ArrayLiteral(rid_keys), ArrayLiteral(rid_values)});
	if (!gone_routes.empty())
		SpiExecPrepared("DELETE FROM switchboard.remote_ids r USING unnest($1::text[], $2::text[]) AS u(route, key) "
		                "WHERE r.route = u.route AND r.key = u.key",
		                {ArrayLiteral(gone_routes), ArrayLiteral(gone_keys)});
}

} // namespace

void
RecordResults(const std::vector<Delivery> &deliveries, const std::vector<EndpointStatus> &endpoints,
              const ClaimedBatch &claimed, int max_attempts, std::mt19937_64 &rng)
{
	std::vector<SpiText> done_ids; // delivered, skipped, superseded by those or by a dead letter: off the queue
	std::vector<FailedChange> failed;
	std::vector<SpiText> waiting_ids, waiting_for; // superseded, waiting with the change that is retried
	std::vector<RemoteIdChange> remote_ids;
	std::vector<SpiText> mark_routes, mark_keys, mark_ids; // delivered: the key's newest
	std::vector<PushedState> pushed;                       // delivered: for the pull's echo check
	std::vector<LogEntry> log;
	RouteStats stats;

	for (const Delivery &d : deliveries) {
		auto info = claimed.changes.find(d.change_id);
		if (info == claimed.changes.end())
			continue;
		const ClaimedChange &c = info->second;
		bool settled = d.outcome != Outcome::Retry; // Retry may still become a dead letter below
		// Only what reached the remote orders the key: a change settled unsent (an ignored
		// delete) left the remote as it was, and an older change may still have to reach it.
		if (d.outcome == Outcome::Delivered) {
			mark_routes.emplace_back(c.route);
			mark_keys.emplace_back(c.key);
			mark_ids.emplace_back(Num(d.change_id));
			pushed.push_back(PushedState{c.route, c.key, d.change_id, c.op == Op::Delete ? "" : c.fields});
		}
		std::string outcome;
		switch (d.outcome) {
		case Outcome::Delivered:
			outcome = "delivered";
			done_ids.emplace_back(Num(d.change_id));
			stats[c.route].first++;
			if (c.op == Op::Delete)
				remote_ids.push_back(RemoteIdChange{c.route, c.key, ""});
			else if (!d.remote_id.empty())
				remote_ids.push_back(RemoteIdChange{c.route, c.key, d.remote_id});
			break;
		case Outcome::Skipped:
			outcome = "skipped";
			done_ids.emplace_back(Num(d.change_id));
			break;
		case Outcome::Retry:
		case Outcome::Dead: {
			int attempts = c.attempts + (d.attempted ? 1 : 0);
			bool dead = d.outcome == Outcome::Dead || (d.attempted && ShouldDeadLetter(attempts, max_attempts));
			long delay = d.attempted ? BackoffMs(attempts, d.retry_after_ms, rng) : std::max(d.retry_after_ms, 500L);
			std::string error = d.error;
			if (dead && d.outcome == Outcome::Retry)
				error = "gave up after " + Num(attempts) + " attempts: " + d.error;
			outcome = dead ? "dead" : "retry";
			settled = dead;
			failed.push_back(FailedChange{d.change_id, c.key, dead, attempts, delay,
			                              d.attempted ? SpiText(Num(d.http_status)) : SpiText(), error,
			                              dead ? SpiText(c.fields) : SpiText()});
			if (d.attempted || dead)
				stats[c.route].second = error;
			break;
		}
		}
		for (int64_t id : c.superseded) {
			if (settled) {
				done_ids.emplace_back(Num(id));
			} else {
				waiting_ids.emplace_back(Num(id));
				waiting_for.emplace_back(Num(d.change_id));
			}
		}
		if (d.outcome == Outcome::Retry && !settled && !d.attempted)
			continue; // nothing was sent: no history entry
		log.push_back(LogEntry{c.route, c.key, c.op, d.change_id, outcome,
		                       d.attempted ? SpiText(Num(d.http_status)) : SpiText(),
		                       d.attempted ? SpiText(std::to_string(d.latency_ms)) : SpiText(),
		                       d.error.empty() ? SpiText() : SpiText(d.error)});
	}

	if (!done_ids.empty())
		SpiExecPrepared("DELETE FROM switchboard.queue WHERE id = ANY($1::bigint[])", {ArrayLiteral(done_ids)});
	WriteFailed(failed);
	// Superseded changes come due with the one they were coalesced into, so that the next
	// claim coalesces them again (an insert among them keeps its meaning).
	if (!waiting_ids.empty())
		SpiExecPrepared(
		    "UPDATE switchboard.queue s SET next_attempt_at = r.next_attempt_at "
		    "FROM unnest($1::bigint[], $2::bigint[]) AS u(id, rep) JOIN switchboard.queue r ON r.id = u.rep "
		    "WHERE s.id = u.id AND s.state = 'pending'",
		    {ArrayLiteral(waiting_ids), ArrayLiteral(waiting_for)});
	WriteRemoteIds(remote_ids);
	// A mark matters only while an older change of the key can still come back: a dead letter
	// (retry) or another change still queued. Delivered rows are gone by now, so what is left
	// older than the delivered one is exactly that; a key with nothing older (nearly all of
	// them) writes no mark. (A change of the key claimed later is newer: one claim at a time.)
	// While a resync() runs, the older image it queued is not visible yet: every key is marked.
	if (!mark_routes.empty())
		SpiExecPrepared(
		    "INSERT INTO switchboard.delivered_marks AS m (route, key, change_id) "
		    "SELECT route, key, max(id) FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(route, key, id) "
		    "WHERE key IS NOT NULL AND ($4::bool OR EXISTS (SELECT FROM switchboard.queue q WHERE q.route = u.route "
		    "AND q.key = u.key AND q.id < u.id)) GROUP BY route, key "
		    "ON CONFLICT (route, key) DO UPDATE SET change_id = greatest(m.change_id, excluded.change_id)",
		    {ArrayLiteral(mark_routes), ArrayLiteral(mark_keys), ArrayLiteral(mark_ids),
		     ResyncRunning() ? "true" : "false"});
	NotePushedStates(pushed);
	LogOutcomes(log);
	NoteRouteStats(stats);
	WriteEndpointStatus(endpoints);
}

void
DisableRoutes(const std::vector<RouteAction> &routes)
{
	for (const auto &r : routes)
		SpiExecPrepared(
		    "UPDATE switchboard.routes SET enabled = false, disabled_reason = $2 WHERE name = $1 AND enabled",
		    {r.route, r.reason});
}

void
WriteEndpointStatus(const std::vector<EndpointStatus> &endpoints)
{
	if (endpoints.empty())
		return;
	std::vector<SpiText> names, states, next, requests, errors, last_error, last_error_at;
	for (const auto &e : endpoints) {
		names.emplace_back(e.endpoint);
		states.emplace_back(e.state);
		next.emplace_back(Num(e.next_attempt_at_ms));
		requests.emplace_back(Num(static_cast<int64_t>(e.requests)));
		errors.emplace_back(Num(static_cast<int64_t>(e.errors)));
		last_error.push_back(e.last_error.empty() ? SpiText() : SpiText(e.last_error));
		last_error_at.emplace_back(Num(e.last_error_at_ms));
	}
	SpiExecPrepared(
	    "INSERT INTO switchboard.endpoint_state AS s (endpoint, state, next_attempt_at, requests, errors, "
	    "last_error, last_error_at, updated_at) "
	    "SELECT u.endpoint, u.state, CASE WHEN u.next_ms > 0 THEN to_timestamp(u.next_ms / 1000.0) END, "
	    "u.requests, u.errors, u.last_error, CASE WHEN u.error_ms > 0 THEN to_timestamp(u.error_ms / 1000.0) END, now() "
	    "FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::bigint[]) "
	    "AS u(endpoint, state, next_ms, requests, errors, last_error, error_ms) "
	    "ON CONFLICT (endpoint) DO UPDATE SET state = excluded.state, next_attempt_at = excluded.next_attempt_at, "
	    "requests = excluded.requests, errors = excluded.errors, "
	    "last_error = coalesce(excluded.last_error, s.last_error), "
	    "last_error_at = coalesce(excluded.last_error_at, s.last_error_at), updated_at = now()",
	    {ArrayLiteral(names), ArrayLiteral(states), ArrayLiteral(next), ArrayLiteral(requests), ArrayLiteral(errors),
	     ArrayLiteral(last_error), ArrayLiteral(last_error_at)});
}

long
MsUntilNextDue()
{
	SpiText ms =
	    SpiExecPrepared(
	        "SELECT CASE WHEN count(*) = 0 THEN NULL WHEN bool_or(q.next_attempt_at IS NULL) THEN 0 "
	        "ELSE greatest(0, ceil(extract(epoch FROM "
	        "min(q.next_attempt_at) - clock_timestamp()) * 1000)) END::bigint FROM switchboard.queue q JOIN switchboard.routes r ON r.name = q.route AND r.enabled "
	        "JOIN switchboard.endpoints e ON e.name = r.endpoint AND e.enabled WHERE q.state = 'pending' "
	        "AND NOT EXISTS (SELECT 1 FROM switchboard.steps s WHERE s.route = q.route)")
	        .rows[0][0];
	if (!ms)
		return -1;
	return std::stol(*ms);
}

void
PruneHistory(int retention_s, int dead_letter_retention_s)
{
	SpiExecPrepared("DELETE FROM switchboard.delivery_log WHERE at < now() - $1::int * interval '1 second'",
	                {Num(retention_s)});
	if (dead_letter_retention_s <= 0)
		return; // the default: a dead letter waits for a DBA
	// Dropped like discard() would, and said so in deliveries (outcome 'expired'). At most
	// 1000 per prune, so that a first prune of a long-kept backlog does not hold up the claim
	// it runs in; dead letters of 0.1 have no failed_at, their capture time stands in.
	SpiExecPlanned(
	    "WITH gone AS (" +
	        PruneByCtid("switchboard.queue",
	                    "state = 'dead' AND coalesce(failed_at, captured_at) < now() - $1::int * interval '1 second'",
	                    1000) +
	        " RETURNING id, route, key, op, last_status) "
	        "INSERT INTO switchboard.delivery_log (route, key, op, change_id, outcome, http_status, error) "
	        "SELECT route, key, op, id, 'expired', last_status, "
	        "'dead letter dropped after switchboard.dead_letter_retention' FROM gone",
	    {Num(dead_letter_retention_s)}, kNoSeqScan);
}

} // namespace switchboard
