#include "store/inbound_apply.h"

#include <algorithm>

#include "pg/boundary.h"
#include "pg/spi.h"
#include "settings.h"
#include "translate/translator.h"

namespace switchboard {

namespace {

std::string
Num(int64_t v)
{
	return std::to_string(v);
}

std::vector<SpiText>
IdList(const std::vector<int64_t> &ids)
{
	std::vector<SpiText> out;
	out.reserve(ids.size());
	for (int64_t id : ids)
		out.emplace_back(Num(id));
	return out;
}

inbound::Event
EventOfRow(const SpiRow &row)
{
	// id, object_id, type, property, deleted, occurred (unix ms), resource, read_back
	inbound::Event e;
	e.object_id = row[1].value_or("");
	e.type = row[2].value_or("");
	e.property = row[3].value_or("");
	e.deleted = row[4] == SpiText("t");
	e.occurred_ms = row[5] ? std::stoll(*row[5]) : 0;
	if (row[6]) {
		e.resource = inbound::Json::parse(*row[6], nullptr, false);
		if (e.resource.is_discarded())
			e.resource = nullptr;
	}
	e.read_back = row[7] == SpiText("t");
	return e;
}

} // namespace

bool
HasInboundSchema()
{
	return SpiExecPrepared("SELECT pg_catalog.to_regclass('switchboard.inbound_events') IS NOT NULL").rows[0][0] ==
	       SpiText("t");
}

bool
InboundWanted()
{
	return HasInboundSchema() &&
	       SpiExecPlanned("SELECT EXISTS (SELECT 1 FROM switchboard.inbound_events WHERE applied_at IS NULL)", {},
	                      kNoSeqScan)
	               .rows[0][0] == SpiText("t");
}

std::vector<InboundRoute>
InboundDue(int per_route, const std::set<std::string> &held, const std::vector<int64_t> &held_events)
{
	std::vector<InboundRoute> due;
	if (!HasInboundSchema())
		return due;
	std::vector<SpiText> held_routes(held.begin(), held.end());
	std::string held_ids = ArrayLiteral(IdList(held_events));
	// By index whatever the statistics say (kNoSeqScan): applied events stay a few days, and a
	// table analyzed with few was scanned whole for the pending ones every round.
	SpiResult routes = SpiExecPlanned(
	    "SELECT r.name, r.conflict FROM switchboard.routes r "
	    "JOIN switchboard.endpoints e ON e.name = r.endpoint AND e.enabled "
	    "WHERE r.enabled AND r.direction IN ('pull', 'both') AND r.source IS NOT NULL "
	    "AND r.name <> ALL ($2::pg_catalog.text[]) "
	    "AND EXISTS (SELECT 1 FROM switchboard.inbound_events i WHERE i.route = r.name AND i.applied_at IS NULL "
	    "AND i.id <> ALL ($1::pg_catalog.int8[])) ORDER BY r.name",
	    {held_ids, ArrayLiteral(held_routes)}, kNoSeqScan);
	for (const auto &row : routes.rows) {
		std::optional<RouteDef> def;
		try {
			Subtransaction sub;
			def = FindRoute(*row[0], true);
			sub.Commit();
		} catch (const PgError &e) {
			if (TransientError(e.sqlerrcode))
				throw;
			continue; // PullsDue reports it in pull_status and disables the route
		}
		if (!def || !def->source_exists)
			continue;
		InboundRoute r;
		r.conflict = *row[1];
		SpiResult events = SpiExecPlanned(
		    "SELECT i.id, i.object_id, i.type, i.property, i.deleted, "
		    "(pg_catalog.date_part('epoch', i.occurred_at) * 1000)::pg_catalog.int8, i.resource::text, i.read_back "
		    "FROM switchboard.inbound_events i WHERE i.route = $1 AND i.applied_at IS NULL "
		    "AND i.id <> ALL ($2::pg_catalog.int8[]) ORDER BY i.id LIMIT $3::int",
		    {def->name, held_ids, Num(per_route + 1)}, kNoSeqScan);
		std::vector<SpiText> named; // object ids a deletion may need the key of
		for (size_t i = 0; i < events.rows.size() && i < static_cast<size_t>(per_route); i++) {
			inbound::StoredEvent stored;
			stored.id = std::stoll(*events.rows[i][0]);
			stored.event = EventOfRow(events.rows[i]);
			if ((stored.event.deleted || stored.event.read_back) && !stored.event.object_id.empty())
				named.emplace_back(stored.event.object_id);
			r.events.push_back(std::move(stored));
		}
		r.more = events.rows.size() > static_cast<size_t>(per_route);
		if (!named.empty())
			for (const auto &k :
			     SpiExecPrepared("SELECT remote_id, key FROM switchboard.remote_ids "
			                     "WHERE route = $1 AND remote_id IN (SELECT pg_catalog.unnest($2::pg_catalog.text[]))",
			                     {def->name, ArrayLiteral(named)})
			         .rows)
				r.known_keys[*k[0]] = *k[1];
		for (const auto &m : def->mappings)
			if (m.pull_column)
				r.fields.push_back(m.remote_field);
		r.def = std::move(*def);
		due.push_back(std::move(r));
	}
	return due;
}

namespace {

// An attempt more for each event, with its error; an event whose attempts reach max_attempts
// (or any, when give_up) is failed: applied_at set with last_error. Returns those still pending.
std::vector<int64_t>
CountAttempts(const std::vector<int64_t> &events, const std::vector<std::string> &errors, bool give_up)
{
	if (events.empty())
		return {};
	std::vector<SpiText> ids, texts;
	for (size_t i = 0; i < events.size(); i++) {
		ids.emplace_back(Num(events[i]));
		texts.emplace_back(errors[i]);
	}
	SpiResult r = SpiExecPlanned(
	    "UPDATE switchboard.inbound_events i SET attempts = i.attempts + 1, last_error = u.error, "
	    "applied_at = CASE WHEN $3::bool OR i.attempts + 1 >= $4::int THEN pg_catalog.clock_timestamp() END "
	    "FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]), pg_catalog.unnest($2::pg_catalog.text[])) "
	    "AS u(id, error) "
	    "WHERE i.id = u.id AND i.applied_at IS NULL RETURNING i.id, i.applied_at IS NULL",
	    {ArrayLiteral(ids), ArrayLiteral(texts), std::string(give_up ? "true" : "false"), Num(setting_max_attempts)},
	    kByIndex);
	std::vector<int64_t> pending;
	for (const auto &row : r.rows)
		if (row[1] == SpiText("t"))
			pending.push_back(std::stoll(*row[0]));
	return pending;
}

} // namespace

std::vector<int64_t>
ApplyInbound(const InboundRoute &route, const inbound::Plan &plan)
{
	const RouteDef &def = route.def;
	// As ApplyPullPage: the route must still be the one the events were loaded for.
	if (SpiExecPrepared("SELECT 1 FROM switchboard.routes WHERE name = $1 AND owner = $2::oid AND enabled "
	                    "AND direction <> 'push' FOR KEY SHARE",
	                    {def.name, Num(def.owner)})
	        .rows.empty())
		return {};
	std::vector<RecordFailure> failures;
	std::vector<RemoteRecord> records = inbound::RecordsOfPlan(plan);
	// Never the cursor: polling goes on from where it was (a stale copy of the cursor written
	// here would move it back under a concurrent pull).
	if (!records.empty())
		(void) ApplyRemoteRecords(def, route.conflict, records, 200, &failures);
	std::vector<bool> failed(records.size(), false);
	std::vector<int64_t> applied = plan.settled, fail_ids;
	std::vector<std::string> fail_errors;
	for (const auto &f : failures) {
		if (f.index >= failed.size())
			continue;
		failed[f.index] = true;
		for (int64_t id : plan.records[f.index].events) {
			fail_ids.push_back(id);
			fail_errors.push_back(f.error);
		}
	}
	for (size_t i = 0; i < records.size(); i++)
		if (!failed[i])
			applied.insert(applied.end(), plan.records[i].events.begin(), plan.records[i].events.end());
	if (!applied.empty())
		// Each id probes the primary key (LATERAL; see ByKeys in pull_store.cpp): marking 100
		// events applied took 40-250 ms on a table last analyzed nearly empty.
		SpiExecPlanned(
		    "UPDATE switchboard.inbound_events SET applied_at = pg_catalog.clock_timestamp(), "
		    "last_error = NULL WHERE ctid OPERATOR(pg_catalog.=) ANY(ARRAY(SELECT e.ctid "
		    "FROM pg_catalog.unnest($1::pg_catalog.int8[]) AS u(id) CROSS JOIN LATERAL "
		    "(SELECT ctid FROM switchboard.inbound_events WHERE id = u.id OFFSET 0) AS e)) AND applied_at IS NULL",
		    {ArrayLiteral(IdList(applied))}, kByIndex);
	std::vector<int64_t> pending = CountAttempts(fail_ids, fail_errors, false);
	// Refused events name no record: no retry can change that, so they fail at once.
	std::vector<int64_t> refused;
	std::vector<std::string> refused_errors;
	for (const auto &r : plan.refused) {
		refused.push_back(r.first);
		refused_errors.push_back(r.second);
	}
	(void) CountAttempts(refused, refused_errors, true);
	return pending;
}

std::vector<int64_t>
RecordInboundFailure(const std::vector<int64_t> &events, const std::string &error)
{
	return CountAttempts(events, std::vector<std::string>(events.size(), error), false);
}

void
PruneInbound(int retention_s, int dead_letter_retention_s)
{
	if (!HasInboundSchema())
		return;
	// Applied events recognise a sender's redeliveries until they go. At most 10000 per prune, so
	// a first prune of a long backlog does not hold up the round it runs in.
	SpiExecPlanned(PruneByCtid("switchboard.inbound_events",
	                           "applied_at < pg_catalog.now() - $1::int * interval '1 second' AND last_error IS NULL",
	                           10000),
	               {Num(retention_s)}, kNoSeqScan);
	if (dead_letter_retention_s > 0)
		SpiExecPlanned(
		    PruneByCtid("switchboard.inbound_events",
		                "applied_at < pg_catalog.now() - $1::int * interval '1 second' AND last_error IS NOT NULL",
		                10000),
		    {Num(dead_letter_retention_s)}, kNoSeqScan);
}

} // namespace switchboard
