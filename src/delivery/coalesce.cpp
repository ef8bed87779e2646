#include "delivery/coalesce.h"

#include <algorithm>
#include <map>

namespace switchboard {

Coalesced
Coalesce(const std::vector<ClaimedRow> &rows, const std::vector<HeldChange> &held, bool deletes_sent)
{
	Coalesced out;
	(void) deletes_sent;
	std::map<std::string, size_t> latest; // key -> row sent for it
	std::map<std::string, bool> created;  // an insert among the key's coalesced changes
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
		if (it != latest.end())
			out.dropped.push_back(rows[it->second].id);
		created[row.key] = created[row.key] || row.op == Op::Insert;
		latest[row.key] = i;
	}

	// Older changes of these keys still waiting for a retry are superseded too.
	for (const HeldChange &h : held) {
		auto it = latest.find(h.key);
		if (it == latest.end() || rows[it->second].id <= h.id)
			continue;
		out.dropped.push_back(h.id);
	}

	for (const auto &[key, index] : latest) {
		Op op = rows[index].op == Op::Update && created[key] ? Op::Insert : rows[index].op;
		out.send.push_back(Coalesced::Send{index, op});
	}
	// Never reordered: the keys go out in the order of the changes sent for them.
	std::sort(out.send.begin(), out.send.end(),
	          [](const Coalesced::Send &a, const Coalesced::Send &b) { return a.row < b.row; });
	return out;
}

} // namespace switchboard
