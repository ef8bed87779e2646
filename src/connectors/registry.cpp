// The connector registry: which endpoint kinds exist and where each one's code lives.
//
// Adding a kind (CONTRIBUTING.md, "Adding a connector") = its own file defining a factory, its tests, and
// one line in SB_BUILTIN_CONNECTORS below. Nothing else in the tree names a kind.
#include "connectors/connector.h"

#include <algorithm>
#include <stdexcept>
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

// kind name, factory (defined in the kind's own file).
#define SB_BUILTIN_CONNECTORS(X)                                                                                       \
	X("hubspot", MakeHubSpotConnector)                                                                                 \
	X("salesforce", MakeSalesforceConnector)                                                                           \
	X("webhook", MakeWebhookConnector)                                                                                 \
	X("openai", MakeOpenAIConnector)                                                                                   \
	X("http", MakeHttpJsonConnector)                                                                                   \
	X("woocommerce", MakeWooCommerceConnector)

#define SB_DECLARE_FACTORY(kind, factory) std::unique_ptr<Connector> factory();
SB_BUILTIN_CONNECTORS(SB_DECLARE_FACTORY)
#undef SB_DECLARE_FACTORY

namespace {

struct Entry {
	std::string kind;
	ConnectorFactory factory;
	std::shared_ptr<const Connector> instance; // made on first FindConnector
};

// Function-local so that it exists before any static initializer of another file asks.
std::vector<Entry> &
Registry()
{
	static std::vector<Entry> entries = [] {
		std::vector<Entry> builtin;
#define SB_ENTRY(kind, factory) builtin.push_back(Entry{kind, factory, nullptr});
		SB_BUILTIN_CONNECTORS(SB_ENTRY)
#undef SB_ENTRY
		return builtin;
	}();
	return entries;
}

Entry *
Lookup(const std::string &kind)
{
	auto &entries = Registry();
	auto it = std::find_if(entries.begin(), entries.end(), [&](const Entry &e) { return e.kind == kind; });
	return it == entries.end() ? nullptr : &*it;
}

[[noreturn]] void
UnknownKind(const std::string &kind)
{
	std::string known;
	for (const auto &name : ConnectorKinds())
		known += (known.empty() ? "" : ", ") + name;
	throw std::invalid_argument("unknown endpoint kind \"" + Snippet(kind, 60) + "\" (known: " + known + ")");
}

} // namespace

std::vector<std::string>
ConnectorKinds()
{
	std::vector<std::string> kinds;
	for (const auto &entry : Registry())
		kinds.push_back(entry.kind);
	return kinds;
}

bool
IsKnownKind(const std::string &kind)
{
	return Lookup(kind) != nullptr;
}

std::unique_ptr<Connector>
MakeConnector(const std::string &kind)
{
	Entry *entry = Lookup(kind);
	if (entry == nullptr)
		UnknownKind(kind);
	return entry->factory();
}

const Connector *
FindConnector(const std::string &kind)
{
	Entry *entry = Lookup(kind);
	if (entry == nullptr)
		return nullptr;
	if (!entry->instance)
		entry->instance = entry->factory();
	return entry->instance.get();
}

size_t
BulkLimit(const std::string &kind)
{
	const Connector *connector = FindConnector(kind);
	if (connector == nullptr)
		UnknownKind(kind);
	return connector->BulkLimit();
}

void
RegisterConnectorKind(const std::string &kind, ConnectorFactory factory)
{
	if (kind.empty() || !factory)
		throw std::invalid_argument("a connector kind needs a name and a factory");
	if (Lookup(kind) != nullptr)
		throw std::invalid_argument("endpoint kind \"" + Snippet(kind, 60) + "\" is already registered");
	Registry().push_back(Entry{kind, std::move(factory), nullptr});
}

void
UnregisterConnectorKind(const std::string &kind)
{
	auto &entries = Registry();
	entries.erase(std::remove_if(entries.begin(), entries.end(), [&](const Entry &e) { return e.kind == kind; }),
	              entries.end());
}

} // namespace switchboard
