#include "inbound/apply_plan.h"

#include <algorithm>
#include <tuple>

namespace switchboard {
namespace inbound {

namespace {

bool
Newer(int64_t ms_a, int64_t id_a, int64_t ms_b, int64_t id_b)
{
	return std::tie(ms_a, id_a) > std::tie(ms_b, id_b);
}

// One record per key: the newest wins and takes the events of the others. Records without a
// key stay on their own (ApplyRemoteRecords refuses them, and their events record why).
std::vector<PlannedRecord>
NewestPerKey(std::vector<PlannedRecord> records)
{
	std::vector<PlannedRecord> out;
	std::map<std::string, size_t> by_key;
	for (auto &r : records) {
		if (r.record.key.empty()) {
			out.push_back(std::move(r));
			continue;
		}
		auto found = by_key.find(r.record.key);
		if (found == by_key.end()) {
			by_key.emplace(r.record.key, out.size());
			out.push_back(std::move(r));
			continue;
		}
		PlannedRecord &kept = out[found->second];
		std::vector<int64_t> events = kept.events;
		events.insert(events.end(), r.events.begin(), r.events.end());
		if (Newer(r.occurred_ms, r.last_id, kept.occurred_ms, kept.last_id))
			kept = std::move(r);
		std::sort(events.begin(), events.end());
		kept.events = std::move(events);
	}
	std::stable_sort(out.begin(), out.end(), [](const PlannedRecord &a, const PlannedRecord &b) {
		return Newer(b.occurred_ms, b.last_id, a.occurred_ms, a.last_id);
	});
	return out;
}

const std::string *
KnownKey(const std::map<std::string, std::string> &known_keys, const std::string &remote_id)
{
	auto found = known_keys.find(remote_id);
	return found == known_keys.end() ? nullptr : &found->second;
}

// A deletion of object_id, or nothing to do (settled) when the route does not know the id.
void
AddDeletion(Plan *plan, std::vector<PlannedRecord> *records, const std::string &object_id,
            const std::vector<int64_t> &events, int64_t occurred_ms, int64_t last_id,
            const std::map<std::string, std::string> &known_keys)
{
	const std::string *key = KnownKey(known_keys, object_id);
	if (!key) {
		plan->settled.insert(plan->settled.end(), events.begin(), events.end());
		return;
	}
	PlannedRecord r;
	r.record.remote_id = object_id;
	r.record.key = *key;
	r.record.deleted = true;
	r.record.modified_ms = occurred_ms;
	r.events = events;
	r.occurred_ms = occurred_ms;
	r.last_id = last_id;
	records->push_back(std::move(r));
}

} // namespace

Plan
PlanEvents(const std::vector<StoredEvent> &events, const std::string &match_remote,
           const std::map<std::string, std::string> &known_keys)
{
	Plan plan;
	std::vector<PlannedRecord> records;
	// HubSpot: per object, its events in order; the newest says whether it is gone.
	struct Named {
		std::vector<int64_t> events;
		int64_t occurred_ms = 0, last_id = 0;
		bool deleted = false;
		size_t first = 0; // order of appearance
	};
	std::map<std::string, Named> named;
	for (size_t i = 0; i < events.size(); i++) {
		const StoredEvent &stored = events[i];
		const Event &e = stored.event;
		if (e.object_id.empty()) {
			plan.refused.emplace_back(stored.id, "the event names no object id");
			continue;
		}
		if (e.read_back) {
			auto inserted = named.emplace(e.object_id, Named());
			Named &n = inserted.first->second;
			if (inserted.second)
				n.first = i;
			n.events.push_back(stored.id);
			if (n.events.size() == 1 || Newer(e.occurred_ms, stored.id, n.occurred_ms, n.last_id)) {
				n.occurred_ms = e.occurred_ms;
				n.last_id = stored.id;
				n.deleted = e.deleted;
			}
			continue;
		}
		if (!e.deleted && !e.resource.is_object()) {
			plan.refused.emplace_back(stored.id, "the event carries no record (its resource is not a JSON object)");
			continue;
		}
		std::vector<RemoteRecord> one = RecordsOf({e}, match_remote);
		if (one.empty()) {
			plan.refused.emplace_back(stored.id, "the event carries no record");
			continue;
		}
		RemoteRecord record = std::move(one.front());
		if (record.deleted) {
			// A deletion body holds the id only (WooCommerce: {"id": N}): the key is the one the
			// route knows for that remote id.
			const std::string *key = KnownKey(known_keys, record.remote_id);
			if (!key) {
				plan.settled.push_back(stored.id);
				continue;
			}
			record.key = *key;
		}
		PlannedRecord r;
		r.record = std::move(record);
		r.events = {stored.id};
		r.occurred_ms = e.occurred_ms;
		r.last_id = stored.id;
		records.push_back(std::move(r));
	}
	std::vector<std::pair<size_t, std::string>> order;
	for (const auto &entry : named)
		order.emplace_back(entry.second.first, entry.first);
	std::sort(order.begin(), order.end());
	for (const auto &o : order) {
		const Named &n = named[o.second];
		std::vector<int64_t> ids = n.events;
		std::sort(ids.begin(), ids.end());
		if (n.deleted) {
			AddDeletion(&plan, &records, o.second, ids, n.occurred_ms, n.last_id, known_keys);
			continue;
		}
		ReadBackItem item;
		item.object_id = o.second;
		item.events = std::move(ids);
		item.occurred_ms = n.occurred_ms;
		item.last_id = n.last_id;
		plan.read_back.push_back(std::move(item));
	}
	plan.records = NewestPerKey(std::move(records));
	std::sort(plan.settled.begin(), plan.settled.end());
	return plan;
}

void
AddReadBack(Plan *plan, const std::vector<ReadBackItem> &asked, const std::vector<RemoteRecord> &answer,
            const std::map<std::string, std::string> &known_keys)
{
	std::map<std::string, const RemoteRecord *> by_id;
	for (const auto &r : answer)
		by_id.emplace(r.remote_id, &r);
	std::vector<PlannedRecord> records = std::move(plan->records);
	for (const ReadBackItem &item : asked) {
		auto found = by_id.find(item.object_id);
		if (found == by_id.end()) {
			// Gone from the remote since the event (HubSpot answers such ids in errors[]).
			AddDeletion(plan, &records, item.object_id, item.events, item.occurred_ms, item.last_id, known_keys);
			continue;
		}
		PlannedRecord r;
		r.record = *found->second;
		r.events = item.events;
		// The record as it is now is newer than any event that named it.
		r.occurred_ms = std::max(item.occurred_ms, r.record.modified_ms);
		r.last_id = item.last_id;
		records.push_back(std::move(r));
	}
	plan->records = NewestPerKey(std::move(records));
	std::sort(plan->settled.begin(), plan->settled.end());
}

std::vector<std::vector<ReadBackItem>>
Chunks(const std::vector<ReadBackItem> &items, size_t limit)
{
	std::vector<std::vector<ReadBackItem>> out;
	for (size_t i = 0; i < items.size(); i += limit)
		out.emplace_back(items.begin() + i, items.begin() + std::min(items.size(), i + limit));
	return out;
}

std::vector<RemoteRecord>
RecordsOfPlan(const Plan &plan)
{
	std::vector<RemoteRecord> out;
	out.reserve(plan.records.size());
	for (const auto &r : plan.records)
		out.push_back(r.record);
	return out;
}

} // namespace inbound
} // namespace switchboard
