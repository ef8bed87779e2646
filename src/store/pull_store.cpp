#include "store/pull_store.h"

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>

#include "capture/enqueue.h"
#include "connectors/crypto.h"
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
	bool pushed = false; // the same remote field is pushed too (its mapping has a push_expr)
};

// The statements that apply records of one route, built from its definition.
struct ApplySql {
	std::string update;             // every pulled column; RETURNING them as a jsonb object
	std::string update_pulled_only; // only the columns whose field is pulled but not pushed ("" if none)
	std::string insert;
	std::string remove;
	std::string lock; // locks the rows of the page's keys ("" without pull columns)
	// The whole page in one statement ($1 keys, $2 records, in page order; the last record of a
	// key wins): an UPDATE of the rows that have a key, an INSERT of the others.
	std::string page;
};

// Keys with local changes still waiting to be pushed: the newest one's capture time (unix ms)
// and the queue ids. The queue is read as the worker; match_local, an expression of the route,
// is evaluated as its owner over the row images (never as the worker).
struct PendingKey {
	int64_t newest_ms = 0;
	std::vector<SpiText> ids;
	bool deletes = false; // one of them deletes the row
};

// Issue 10.6: the keys of the route's changes that no claim has keyed yet (capture evaluates
// no user expression), computed once as the owner and kept here by queue id, so that a page
// computes only the keys of changes queued since the last page rather than of the whole backlog
// (50,000 queued changes made every Salesforce page of a big table take about a second). A
// queued change's images do not change (but for the remote-wins merge below, which forgets its
// ids), so a key computed once stays right while the route's key expression, source and owner
// stay the same: the cache is dropped when they change. A route of the same name created
// again starts with no queued change (the trigger refuses it otherwise). captured_ms is checked
// too, so that an id handed out again (a sequence reset) is never taken for the old change.
struct CachedKey {
	int64_t captured_ms = 0;
	SpiText key;
};
struct RouteKeyCache {
	std::string fingerprint;
	std::unordered_map<int64_t, CachedKey> keys;
};
std::map<std::string, RouteKeyCache> unkeyed_keys;
constexpr size_t kKeyCacheMax = 200000; // per route; past it, the rest is computed per page

std::string
KeyFingerprint(const RouteDef &def)
{
	return std::to_string(def.owner) + "/" + std::to_string(def.source) + "/" + def.match_local;
}

void
ForgetCachedKeys(const std::string &route, const std::vector<SpiText> &ids)
{
	auto found = unkeyed_keys.find(route);
	if (found == unkeyed_keys.end())
		return;
	for (const SpiText &id : ids)
		if (id)
			found->second.keys.erase(std::stoll(*id));
}

// Rows of a route's keyed table (remote_ids, pushed_state; primary key (route, key)) for the keys
// in $2 (route $1), as `what` of r: each key probes the primary key (LATERAL, fenced by OFFSET 0
// so that the planner cannot flatten it into a join it reorders; run with kByIndex). A table last
// analyzed nearly empty was otherwise read whole for each page, or = ANY cast its text
// parameter again for each row read: 30-50 ms for a page of 100 keys.
std::string
ByKeys(const std::string &table, const std::string &what, const std::string &condition)
{
	return "SELECT " + what + " FROM (SELECT DISTINCT k FROM pg_catalog.unnest($2::pg_catalog.text[]) AS u(k)) AS u " +
	       "CROSS JOIN LATERAL (SELECT ctid, * FROM " + table + " WHERE route = $1 AND key = u.k" + condition +
	       " OFFSET 0) AS r";
}

std::map<std::string, PendingKey>
PendingLocalChanges(const RouteDef &def, const std::vector<SpiText> &keys)
{
	// The keyed half: = ANY of an array computed once (an InitPlan); on a queue whose statistics
	// were stale, a semi-join was planned as a nested loop over the queue, ten times slower.
	// in_flight counts too: a change being pushed right now is still newer local state. A
	// delete has only its old image. Keyed changes (tried before) of the page's keys come
	// through the index queue_route_key; changes not yet claimed have no key: they are listed
	// (their ids only, no images) and the keys not cached yet are computed from their images.
	SpiResult queued = SpiExecPrepared(
	    "SELECT q.id, q.key, (pg_catalog.date_part('epoch', q.captured_at) * 1000)::pg_catalog.int8, q.op "
	    "FROM switchboard.queue q WHERE q.route = $1 AND q.key IS NOT NULL "
	    "AND q.key = ANY((SELECT $2::pg_catalog.text[])::pg_catalog.text[]) "
	    "AND q.state IN ('pending', 'in_flight') "
	    "UNION ALL "
	    "SELECT q.id, NULL, (pg_catalog.date_part('epoch', q.captured_at) * 1000)::pg_catalog.int8, q.op "
	    "FROM switchboard.queue q WHERE q.route = $1 AND q.key IS NULL AND q.state IN ('pending', 'in_flight')",
	    {def.name, ArrayLiteral(keys)});
	RouteKeyCache &cache = unkeyed_keys[def.name];
	if (cache.fingerprint != KeyFingerprint(def)) {
		cache.fingerprint = KeyFingerprint(def);
		cache.keys.clear();
	}
	std::unordered_map<int64_t, CachedKey> still_queued; // the cache, without changes gone since
	std::vector<SpiText> missing;                        // ids of unkeyed changes not cached
	std::vector<size_t> missing_rows;
	std::vector<SpiText> row_keys(queued.rows.size());
	for (size_t i = 0; i < queued.rows.size(); i++) {
		const SpiRow &row = queued.rows[i];
		if (row[1]) {
			row_keys[i] = row[1];
			continue;
		}
		int64_t id = std::stoll(*row[0]), ms = std::stoll(*row[2]);
		auto hit = cache.keys.find(id);
		if (hit != cache.keys.end() && hit->second.captured_ms == ms) {
			row_keys[i] = hit->second.key;
			still_queued.emplace(id, hit->second); // a copy: a statement below may still fail
		} else {
			missing.push_back(row[0]);
			missing_rows.push_back(i);
		}
	}
	if (!missing.empty()) {
		// The images, then their keys as the owner in one statement; ORDER BY the ordinality, so
		// keys come back in the order of `missing`.
		// (By queue_pkey per id, kByIndex: a hash join would read the whole queue.)
		SpiResult images = SpiExecPlanned(
		    "SELECT coalesce(q.new, q.old)::text FROM pg_catalog.unnest($1::pg_catalog.int8[]) "
		    "WITH ORDINALITY AS m(id, n) LEFT JOIN switchboard.queue q ON q.id = m.id ORDER BY m.n",
		    {ArrayLiteral(missing)}, kByIndex);
		std::vector<SpiText> imgs;
		for (auto &row : images.rows)
			imgs.push_back(row[0]);
		AsRole as_owner(def.owner);
		SpiResult found = SpiExecPrepared("SELECT k.key FROM pg_catalog.unnest($1::pg_catalog.json[]) WITH ORDINALITY "
		                                  "AS i(img, n) CROSS JOIN LATERAL (SELECT " +
		                                      Parenthesize(def.match_local) + "::pg_catalog.text AS key" +
		                                      RowFromClause(def.source, "i.img") + ") k ORDER BY i.n",
		                                  {ArrayLiteral(imgs)});
		for (size_t m = 0; m < missing_rows.size() && m < found.rows.size(); m++) {
			size_t i = missing_rows[m];
			// A change gone between the two statements (delivered) has no image: no key, not cached.
			if (!imgs[m])
				continue;
			row_keys[i] = found.rows[m][0];
			if (still_queued.size() < kKeyCacheMax)
				still_queued.emplace(std::stoll(*queued.rows[i][0]),
				                     CachedKey{std::stoll(*queued.rows[i][2]), found.rows[m][0]});
		}
	}
	cache.keys = std::move(still_queued);
	std::set<std::string> wanted;
	for (const SpiText &k : keys)
		if (k)
			wanted.insert(*k);
	std::map<std::string, PendingKey> pending;
	for (size_t i = 0; i < queued.rows.size(); i++) {
		const SpiRow &row = queued.rows[i];
		const SpiText &key = row_keys[i];
		// A NULL key identifies no remote record, so it cannot conflict with one.
		if (!key || !wanted.count(*key))
			continue;
		// The conflict rule compares the remote change with the newest local one.
		PendingKey &p = pending[*key];
		p.newest_ms = std::max<int64_t>(p.newest_ms, std::stoll(*row[2]));
		p.ids.push_back(row[0]);
		p.deletes = p.deletes || row[3] == SpiText("delete");
	}
	return pending;
}

// Per key, the fields of the last change this route delivered (see NotePushedStates).
std::map<std::string, Json>
PushedStates(const RouteDef &def, const std::vector<SpiText> &keys)
{
	std::map<std::string, Json> out;
	SpiResult r = SpiExecPlanned(ByKeys("switchboard.pushed_state", "r.key, r.fields::text", ""),
	                             {def.name, ArrayLiteral(keys)}, kByIndex);
	for (const auto &row : r.rows) {
		Json fields = Json::parse(*row[1], nullptr, false);
		if (!fields.is_discarded())
			out[*row[0]] = std::move(fields);
	}
	return out;
}

ApplySql
BuildApplySql(const RouteDef &def, const std::vector<PullColumn> &columns)
{
	std::string table = QualifiedName(def.source);
	std::string alias = RelationAlias(def.source);
	std::string key = Parenthesize(def.match_local) + "::pg_catalog.text";
	ApplySql sql;
	// With a pull_expr the expression sees the field as jsonb ("value", -> keeps its JSON
	// type); without, the field's text (->>) goes through the column type's input, as the
	// mapping was validated (AnalyzeValueExpression).
	auto value = [](const PullColumn &c) {
		std::string field = QuoteLiteral(c.field);
		if (c.pull_expr)
			return "CAST((SELECT " + Parenthesize(*c.pull_expr) + " FROM (SELECT pulled.rec OPERATOR(pg_catalog.->) " +
			       field + " AS value) AS v) AS " + c.type + ")";
		return "CAST(pulled.rec OPERATOR(pg_catalog.->>) " + field + " AS " + c.type + ")";
	};
	auto set = [&](const PullColumn &c) {
		std::string col = QuoteIdent(c.column);
		// A field missing from the record leaves its column alone: a record that carries only
		// some properties must not set the others to NULL.
		return col + " = CASE WHEN pulled.rec OPERATOR(pg_catalog.?) " + QuoteLiteral(c.field) + " THEN " + value(c) +
		       " ELSE " + alias + "." + col + " END";
	};
	std::string sets, pulled_only_sets, cols, values, returned;
	for (size_t i = 0; i < columns.size(); i++) {
		const PullColumn &c = columns[i];
		sets += (sets.empty() ? "" : ", ") + set(c);
		if (!c.pushed)
			pulled_only_sets += (pulled_only_sets.empty() ? "" : ", ") + set(c);
		cols += (cols.empty() ? "" : ", ") + QuoteIdent(c.column);
		values += (values.empty() ? "" : ", ") + value(c);
		// The pulled columns as they are now, to merge into the images of pending local
		// changes (jsonb_build_object takes at most 100 arguments: chunks of 40 columns).
		if (i % 40 == 0)
			returned += std::string(i ? ") OPERATOR(pg_catalog.||) " : "") + "pg_catalog.jsonb_build_object(";
		else
			returned += ", ";
		returned += QuoteLiteral(c.column) + ", " + alias + "." + QuoteIdent(c.column);
	}
	if (!returned.empty())
		returned += ")";
	// The key comparison is the owner's expression against text: resolved with the route's
	// search_path (pg_catalog first), as the owner, like the rest of these statements.
	// Update, then insert when no row matched: the key is an expression (lower(email)), which
	// no unique index need back, so INSERT ... ON CONFLICT cannot express this upsert.
	auto update = [&](const std::string &with) {
		return "UPDATE " + table + " AS " + alias + " SET " + with +
		       " FROM (SELECT $2::pg_catalog.jsonb AS rec) AS pulled WHERE " + key +
		       " = $1::pg_catalog.text RETURNING (" + returned + ")::pg_catalog.text";
	};
	sql.update = columns.empty() ? "SELECT pg_catalog.count(*) FROM " + table + " AS " + alias + " WHERE " + key +
	                                   " = $1::pg_catalog.text"
	                             : update(sets);
	sql.update_pulled_only = pulled_only_sets.empty() ? "" : update(pulled_only_sets);
	sql.insert = columns.empty() ? ""
	                             : "INSERT INTO " + table + " (" + cols + ") SELECT " + values +
	                                   " FROM (SELECT $1::pg_catalog.jsonb AS rec) AS pulled";
	// Sorted, so two pulls (or a pull and a writer locking in key order) wait instead of deadlocking.
	// IN (SELECT unnest(...)), not = ANY($1::text[]): a semi-join (an index probe per key, or a
	// hash), where = ANY compares every row a scan visits with each of 2,000 keys, and casts the
	// text parameter to an array again for each row (on a table whose statistics say it is
	// small, the plan is a scan: seconds per page).
	sql.lock = columns.empty() ? ""
	                           : "SELECT 1 FROM " + table + " AS " + alias + " WHERE " + key +
	                                 " IN (SELECT pg_catalog.unnest($1::pg_catalog.text[])) ORDER BY " + key +
	                                 " FOR UPDATE OF " + alias;
	sql.remove = "DELETE FROM " + table + " AS " + alias + " WHERE " + key + " = $1::pg_catalog.text";
	if (!columns.empty())
		sql.page =
		    "WITH pulled AS (SELECT DISTINCT ON (u.k) u.k, u.rec FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), "
		    "pg_catalog.unnest($2::pg_catalog.jsonb[])) WITH ORDINALITY AS u(k, rec, n) ORDER BY u.k, u.n DESC), "
		    "updated AS (UPDATE " +
		    table + " AS " + alias + " SET " + sets + " FROM pulled WHERE " + key +
		    " = pulled.k RETURNING pulled.k) "
		    "INSERT INTO " +
		    table + " (" + cols + ") SELECT " + values +
		    " FROM pulled WHERE NOT EXISTS (SELECT 1 FROM updated WHERE updated.k = pulled.k)";
	return sql;
}

std::vector<PullColumn>
LoadPullColumns(const RouteDef &def)
{
	std::vector<PullColumn> columns;
	for (const auto &m : def.mappings) {
		if (!m.pull_column)
			continue;
		// Looked up per page, not taken from validation: the column may have been dropped or
		// retyped since. The typmod comes along, so varchar(20) and numeric(10,2) are enforced.
		SpiResult found = SpiExecPrepared(
		    "SELECT format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute "
		    "WHERE attrelid = $1::oid AND attname = $2 AND attnum > 0 AND NOT attisdropped",
		    {Num(def.source), *m.pull_column});
		SpiText type = found.rows.empty() ? SpiText() : found.rows[0][0];
		if (!type)
			Fail(ERRCODE_UNDEFINED_COLUMN, "pull_column \"" + *m.pull_column + "\" of mapping \"" + m.remote_field +
			                                   "\" is no longer a column of the source table");
		columns.push_back(PullColumn{m.remote_field, *m.pull_column, *type, m.pull_expr, m.push_expr.has_value()});
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

// One remote record, in the caller's subtransaction. pending/pushed/known_ids: as read after
// the page's rows were locked.
PullCounts
ApplyOneRecord(const RouteDef &def, const std::string &conflict, const ApplySql &sql, const RemoteRecord &record,
               bool push_only, const std::vector<std::string> &both, std::map<std::string, PendingKey> *pending,
               const std::map<std::string, Json> &pushed, const std::map<std::string, std::string> &known_ids,
               std::vector<SpiText> *rid_keys, std::vector<SpiText> *rid_values, std::vector<SpiText> *gone_keys)
{
	PullCounts counts;
	if (record.key.empty())
		Fail(ERRCODE_NULL_VALUE_NOT_ALLOWED,
		     "remote record " + record.remote_id + " has no " + def.route.match_remote + " (the match key)");
	if (record.deleted) {
		// Only the deletion of the very record the route knows for the key (issue 10.3): a
		// record archived long ago, whose key the application has created again since (a new
		// remote record, a new id), deletes nothing.
		auto known = known_ids.find(record.key);
		if (known == known_ids.end() || known->second != record.remote_id) {
			counts.skipped++;
			return counts;
		}
	}
	auto local = pending->find(record.key);
	// Our own push coming back (issue 10.1) is no remote change: it never beats a local one.
	auto last = pushed.find(record.key);
	bool echo = !record.deleted && last != pushed.end() && IsEchoOfPush(last->second, record.fields, both);
	if (local != pending->end()) {
		ConflictWinner winner = echo ? ConflictWinner::Local
		                             : SettleConflict(conflict, record.modified_ms, local->second.newest_ms);
		if (winner == ConflictWinner::Local) {
			// The local change is pushed later and overwrites the remote one; fields that are
			// pulled and never pushed are no part of it, and still arrive.
			if (!record.deleted && !sql.update_pulled_only.empty()) {
				AsRole as_owner(def.owner);
				SpiExecPrepared(sql.update_pulled_only, {record.key, record.fields.dump()});
			}
			counts.skipped++;
			return counts;
		}
	}
	std::string merged; // the pulled columns after the update, as jsonb text
	bool found = false;
	// The table is written as the route's owner, with that role's privileges only (a scope
	// that ends before the subtransaction does: see AsRole).
	{
		AsRole as_owner(def.owner);
		if (record.deleted) {
			// on_delete = 'ignore' keeps the local row; only the remote id is forgotten, as it
			// names nothing any more.
			if (def.route.on_delete == "delete")
				SpiExecPrepared(sql.remove, {record.key});
			gone_keys->emplace_back(record.key);
			counts.deleted++;
		} else {
			std::string rec = record.fields.dump();
			SpiResult updated = SpiExecPrepared(sql.update, {record.key, rec});
			// With no pull columns, the "update" only counted the matching rows.
			if (sql.insert.empty()) {
				found = !updated.rows.empty() && updated.rows[0][0] != SpiText("0");
			} else {
				found = updated.processed > 0;
				if (found && !updated.rows.empty() && updated.rows[0][0])
					merged = *updated.rows[0][0];
			}
			if (!found && !sql.insert.empty())
				SpiExecPrepared(sql.insert, {rec});
			rid_keys->emplace_back(record.key);
			rid_values->emplace_back(record.remote_id);
			counts.applied++;
		}
	}
	if (local != pending->end()) {
		// The remote won: it wins for the pulled fields only (issue 10.2). A pending change
		// that also carries fields which are pushed and never pulled stays queued, its images
		// merged with the remote values, so it pushes its own fields and the remote's for the
		// rest. Otherwise (or when it deleted the row, or the row is not there to merge with)
		// it is dropped: its older state must not overwrite what was applied.
		if (push_only && !local->second.deletes && !merged.empty()) {
			ForgetCachedKeys(def.name, local->second.ids); // their images change
			SpiExecPrepared("UPDATE switchboard.queue SET new = (new::pg_catalog.jsonb OPERATOR(pg_catalog.||) "
			                "$2::pg_catalog.jsonb)::pg_catalog.json "
			                "WHERE id = ANY($1::pg_catalog.int8[]) AND new IS NOT NULL",
			                {ArrayLiteral(local->second.ids), merged});
		} else {
			SpiExecPrepared("DELETE FROM switchboard.queue WHERE id = ANY($1::pg_catalog.int8[])",
			                {ArrayLiteral(local->second.ids)});
		}
		pending->erase(local);
	}
	return counts;
}

// Before a record is tried again: the writer it raced has committed by now (a unique check, a
// deadlock), so its row is locked again and its pending changes read again.
void
RecheckKey(const RouteDef &def, const ApplySql &sql, const std::string &key, std::map<std::string, PendingKey> *pending)
{
	if (key.empty())
		return;
	std::vector<SpiText> keys{SpiText(key)};
	if (!sql.lock.empty()) {
		try {
			Subtransaction sub;
			{
				AsRole as_owner(def.owner);
				SpiExecPrepared(sql.lock, {ArrayLiteral(keys)});
			}
			sub.Commit();
		} catch (const PgError &) {
			// The record's own try reports what is wrong.
		}
	}
	std::map<std::string, PendingKey> fresh = PendingLocalChanges(def, keys);
	pending->erase(key);
	if (!fresh.empty())
		(*pending)[key] = fresh.begin()->second;
}

bool
IsTransient(int sqlerrcode)
{
	return sqlerrcode == ERRCODE_T_R_DEADLOCK_DETECTED || sqlerrcode == ERRCODE_T_R_SERIALIZATION_FAILURE ||
	       sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE || sqlerrcode == ERRCODE_UNIQUE_VIOLATION;
}

} // namespace

std::vector<DuePull>
PullsDue(int limit, std::vector<RouteAction> *refused)
{
	// Never-pulled routes first (NULLS FIRST), then the longest overdue. Each phase (changes,
	// then deletions when on_delete = 'delete') keeps a cursor of its own.
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
			// Its own subtransaction: a definition that fails its checks aborts only them, and
			// the other routes of the batch are still served.
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
		// No stored cursor yet: where the kind starts (its own time format).
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

// What a pulled version is recognised by once applied: its fields (times included).
std::string
VersionHash(const RemoteRecord &record)
{
	return Base64Encode(HmacSha256("switchboard pulled version", record.fields.dump()));
}

// The records of a page less the versions this route has applied already (issue 10.4): each
// cycle starts an overlap window before the cursor, and keyset paging reads the records of a
// page's boundary time again. A version already applied (the same remote record, stamped
// earlier than the one applied, or at the same time with the same fields) is no remote change:
// it is not applied, counted or settled against a pending local change again. Equal times
// with other fields are applied: Salesforce stamps whole seconds, two versions can share one.
// A deletion stamped earlier than a version applied since is dropped too (a late redelivery of
// a webhook after the record came back). *kept: the index in records of each one returned.
std::vector<RemoteRecord>
NotYetApplied(const RouteDef &def, const std::vector<RemoteRecord> &records, std::vector<size_t> *kept)
{
	kept->clear();
	for (size_t i = 0; i < records.size(); i++)
		kept->push_back(i);
	std::vector<SpiText> keys;
	{
		std::set<std::string> seen;
		for (const RemoteRecord &record : records)
			if (!record.key.empty() && record.modified_ms > 0 && seen.insert(record.key).second)
				keys.emplace_back(record.key);
	}
	if (keys.empty())
		return records;
	struct Applied {
		std::string remote_id;
		int64_t ms;
		std::string hash;
	};
	std::map<std::string, Applied> applied;
	for (const auto &row :
	     SpiExecPlanned(ByKeys("switchboard.remote_ids", "r.key, r.remote_id, r.pulled_ms, r.pulled_hash",
	                           " AND pulled_ms IS NOT NULL"),
	                    {def.name, ArrayLiteral(keys)}, kByIndex)
	         .rows)
		applied[*row[0]] = Applied{*row[1], std::stoll(*row[2]), row[3].value_or("")};
	if (applied.empty())
		return records;
	std::vector<RemoteRecord> fresh;
	kept->clear();
	for (size_t i = 0; i < records.size(); i++) {
		const RemoteRecord &record = records[i];
		auto known = applied.find(record.key);
		// A deletion older than a version applied since (a webhook redelivered a day late, after
		// the record was restored) is as stale as an older version.
		bool again = record.modified_ms > 0 && known != applied.end() && known->second.remote_id == record.remote_id &&
		             (record.modified_ms < known->second.ms ||
		              (!record.deleted && record.modified_ms == known->second.ms &&
		               known->second.hash == VersionHash(record)));
		if (!again) {
			fresh.push_back(record);
			kept->push_back(i);
		}
	}
	return fresh;
}

PullCounts
ApplyRemoteRecords(const RouteDef &def, const std::string &conflict, const std::vector<RemoteRecord> &page_records,
                   long http_status, std::vector<RecordFailure> *failures)
{
	PullCounts counts;
	// kept: each record's index in page_records, which failures name.
	std::vector<size_t> kept;
	const std::vector<RemoteRecord> records = NotYetApplied(def, page_records, &kept);
	std::vector<PullColumn> columns = LoadPullColumns(def);
	ApplySql sql = BuildApplySql(def, columns);
	// Remote fields both pushed and pulled: what an echo of our own push is recognised by.
	std::vector<std::string> both;
	bool push_only = false; // fields pushed but never pulled: a pending local change keeps them
	for (const auto &m : def.mappings) {
		if (m.push_expr && m.pull_column)
			both.push_back(m.remote_field);
		if (m.push_expr && !m.pull_column)
			push_only = true;
	}
	std::vector<SpiText> keys;
	{
		std::set<std::string> seen;
		for (const RemoteRecord &record : records)
			if (!record.key.empty() && seen.insert(record.key).second)
				keys.emplace_back(record.key);
	}
	std::sort(keys.begin(), keys.end());
	// Lock the page's rows first (issue 10.2): an application write committed before the lock
	// is seen by the reads below; one still running waits until this page is applied, and is
	// then a newer local change like any other. Without the privilege to lock (the owner
	// cannot update the table), each record fails on its own below, as before.
	if (!sql.lock.empty() && !keys.empty()) {
		try {
			Subtransaction sub;
			{
				AsRole as_owner(def.owner);
				SpiExecPrepared(sql.lock, {ArrayLiteral(keys)});
			}
			sub.Commit();
		} catch (const PgError &e) {
			if (IsTransient(e.sqlerrcode))
				throw;
		}
	}
	// Read after the lock: keys with local changes still waiting to be pushed, what this route
	// last pushed for them, and the remote ids it knows.
	std::map<std::string, PendingKey> pending = PendingLocalChanges(def, keys);
	std::map<std::string, Json> pushed = both.empty() ? std::map<std::string, Json>() : PushedStates(def, keys);
	std::map<std::string, std::string> known_ids;
	bool any_deleted = std::any_of(records.begin(), records.end(), [](const RemoteRecord &r) { return r.deleted; });
	if (any_deleted)
		for (const auto &row : SpiExecPlanned(ByKeys("switchboard.remote_ids", "r.key, r.remote_id", ""),
		                                      {def.name, ArrayLiteral(keys)}, kByIndex)
		                           .rows)
			known_ids[*row[0]] = *row[1];
	std::vector<SpiText> rid_keys, rid_values, gone_keys;
	SuppressCapture no_echo(def.name);
	// The usual page (issue 10.6): one statement for the records of every key that has neither a
	// pending local change nor a deletion in the page; those others (and records without a key)
	// go record by record below. When the statement fails (a bad record), its records are
	// applied record by record too, as the push does with a batch, so the bad record fails alone.
	std::vector<size_t> one_by_one, together;
	std::set<std::string> apart;
	for (const RemoteRecord &record : records)
		if (record.deleted || pending.count(record.key))
			apart.insert(record.key);
	for (size_t i = 0; i < records.size(); i++)
		(sql.page.empty() || records[i].key.empty() || apart.count(records[i].key) ? one_by_one : together)
		    .push_back(i);
	if (!together.empty()) {
		std::vector<SpiText> page_keys, page_records;
		for (size_t i : together) {
			page_keys.emplace_back(records[i].key);
			page_records.emplace_back(records[i].fields.dump());
		}
		bool applied = false;
		try {
			Subtransaction sub;
			{
				AsRole as_owner(def.owner);
				SpiExecPrepared(sql.page, {ArrayLiteral(page_keys), ArrayLiteral(page_records)});
			}
			sub.Commit();
			applied = true;
		} catch (const PgError &) {
			// rolled back: record by record, each failure on its own
		}
		if (applied) {
			for (size_t i : together) {
				rid_keys.emplace_back(records[i].key);
				rid_values.emplace_back(records[i].remote_id);
			}
			counts.applied += static_cast<int>(together.size());
		} else {
			// It may have failed on a writer it raced (an insert of the same key): that one has
			// committed by now, so the rows are locked and the pending changes read again.
			try {
				Subtransaction sub;
				{
					AsRole as_owner(def.owner);
					SpiExecPrepared(sql.lock, {ArrayLiteral(keys)});
				}
				sub.Commit();
			} catch (const PgError &) {
				// Each record's own try reports what is wrong.
			}
			pending = PendingLocalChanges(def, keys);
			one_by_one.insert(one_by_one.end(), together.begin(), together.end());
			std::sort(one_by_one.begin(), one_by_one.end()); // page order
		}
	}
	for (size_t index : one_by_one) {
		const RemoteRecord &record = records[index];
		// A transient failure (a deadlock with the application, an insert racing ours) is tried
		// again; past that the page fails as a whole and its cursor stays: never skipped.
		for (int attempt = 1;; attempt++) {
			if (attempt > 1)
				RecheckKey(def, sql, record.key, &pending);
			try {
				// One subtransaction per record: a record that fails (a cast, a constraint, a
				// privilege) is logged and rolled back alone; the rest of the page applies.
				Subtransaction sub;
				PullCounts one = ApplyOneRecord(def, conflict, sql, record, push_only, both, &pending, pushed,
				                                known_ids, &rid_keys, &rid_values, &gone_keys);
				sub.Commit();
				counts.applied += one.applied;
				counts.deleted += one.deleted;
				counts.skipped += one.skipped;
				break;
			} catch (const PgError &e) {
				bool transient = IsTransient(e.sqlerrcode);
				// A unique violation that holds once the other writer has committed is the record's own.
				int limit = e.sqlerrcode == ERRCODE_UNIQUE_VIOLATION ? 2 : 3;
				if (transient && attempt < limit)
					continue;
				if (transient && e.sqlerrcode != ERRCODE_UNIQUE_VIOLATION)
					throw;
				counts.failed++;
				Log(def.name, record.key.empty() ? SpiText(record.remote_id) : SpiText(record.key), "pull_failed",
				    Num(http_status), std::nullopt, std::string(e.what()));
				if (failures)
					failures->push_back(RecordFailure{kept[index], e.what()});
				break;
			}
		}
	}
	// Remote ids let later pushes and deletes address the remote record. DISTINCT ON keeps
	// the last record of a key the page holds twice: ON CONFLICT cannot update one row twice
	// in a statement.
	// With the version applied (its time and a hash of its fields), so that reading it again
	// applies nothing (see NotYetApplied).
	if (!rid_keys.empty()) {
		std::map<std::string, const RemoteRecord *> last;
		for (const RemoteRecord &record : records)
			if (!record.deleted)
				last[record.key] = &record;
		std::vector<SpiText> rid_ms, rid_hashes;
		for (const SpiText &key : rid_keys) {
			auto found = last.find(*key);
			if (found == last.end() || found->second->modified_ms <= 0) {
				rid_ms.emplace_back(std::nullopt);
				rid_hashes.emplace_back(std::nullopt);
			} else {
				rid_ms.emplace_back(Num(found->second->modified_ms));
				rid_hashes.emplace_back(VersionHash(*found->second));
			}
		}
		SpiExecPrepared("INSERT INTO switchboard.remote_ids AS r (route, key, remote_id, pulled_ms, pulled_hash) "
		                "SELECT DISTINCT ON (key) $1, key, rid, ms, h "
		                "FROM unnest($2::text[], $3::text[], $4::int8[], $5::text[]) "
		                "WITH ORDINALITY AS u(key, rid, ms, h, n) ORDER BY key, n DESC "
		                "ON CONFLICT (route, key) DO UPDATE SET remote_id = excluded.remote_id, "
		                "pulled_ms = excluded.pulled_ms, pulled_hash = excluded.pulled_hash, updated_at = now()",
		                {def.name, ArrayLiteral(rid_keys), ArrayLiteral(rid_values), ArrayLiteral(rid_ms),
		                 ArrayLiteral(rid_hashes)});
	}
	if (!gone_keys.empty())
		SpiExecPlanned("DELETE FROM switchboard.remote_ids WHERE ctid OPERATOR(pg_catalog.=) ANY(ARRAY(" +
		                   ByKeys("switchboard.remote_ids", "r.ctid", "") + ")) AND route = $1",
		               {def.name, ArrayLiteral(gone_keys)}, kByIndex);
	return counts;
}

PullCounts
ApplyPullPage(const DuePull &pull, const PullPage &page, long http_status, double latency_ms)
{
	// Records, remote ids and the cursor are written in the caller's one transaction, so a
	// crash never skips or applies a page twice (SPEC §6).
	const RouteDef &def = pull.def;
	// The page was fetched with no transaction open: the route may have been renamed, changed
	// hands or been disabled meanwhile. Lock its row (a rename or delete waits until this page
	// is applied) and apply nothing if it is not the route the page was fetched for; the
	// cursor stays, so the page is fetched again.
	if (!SpiExecPrepared("SELECT 1 FROM switchboard.routes WHERE name = $1 AND owner = $2::oid AND enabled "
	                     "AND direction <> 'push' FOR KEY SHARE",
	                     {def.name, Num(def.owner)})
	         .rows.size())
		return PullCounts();
	PullCounts counts = ApplyRemoteRecords(def, pull.conflict, page.records, http_status);

	// Where the next request starts, stored with the page it follows.
	std::string phase = pull.phase == PullPhase::Changes ? "changes" : "deletions";
	std::string next_phase = phase;
	// More pages follow at once. After the last page of changes, deletions are pulled next
	// (if they matter); only after a full pass does the route wait pull_interval.
	long delay_ms = 0;
	if (!page.more) {
		if (pull.phase == PullPhase::Changes && def.route.on_delete == "delete")
			next_phase = "deletions";
		else {
			next_phase = "changes";
			delay_ms = pull.interval_ms;
		}
	}
	// Only the current phase's cursor changes: the other one is passed as NULL and kept by the
	// coalesce/CASE. clock_timestamp(): the delay counts from now, not from the start of the
	// transaction that applied the records.
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
NotePushedStates(const std::vector<PushedState> &states)
{
	if (states.empty())
		return;
	// Only routes that also pull need it: push-only routes pay one lookup per round.
	std::set<std::string> names;
	for (const auto &st : states)
		names.insert(st.route);
	std::vector<SpiText> route_list(names.begin(), names.end());
	std::set<std::string> pulling;
	for (const auto &row :
	     SpiExecPrepared("SELECT name FROM switchboard.routes WHERE name = ANY($1::pg_catalog.text[]) "
	                     "AND direction = 'both'",
	                     {ArrayLiteral(route_list)})
	         .rows)
		pulling.insert(*row[0]);
	if (pulling.empty())
		return;
	std::vector<SpiText> routes, keys, ids, fields, gone_routes, gone_keys;
	for (const auto &st : states) {
		if (!pulling.count(st.route) || st.key.empty())
			continue;
		if (st.fields.empty()) {
			gone_routes.emplace_back(st.route);
			gone_keys.emplace_back(st.key);
			continue;
		}
		routes.emplace_back(st.route);
		keys.emplace_back(st.key);
		ids.emplace_back(Num(st.change_id));
		fields.emplace_back(st.fields);
	}
	if (!gone_routes.empty())
		SpiExecPrepared("DELETE FROM switchboard.pushed_state p USING unnest($1::text[], $2::text[]) AS u(route, key) "
		                "WHERE p.route = u.route AND p.key = u.key",
		                {ArrayLiteral(gone_routes), ArrayLiteral(gone_keys)});
	if (!routes.empty())
		SpiExecPrepared(
		    "INSERT INTO switchboard.pushed_state AS p (route, key, change_id, fields) "
		    "SELECT DISTINCT ON (route, key) route, key, id, f::jsonb "
		    "FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) AS u(route, key, id, f) "
		    "ORDER BY route, key, id DESC "
		    "ON CONFLICT (route, key) DO UPDATE SET change_id = excluded.change_id, fields = excluded.fields "
		    "WHERE p.change_id < excluded.change_id",
		    {ArrayLiteral(routes), ArrayLiteral(keys), ArrayLiteral(ids), ArrayLiteral(fields)});
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
	// The count of stops in a row lives only in the message text, so it is read back from it.
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
	// Puts back the error the route had before the mark: the mark was no failure of its own,
	// and ApplyPullPage has already set next_pull_at.
	SpiExecPrepared(
	    "UPDATE switchboard.pull_state SET last_error = $2, last_error_at = $3::timestamptz WHERE route = $1",
	    {pull.def.name, mark.last_error, mark.last_error_at});
}

long
MsUntilNextPull()
{
	// The same routes as PullsDue; one never pulled (no next_pull_at) is due now.
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
