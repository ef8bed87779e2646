// The database side of inbound webhooks (SPEC §9): the receiver's reads and writes, and the
// owner-only access to a route's token (switchboard.inbound_token / rotate_inbound_token).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "inbound/receiver.h"

namespace switchboard {

// Every route that can receive now (a token, route and endpoint enabled), by token: its name,
// the scheme of its endpoint's kind and its inbound secret ("" when it has none). In a
// transaction. Empty when the extension is not installed in this database.
std::map<std::string, inbound::RouteTarget> LoadInboundTargets();

// The verified events of one request.
struct InboundBatchItem {
	std::string route;
	inbound::Scheme scheme = inbound::Scheme::StandardWebhooks;
	std::vector<inbound::Event> events;
};

struct InboundRejection {
	long count = 0;
	std::string last_error;
};

// Stores every event (a redelivery of a stored one is skipped: ON CONFLICT DO NOTHING) and
// adds the refusals to inbound_rejections, with one statement each. In a transaction, which
// the caller commits before answering.
void StoreInbound(const std::vector<InboundBatchItem> &items, const std::map<std::string, InboundRejection> &rejected);

} // namespace switchboard
