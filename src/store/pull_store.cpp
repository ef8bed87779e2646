#include "store/pull_store.h"

#include <algorithm>
#include <map>

#include "capture/enqueue.h"
#include "delivery/conflict.h"
#include "pg/as_role.h"
#include "pg/boundary.h"
#include "pg/expr.h"
#include "pg/spi.h"
#include "translate/translator.h"

namespace switchboard {

namespace {

std::string
Num(int64_t v)
{
	return std::to_string(v);
}

// While it lives, the route's own capture trigger ignores the writes (no echo); other
// routes on the same table still see them.
class SuppressCapture {
public:
	explicit SuppressCapture(const std::string &route) { SetCaptureSuppressedRoute(route.c_str()); }
	~SuppressCapture() { SetCaptureSuppressedRoute(nullptr); }
};

struct PullColumn {
	std::string field;
	std::string column;
	std::string type; // format_type of the column
	std::optional<std::string> pull_expr;
};

// The statements that apply records of one route, built from its definition.
struct ApplySql {
	std::string update;
	std::string insert;
	std::string remove;
};

// Keys with local changes still waiting to be pushed: the newest one's capture time (unix ms)
// and the queue ids. The queue is read as the worker; match_local, an expression of the route,
// is evaluated as its owner over the row images (never as the worker).
struct PendingKey {
	int64_t newest_ms = 0;
	std::vector<SpiText> ids;
};

std::map<std::string, PendingKey>
PendingLocalChanges(const RouteDef &def)
{
	SpiResult queued = SpiExecPrepared(
	    "SELECT q.id, q.key, coalesce(q.new, q.old)::text, "
	    "(pg_catalog.date_part('epoch', q.captured_at) * 1000)::pg_catalog.int8 "
	    "FROM switchboard.queue q WHERE q.route = $1 AND q.state IN ('pending', 'in_flight')",
	    {def.name});
	std::vector<SpiText> images;
	std::vector<size_t> unkeyed;
	for (size_t i = 0; i < queued.rows.size(); i++)
		if (!queued.rows[i][1]) {
			images.push_back(queued.rows[i][2]);
			unkeyed.push_back(i);
		}
	std::vector<SpiText> computed;
	if (!images.empty()) {
		AsRole as_owner(def.owner);
		SpiResult keys = SpiExecPrepared("SELECT k.key FROM pg_catalog.unnest($1::pg_catalog.json[]) WITH ORDINALITY "
		                                 "AS i(img, n) CROSS JOIN LATERAL (SELECT " +
		                                     Parenthesize(def.match_local) + "::pg_catalog.text AS key" +
		                                     RowFromClause(def.source, "i.img") + ") k ORDER BY i.n",
		                                 {ArrayLiteral(images)});
		for (auto &row : keys.rows)
			computed.push_back(row[0]);
	}
	std::map<std::string, PendingKey> pending;
	for (size_t i = 0, u = 0; i < queued.rows.size(); i++) {
		const SpiRow &row = queued.rows[i];
		SpiText key = row[1];
		if (!key && u < unkeyed.size() && unkeyed[u] == i)
			key = u < computed.size() ? computed[u++] : SpiText();
		if (!key)
			continue;
		PendingKey &p = pending[*key];
		p.newest_ms = std::max<int64_t>(p.newest_ms, std::stoll(*row[3]));
		p.ids.push_back(row[0]);
	}
	return pending;
}

ApplySql
BuildApplySql(const RouteDef &def, const std::vector<PullColumn> &columns)
{
	std::string table = QualifiedName(def.source);
	std::string alias = RelationAlias(def.source);
	std::string key = Parenthesize(def.match_local) + "::pg_catalog.text";
	ApplySql sql;
	auto value = [](const PullColumn &c) {
		std::string field = QuoteLiteral(c.field);
		if (c.pull_expr)
			return "CAST((SELECT " + Parenthesize(*c.pull_expr) + " FROM (SELECT pulled.rec OPERATOR(pg_catalog.->) " +
			       field + " AS value) AS v) AS " + c.type + ")";
		return "CAST(pulled.rec OPERATOR(pg_catalog.->>) " + field + " AS " + c.type + ")";
	};
	std::string sets, cols, values;
	for (const auto &c : columns) {
		std::string col = QuoteIdent(c.column);
		sets += (sets.empty() ? "" : ", ") + col + " = CASE WHEN pulled.rec OPERATOR(pg_catalog.?) " +
		        QuoteLiteral(c.field) + " THEN " + value(c) + " ELSE " + alias + "." + col + " END";
		cols += (cols.empty() ? "" : ", ") + col;
		values += (values.empty() ? "" : ", ") + value(c);
	}
	if (columns.empty()) {
		sets = "";
		cols = "";
	}
	// The key comparison is the owner's expression against text: resolved with the route's
	// search_path (pg_catalog first), as the owner, like the rest of these statements.
	sql.update = columns.empty() ? "SELECT pg_catalog.count(*) FROM " + table + " AS " + alias + " WHERE " + key +
	                                   " = $1::pg_catalog.text"
	                             : "UPDATE " + table + " AS " + alias + " SET " + sets +
	                                   " FROM (SELECT $2::pg_catalog.jsonb AS rec) AS pulled WHERE " + key +
	                                   " = $1::pg_catalog.text";
	sql.insert = columns.empty() ? ""
	                             : "INSERT INTO " + table + " (" + cols + ") SELECT " + values +
	                                   " FROM (SELECT $1::pg_catalog.jsonb AS rec) AS pulled";
	sql.remove = "DELETE FROM " + table + " AS " + alias + " WHERE " + key + " = $1::pg_catalog.text";
	return sql;
}

std::vector<PullColumn>
LoadPullColumns(const RouteDef &def)
{
	std::vector<PullColumn> columns;
	for (const auto &m : def.mappings) {
		if (!m.pull_column)
			continue;
		SpiResult found = SpiExecPrepared(
		    "SELECT format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute "
		    "WHERE attrelid = $1::oid AND attname = $2 AND attnum > 0 AND NOT attisdropped",
		    {Num(def.source), *m.pull_column});
		SpiText type = found.rows.empty() ? SpiText() : found.rows[0][0];
		if (!type)
			Fail(ERRCODE_UNDEFINED_COLUMN, "pull_column \"" + *m.pull_column + "\" of mapping \"" + m.remote_field +
			                                   "\" is no longer a column of the source table");
		columns.push_back(PullColumn{m.remote_field, *m.pull_column, *type, m.pull_expr});
	}
	return columns;
}

void
Log(const std::string &route, const SpiText &key, const std::string &outcome, const SpiText &status,
    const SpiText &latency, const SpiText &error)
{
	SpiExecPrepared("INSERT INTO switchboard.delivery_log (route, key, op, outcome, http_status, latency_ms, error) "
	                "VALUES ($1, $2, 'pull', $3, $4::int, $5::float8, $6)",
	                {route, key, outcome, status, latency, error});
}

} // namespace

std::vector<DuePull>
PullsDue(int limit, std::vector<RouteAction> *refused)
{
	SpiResult r = SpiExecPrepared(
	    "SELECT r.name, coalesce(p.phase, 'changes'), p.cursor_since, p.cursor_after, p.deletions_since, "
	    "p.deletions_after, r.conflict, (extract(epoch FROM r.pull_interval) * 1000)::bigint "
	    "FROM switchboard.routes r JOIN switchboard.endpoints e ON e.name = r.endpoint AND e.enabled "
	    "LEFT JOIN switchboard.pull_state p ON p.route = r.name "
	    "WHERE r.enabled AND r.direction IN ('pull', 'both') AND r.source IS NOT NULL "
	    "AND (p.next_pull_at IS NULL OR p.next_pull_at <= now()) "
	    "ORDER BY p.next_pull_at NULLS FIRST LIMIT $1::int",
	    {Num(limit)});
	std::vector<DuePull> due;
	for (const auto &row : r.rows) {
		// A route that cannot be loaded backs off with the reason (and is disabled by the
		// caller), instead of sorting first (its next_pull_at the oldest) and starving the others.
		std::optional<RouteDef> def;
		try {
			Subtransaction sub;
			def = FindRoute(*row[0], true);
			sub.Commit();
		} catch (const PgError &e) {
			long interval_ms = std::stol(*row[7]);
			RecordRoutePullError(*row[0], e.what(), 0, std::min<long>(interval_ms, 30 * 1000));
			refused->push_back(RouteAction{*row[0], e.what()});
			continue;
		}
		if (!def || !def->source_exists)
			continue;
		DuePull pull;
		pull.phase = *row[1] == "deletions" ? PullPhase::Deletions : PullPhase::Changes;
		PullCursor initial = InitialPullCursor(def->endpoint.kind);
		if (pull.phase == PullPhase::Changes)
			pull.cursor = PullCursor{row[2].value_or(initial.since), row[3].value_or("")};
		else
			pull.cursor = PullCursor{row[4].value_or(initial.since), row[5].value_or("")};
		pull.conflict = *row[6];
		pull.interval_ms = std::stol(*row[7]);
		for (const auto &m : def->mappings)
			if (m.pull_column)
				pull.fields.push_back(m.remote_field);
		pull.def = std::move(*def);
		due.push_back(std::move(pull));
	}
	return due;
}

PullCounts
ApplyPullPage(const DuePull &pull, const PullPage &page, long http_status, double latency_ms)
{
	const RouteDef &def = pull.def;
	PullCounts counts;
	std::vector<PullColumn> columns = LoadPullColumns(def);
	ApplySql sql = BuildApplySql(def, columns);
	std::vector<SpiText> rid_keys, rid_values, gone_keys;
	// Keys with local changes still waiting to be pushed, read once per page.
	std::map<std::string, PendingKey> pending = PendingLocalChanges(def);
	{
		SuppressCapture no_echo(def.name);
		for (const RemoteRecord &record : page.records) {
			try {
				Subtransaction sub;
				if (record.key.empty())
					Fail(ERRCODE_NULL_VALUE_NOT_ALLOWED, "remote record " + record.remote_id + " has no " +
					                                         def.route.match_remote + " (the match key)");
				// A pending local change of the same key: conflict, settled by routes.conflict.
				auto local = pending.find(record.key);
				if (local != pending.end()) {
					if (SettleConflict(pull.conflict, record.modified_ms, local->second.newest_ms) ==
					    ConflictWinner::Local) {
						counts.skipped++;
						sub.Commit();
						continue;
					}
					// The older local state must not overwrite what is being applied.
					SpiExecPrepared("DELETE FROM switchboard.queue WHERE id = ANY($1::pg_catalog.int8[])",
					                {ArrayLiteral(local->second.ids)});
					pending.erase(local);
				}
				// The table is written as the route's owner, with that role's privileges only
				// (a scope that ends before the subtransaction does: see AsRole).
				{
					AsRole as_owner(def.owner);
					if (record.deleted) {
						if (def.route.on_delete == "delete")
							SpiExecPrepared(sql.remove, {record.key});
						gone_keys.emplace_back(record.key);
						counts.deleted++;
					} else {
						std::string rec = record.fields.dump();
						SpiResult updated = SpiExecPrepared(sql.update, {record.key, rec});
						bool found = columns.empty() ? (!updated.rows.empty() && updated.rows[0][0] != SpiText("0"))
						                             : updated.processed > 0;
						if (!found && !sql.insert.empty())
							SpiExecPrepared(sql.insert, {rec});
						rid_keys.emplace_back(record.key);
						rid_values.emplace_back(record.remote_id);
						counts.applied++;
					}
				}
				sub.Commit();
			} catch (const PgError &e) {
				counts.failed++;
				Log(def.name, record.key.empty() ? SpiText(record.remote_id) : SpiText(record.key), "pull_failed",
				    Num(http_status), std::nullopt, std::string(e.what()));
			}
		}
	}
	if (!rid_keys.empty())
		SpiExecPrepared("INSERT INTO switchboard.remote_ids AS r (route, key, remote_id) "
		                "SELECT DISTINCT ON (key) $1, key, rid FROM unnest($2::text[], $3::text[]) "
		                "WITH ORDINALITY AS u(key, rid, n) ORDER BY key, n DESC "
		                "ON CONFLICT (route, key) DO UPDATE SET remote_id = excluded.remote_id, updated_at = now()",
		                {def.name, ArrayLiteral(rid_keys), ArrayLiteral(rid_values)});
	if (!gone_keys.empty())
		SpiExecPrepared("DELETE FROM switchboard.remote_ids WHERE route = $1 AND key = ANY($2::text[])",
		                {def.name, ArrayLiteral(gone_keys)});

	// Where the next request starts, stored with the page it follows.
	std::string phase = pull.phase == PullPhase::Changes ? "changes" : "deletions";
	std::string next_phase = phase;
	long delay_ms = 0;
	if (!page.more) {
		if (pull.phase == PullPhase::Changes && def.route.on_delete == "delete")
			next_phase = "deletions";
		else {
			next_phase = "changes";
			delay_ms = pull.interval_ms;
		}
	}
	bool changes = pull.phase == PullPhase::Changes;
	SpiExecPrepared(
	    "INSERT INTO switchboard.pull_state AS p (route, phase, cursor_since, cursor_after, deletions_since, "
	    "deletions_after, next_pull_at, last_pull_at, records_pulled, records_deleted, records_skipped, records_failed) "
	    "VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp() + $7::bigint * interval '1 ms', now(), $8::int, $9::int, "
	    "$10::int, $11::int) "
	    "ON CONFLICT (route) DO UPDATE SET phase = excluded.phase, "
	    "cursor_since = coalesce(excluded.cursor_since, p.cursor_since), "
	    "cursor_after = CASE WHEN $12::bool THEN excluded.cursor_after ELSE p.cursor_after END, "
	    "deletions_since = coalesce(excluded.deletions_since, p.deletions_since), "
	    "deletions_after = CASE WHEN $12::bool THEN p.deletions_after ELSE excluded.deletions_after END, "
	    "next_pull_at = excluded.next_pull_at, last_pull_at = now(), "
	    "records_pulled = p.records_pulled + excluded.records_pulled, "
	    "records_deleted = p.records_deleted + excluded.records_deleted, "
	    "records_skipped = p.records_skipped + excluded.records_skipped, "
	    "records_failed = p.records_failed + excluded.records_failed",
	    {def.name, next_phase, changes ? SpiText(page.next.since) : SpiText(),
	     changes ? SpiText(page.next.after) : SpiText(), changes ? SpiText() : SpiText(page.next.since),
	     changes ? SpiText() : SpiText(page.next.after), Num(delay_ms), Num(counts.applied), Num(counts.deleted),
	     Num(counts.skipped), Num(counts.failed), std::string(changes ? "true" : "false")});
	Log(def.name, std::to_string(page.records.size()) + " records", "pulled", Num(http_status),
	    std::to_string(latency_ms), std::nullopt);
	return counts;
}

void
RecordPullError(const DuePull &pull, const std::string &error, long http_status, long retry_ms)
{
	RecordRoutePullError(pull.def.name, error, http_status, retry_ms);
}

void
RecordRoutePullError(const std::string &route, const std::string &error, long http_status, long retry_ms)
{
	SpiExecPrepared("INSERT INTO switchboard.pull_state AS p (route, next_pull_at, last_error, last_error_at) "
	                "VALUES ($1, clock_timestamp() + $2::bigint * interval '1 ms', $3, now()) "
	                "ON CONFLICT (route) DO UPDATE SET next_pull_at = excluded.next_pull_at, "
	                "last_error = excluded.last_error, last_error_at = now()",
	                {route, Num(retry_ms), error});
	Log(route, std::nullopt, "pull_error", http_status ? SpiText(Num(http_status)) : SpiText(), std::nullopt, error);
}

PullMark
MarkPullStarted(const DuePull &pull)
{
	// A mark left by an earlier try counts only if no page was applied since it was set.
	SpiResult r = SpiExecPrepared(
	    "SELECT p.last_error, p.last_error_at::text, CASE WHEN p.last_error LIKE 'the worker stopped while pulling%' "
	    "AND (p.last_pull_at IS NULL OR p.last_pull_at < p.last_error_at) "
	    "THEN coalesce(pg_catalog.substring(p.last_error, '\\((\\d{1,6}) times?'), '1')::int ELSE 0 END "
	    "FROM switchboard.pull_state p WHERE p.route = $1 FOR UPDATE",
	    {pull.def.name});
	PullMark mark;
	if (!r.rows.empty()) {
		mark.last_error = r.rows[0][0];
		mark.last_error_at = r.rows[0][1];
		mark.stops = std::stoi(r.rows[0][2].value_or("0"));
	}
	mark.stops++;
	// 1st stop: as after a failed page (but at least 1 s); then doubling, at most an hour.
	long delay_ms = std::clamp<long>(pull.interval_ms, 1000, 30 * 1000) << std::min(mark.stops - 1, 12);
	delay_ms = std::min<long>(delay_ms, 3600 * 1000);
	std::string error = "the worker stopped while pulling a page of this route (" + Num(mark.stops) +
	                    (mark.stops == 1 ? " time" : " times") + " in a row); pulling again after a backoff";
	SpiExecPrepared("INSERT INTO switchboard.pull_state AS p (route, next_pull_at, last_error, last_error_at) "
	                "VALUES ($1, clock_timestamp() + $2::bigint * interval '1 ms', $3, now()) "
	                "ON CONFLICT (route) DO UPDATE SET next_pull_at = excluded.next_pull_at, "
	                "last_error = excluded.last_error, last_error_at = excluded.last_error_at",
	                {pull.def.name, Num(delay_ms), error});
	return mark;
}

void
ClearPullMark(const DuePull &pull, const PullMark &mark)
{
	SpiExecPrepared(
	    "UPDATE switchboard.pull_state SET last_error = $2, last_error_at = $3::timestamptz WHERE route = $1",
	    {pull.def.name, mark.last_error, mark.last_error_at});
}

long
MsUntilNextPull()
{
	SpiText ms = SpiExecPrepared(
	                 "SELECT CASE WHEN count(*) = 0 THEN NULL WHEN bool_or(p.next_pull_at IS NULL) THEN 0 "
	                 "ELSE greatest(0, ceil(extract(epoch FROM "
	                 "min(p.next_pull_at) - clock_timestamp()) * 1000)) END::bigint "
	                 "FROM switchboard.routes r JOIN switchboard.endpoints e ON e.name = r.endpoint AND e.enabled "
	                 "LEFT JOIN switchboard.pull_state p ON p.route = r.name "
	                 "WHERE r.enabled AND r.direction IN ('pull', 'both') AND r.source IS NOT NULL")
	                 .rows[0][0];
	return ms ? std::stol(*ms) : -1;
}

} // namespace switchboard
