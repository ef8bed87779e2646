// Unit tests for planning the apply of received events (inbound/apply_plan.h): the newest event
// of a key wins (occurred_ms, then id) and settles the older ones; deletions apply to the
// remote id the route knows, and settle with nothing done otherwise; HubSpot events become
// read-back items (one per object, in chunks of 100), and an id the answer lacks is a deletion.
#include <gtest/gtest.h>

#include "inbound/apply_plan.h"

namespace switchboard {
namespace {

using namespace inbound;

StoredEvent
Woo(int64_t id, const std::string &object_id, const std::string &email, int64_t ms, bool deleted = false)
{
	StoredEvent s;
	s.id = id;
	s.event.object_id = object_id;
	s.event.occurred_ms = ms;
	s.event.deleted = deleted;
	s.event.resource = deleted ? Json{{"id", std::stoll(object_id)}}
	                           : Json{{"id", std::stoll(object_id)}, {"email", email}};
	return s;
}

StoredEvent
HubSpot(int64_t id, const std::string &object_id, int64_t ms, bool deleted = false)
{
	StoredEvent s;
	s.id = id;
	s.event.object_id = object_id;
	s.event.occurred_ms = ms;
	s.event.deleted = deleted;
	s.event.read_back = true;
	return s;
}

TEST(InboundApplyPlan, NewestEventOfAKeyWinsAndSettlesTheOthers)
{
	// Ids in commit order, but the second event of 7 is older (the sender retried it late).
	Plan plan = PlanEvents({Woo(1, "7", "a@x.io", 2000), Woo(2, "8", "b@x.io", 1000), Woo(3, "7", "a@x.io", 1500)},
	                       "email", {});
	ASSERT_EQ(plan.records.size(), 2u);
	// Oldest first: b (1000), then a's newest (2000, event 1).
	EXPECT_EQ(plan.records[0].record.key, "b@x.io");
	EXPECT_EQ(plan.records[1].record.key, "a@x.io");
	EXPECT_EQ(plan.records[1].last_id, 1);
	EXPECT_EQ(plan.records[1].events, (std::vector<int64_t>{1, 3}));
	EXPECT_TRUE(plan.read_back.empty());
	EXPECT_TRUE(plan.settled.empty());
}

TEST(InboundApplyPlan, TiesOfTimeGoToTheLaterEvent)
{
	Plan plan = PlanEvents({Woo(5, "7", "a@x.io", 1000), Woo(6, "7", "a@x.io", 1000)}, "email", {});
	ASSERT_EQ(plan.records.size(), 1u);
	EXPECT_EQ(plan.records[0].last_id, 6);
}

TEST(InboundApplyPlan, DeletionsUseTheKeyTheRouteKnows)
{
	Plan plan = PlanEvents({Woo(1, "7", "", 1000, true), Woo(2, "9", "", 1000, true)}, "email", {{"7", "a@x.io"}});
	ASSERT_EQ(plan.records.size(), 1u);
	EXPECT_TRUE(plan.records[0].record.deleted);
	EXPECT_EQ(plan.records[0].record.key, "a@x.io");
	EXPECT_EQ(plan.records[0].record.remote_id, "7");
	EXPECT_EQ(plan.settled, (std::vector<int64_t>{2})); // an id the route never knew: nothing to delete
}

TEST(InboundApplyPlan, EventsWithoutARecordAreRefused)
{
	StoredEvent no_id = Woo(1, "7", "a@x.io", 1000);
	no_id.event.object_id.clear();
	StoredEvent no_body = Woo(2, "8", "b@x.io", 1000);
	no_body.event.resource = "text";
	Plan plan = PlanEvents({no_id, no_body, Woo(3, "9", "c@x.io", 1000)}, "email", {});
	ASSERT_EQ(plan.refused.size(), 2u);
	EXPECT_EQ(plan.refused[0].first, 1);
	EXPECT_EQ(plan.refused[1].first, 2);
	ASSERT_EQ(plan.records.size(), 1u);
	EXPECT_EQ(plan.records[0].record.key, "c@x.io");
}

TEST(InboundApplyPlan, ARecordWithoutItsKeyStaysForTheApplyToRefuse)
{
	Plan plan = PlanEvents({Woo(1, "7", "", 1000)}, "email", {});
	ASSERT_EQ(plan.records.size(), 1u);
	EXPECT_EQ(plan.records[0].record.key, "");
}

TEST(InboundApplyPlan, HubSpotEventsAreReadBackOncePerObject)
{
	Plan plan = PlanEvents({HubSpot(1, "100", 1000), HubSpot(2, "101", 1000), HubSpot(3, "100", 1200),
	                        HubSpot(4, "102", 1000), HubSpot(5, "102", 1300, true), HubSpot(6, "103", 1000, true)},
	                       "email", {{"102", "c@x.io"}});
	ASSERT_EQ(plan.read_back.size(), 2u);
	EXPECT_EQ(plan.read_back[0].object_id, "100");
	EXPECT_EQ(plan.read_back[0].events, (std::vector<int64_t>{1, 3}));
	EXPECT_EQ(plan.read_back[1].object_id, "101");
	// 102: its newest event deletes it, and the route knows it; 103: unknown, nothing to do.
	ASSERT_EQ(plan.records.size(), 1u);
	EXPECT_TRUE(plan.records[0].record.deleted);
	EXPECT_EQ(plan.records[0].events, (std::vector<int64_t>{4, 5}));
	EXPECT_EQ(plan.settled, (std::vector<int64_t>{6}));

	RemoteRecord a;
	a.remote_id = "100";
	a.key = "a@x.io";
	a.modified_ms = 1500;
	// 101 is absent from the answer: gone, but the route never knew it.
	AddReadBack(&plan, plan.read_back, {a}, {{"102", "c@x.io"}});
	ASSERT_EQ(plan.records.size(), 2u);
	EXPECT_EQ(plan.records[0].record.key, "c@x.io");
	EXPECT_EQ(plan.records[1].record.key, "a@x.io");
	EXPECT_EQ(plan.records[1].events, (std::vector<int64_t>{1, 3}));
	EXPECT_EQ(plan.settled, (std::vector<int64_t>{2, 6}));
}

TEST(InboundApplyPlan, AnObjectTheAnswerLacksIsDeletedWhenKnown)
{
	Plan plan = PlanEvents({HubSpot(1, "100", 1000)}, "email", {{"100", "a@x.io"}});
	AddReadBack(&plan, plan.read_back, {}, {{"100", "a@x.io"}});
	ASSERT_EQ(plan.records.size(), 1u);
	EXPECT_TRUE(plan.records[0].record.deleted);
	EXPECT_EQ(plan.records[0].record.key, "a@x.io");
}

TEST(InboundApplyPlan, ReadBackChunksHoldAtMostTheLimit)
{
	std::vector<ReadBackItem> items(250);
	auto chunks = Chunks(items, 100);
	ASSERT_EQ(chunks.size(), 3u);
	EXPECT_EQ(chunks[0].size(), 100u);
	EXPECT_EQ(chunks[2].size(), 50u);
	EXPECT_TRUE(Chunks({}, 100).empty());
}

} // namespace
} // namespace switchboard
