#include "delivery/coalesce.h"

#include <algorithm>
#include <map>
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

Coalesced
Coalesce(const std::vector<ClaimedRow> &rows, const std::vector<HeldChange> &held, bool deletes_sent)
{
	Coalesced out;
	struct KeyState {
		size_t row = 0;                  // the change sent for the key
		bool created = false;            // an insert among the key's coalesced changes
		std::vector<int64_t> superseded; // what that change stands for
	};
	std::map<std::string, KeyState> latest;
	// With on_delete = 'ignore' the remote keeps a deleted record: a delete tells it nothing,
	// so it must not replace (nor supersede) a change that does.
	auto ignored_delete = [&](Op op) { return op == Op::Delete && !deletes_sent; };

	for (size_t i = 0; i < rows.size(); i++) {
		const ClaimedRow &row = rows[i];
		if (row.state == ClaimedRow::State::Filtered) {
			out.dropped.push_back(row.id);
			continue;
		}
		if (row.state == ClaimedRow::State::Failed) {
			out.failed.push_back(i);
			continue;
		}
		auto it = latest.find(row.key);
		if (it == latest.end()) {
			latest[row.key] = KeyState{i, row.op == Op::Insert, {}};
			continue;
		}
		KeyState &k = it->second;
		if (ignored_delete(row.op) && rows[k.row].op != Op::Delete) {
			// The upsert before it stays the key's change; the delete is settled with it.
			k.superseded.push_back(row.id);
			continue;
		}
		k.superseded.push_back(rows[k.row].id);
		k.row = i;
		k.created = k.created || row.op == Op::Insert;
	}

	// Older changes of these keys still waiting for a retry are superseded too, and lend the
	// change sent their insert: the remote has not seen the record yet.
	for (const HeldChange &h : held) {
		auto it = latest.find(h.key);
		if (it == latest.end() || rows[it->second.row].id <= h.id)
			continue;
		// A delete the remote ignores leaves the held change to be sent when it is due.
		if (ignored_delete(rows[it->second.row].op))
			continue;
		it->second.superseded.push_back(h.id);
		it->second.created = it->second.created || h.op == Op::Insert;
	}

	for (auto &[key, k] : latest) {
		Op op = rows[k.row].op == Op::Update && k.created ? Op::Insert : rows[k.row].op;
		std::sort(k.superseded.begin(), k.superseded.end());
		out.send.push_back(Coalesced::Send{k.row, op, std::move(k.superseded)});
	}
	// Never reordered: the keys go out in the order of the changes sent for them.
	std::sort(out.send.begin(), out.send.end(),
	          [](const Coalesced::Send &a, const Coalesced::Send &b) { return a.row < b.row; });
	return out;
}

std::vector<Coalesced::Send>
TakeStale(Coalesced *coalesced, const std::vector<ClaimedRow> &rows, const std::map<std::string, int64_t> &marks)
{
	std::vector<Coalesced::Send> stale, keep;
	for (Coalesced::Send &s : coalesced->send) {
		auto mark = marks.find(rows[s.row].key);
		// Queue ids of one key grow in commit order (the row lock orders its writers), so a
		// smaller id is an older state; an equal one was delivered already.
		if (mark != marks.end() && rows[s.row].id <= mark->second)
			stale.push_back(std::move(s));
		else
			keep.push_back(std::move(s));
	}
	coalesced->send = std::move(keep);
	return stale;
}

} // namespace switchboard
