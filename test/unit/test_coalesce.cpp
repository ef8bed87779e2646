// Unit tests for the coalescing of a route's claimed changes (delivery/coalesce.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "delivery/coalesce.h"

namespace switchboard {
namespace {

using State = ClaimedRow::State;

ClaimedRow
Row(int64_t id, Op op, const std::string &key, State state = State::Ok)
{
	return ClaimedRow{id, op, key, state};
}

// What is sent, as "id:op" in send order, for compact expectations.
std::vector<std::string>
Sent(const std::vector<ClaimedRow> &rows, const Coalesced &c)
{
	std::vector<std::string> out;
	for (const auto &s : c.send)
		out.push_back(std::to_string(rows[s.row].id) + ":" + OpName(s.op));
	return out;
}

// Every change superseded by one that is sent, in id order.
std::vector<int64_t>
Superseded(const Coalesced &c)
{
	std::vector<int64_t> ids;
	for (const auto &s : c.send)
		ids.insert(ids.end(), s.superseded.begin(), s.superseded.end());
	std::sort(ids.begin(), ids.end());
	return ids;
}

TEST(Coalesce, NothingClaimedSendsNothing)
{
	Coalesced c = Coalesce({}, {}, true);
	EXPECT_TRUE(c.send.empty());
	EXPECT_TRUE(Superseded(c).empty());
	EXPECT_TRUE(c.failed.empty());
}

TEST(Coalesce, LatestChangePerKeyIsSentEarlierOnesSuperseded)
{
	std::vector<ClaimedRow> rows = {Row(1, Op::Update, "a"), Row(2, Op::Update, "a"), Row(3, Op::Update, "a")};
	Coalesced c = Coalesce(rows, {}, true);
	EXPECT_EQ(Sent(rows, c), (std::vector<std::string>{"3:update"}));
	EXPECT_EQ(Superseded(c), (std::vector<int64_t>{1, 2}));
}

TEST(Coalesce, InsertThenUpdateIsSentAsInsert)
{
	std::vector<ClaimedRow> rows = {Row(1, Op::Insert, "a"), Row(2, Op::Update, "a"), Row(3, Op::Update, "a")};
	Coalesced c = Coalesce(rows, {}, true);
	EXPECT_EQ(Sent(rows, c), (std::vector<std::string>{"3:insert"}));
	EXPECT_EQ(Superseded(c), (std::vector<int64_t>{1, 2}));
}

TEST(Coalesce, UpdateThenDeleteIsADeleteWhenDeletesAreSent)
{
	std::vector<ClaimedRow> rows = {Row(1, Op::Update, "a"), Row(2, Op::Delete, "a")};
	Coalesced c = Coalesce(rows, {}, true);
	EXPECT_EQ(Sent(rows, c), (std::vector<std::string>{"2:delete"}));
	EXPECT_EQ(Superseded(c), (std::vector<int64_t>{1}));
}

TEST(Coalesce, InsertThenDeleteStaysADelete)
{
	std::vector<ClaimedRow> rows = {Row(1, Op::Insert, "a"), Row(2, Op::Delete, "a")};
	Coalesced c = Coalesce(rows, {}, true);
	EXPECT_EQ(Sent(rows, c), (std::vector<std::string>{"2:delete"}));
}

TEST(Coalesce, DeleteThenInsertIsAnInsert)
{
	std::vector<ClaimedRow> rows = {Row(1, Op::Delete, "a"), Row(2, Op::Insert, "a"), Row(3, Op::Update, "a")};
	Coalesced c = Coalesce(rows, {}, true);
	EXPECT_EQ(Sent(rows, c), (std::vector<std::string>{"3:insert"}));
}

TEST(Coalesce, KeysGoOutInTheOrderOfTheirLatestChangeOnePerKey)
{
	std::vector<ClaimedRow> rows = {Row(1, Op::Update, "b"), Row(2, Op::Update, "a"), Row(3, Op::Update, "c"),
	                                Row(4, Op::Update, "b"), Row(5, Op::Update, "d")};
	Coalesced c = Coalesce(rows, {}, true);
	// Not sorted by key: "b" moves behind "a" and "c" (its latest state is the newest), and
	// no key is sent twice.
	EXPECT_EQ(Sent(rows, c), (std::vector<std::string>{"2:update", "3:update", "4:update", "5:update"}));
	EXPECT_EQ(Superseded(c), (std::vector<int64_t>{1}));
	ASSERT_EQ(c.send.size(), 4u);
	EXPECT_EQ(c.send[2].superseded, (std::vector<int64_t>{1})) << "b's older change goes with b's latest";
	EXPECT_TRUE(c.dropped.empty()) << "superseded changes stay queued until the one sent is settled";
}

TEST(Coalesce, FilteredChangesAreDroppedAndSupersedeNothing)
{
	// A change the route's filters reject says nothing about the key's remote state: the
	// earlier change that passed is still sent.
	std::vector<ClaimedRow> rows = {Row(1, Op::Update, "a"), Row(2, Op::Update, "", State::Filtered)};
	Coalesced c = Coalesce(rows, {}, true);
	EXPECT_EQ(Sent(rows, c), (std::vector<std::string>{"1:update"}));
	EXPECT_EQ(c.dropped, (std::vector<int64_t>{2}));
	EXPECT_TRUE(Superseded(c).empty());
}

TEST(Coalesce, FailedTranslationsAreReportedAndSupersedeNothing)
{
	std::vector<ClaimedRow> rows = {Row(1, Op::Update, "a"), Row(2, Op::Update, "a", State::Failed),
	                                Row(3, Op::Update, "b")};
	Coalesced c = Coalesce(rows, {}, true);
	EXPECT_EQ(Sent(rows, c), (std::vector<std::string>{"1:update", "3:update"}));
	EXPECT_EQ(c.failed, (std::vector<size_t>{1}));
	EXPECT_TRUE(Superseded(c).empty());
}

TEST(Coalesce, HeldOlderChangesOfASentKeyAreSuperseded)
{
	std::vector<ClaimedRow> rows = {Row(10, Op::Update, "a"), Row(11, Op::Update, "b")};
	// "a" waits for a retry (id 4); "b"'s held change is newer than the claimed one (a retry
	// of an old dead letter, say) and is left alone; "c" is not claimed at all.
	std::vector<HeldChange> held = {{4, "a", Op::Update}, {12, "b", Op::Update}, {5, "c", Op::Update}};
	Coalesced c = Coalesce(rows, held, true);
	EXPECT_EQ(Sent(rows, c), (std::vector<std::string>{"10:update", "11:update"}));
	EXPECT_EQ(Superseded(c), (std::vector<int64_t>{4}));
}

// ---------------------------------------------------------------------------------------
// Issue 9 item 10: coalescing keeps what the remote needs.

TEST(Coalesce, UpdateThenDeleteStillSendsTheUpdateWhenDeletesAreIgnored)
{
	// With on_delete = 'ignore' the remote keeps the record: a delete must not swallow the
	// update before it, or the remote never sees the last state of the record.
	std::vector<ClaimedRow> rows = {Row(1, Op::Update, "a"), Row(2, Op::Delete, "a")};
	Coalesced c = Coalesce(rows, {}, false);
	EXPECT_EQ(Sent(rows, c), (std::vector<std::string>{"1:update"}));
	EXPECT_EQ(Superseded(c), (std::vector<int64_t>{2}));
}

TEST(Coalesce, IgnoredDeleteBetweenChangesKeepsTheInsertMeaning)
{
	std::vector<ClaimedRow> rows = {Row(1, Op::Insert, "a"), Row(2, Op::Delete, "a"), Row(3, Op::Update, "a")};
	Coalesced c = Coalesce(rows, {}, false);
	EXPECT_EQ(Sent(rows, c), (std::vector<std::string>{"3:insert"}));
	EXPECT_EQ(Superseded(c), (std::vector<int64_t>{1, 2}));
}

TEST(Coalesce, ALoneIgnoredDeleteIsStillHandedOn)
{
	// Sent to the dispatcher, which records it as skipped (as before coalescing was involved).
	std::vector<ClaimedRow> rows = {Row(1, Op::Delete, "a"), Row(2, Op::Delete, "a")};
	Coalesced c = Coalesce(rows, {}, false);
	EXPECT_EQ(Sent(rows, c), (std::vector<std::string>{"2:delete"}));
	EXPECT_EQ(Superseded(c), (std::vector<int64_t>{1}));
}

TEST(Coalesce, DeleteThenUpdateWithDeletesIgnoredSendsTheUpdate)
{
	std::vector<ClaimedRow> rows = {Row(1, Op::Delete, "a"), Row(2, Op::Update, "a")};
	Coalesced c = Coalesce(rows, {}, false);
	EXPECT_EQ(Sent(rows, c), (std::vector<std::string>{"2:update"}));
	EXPECT_EQ(Superseded(c), (std::vector<int64_t>{1}));
}

TEST(Coalesce, HeldUpdateIsNotSupersededByAnIgnoredDelete)
{
	// The update failed and waits for its retry; the delete after it means nothing to the
	// remote, so the update stays queued (and is sent when due).
	std::vector<ClaimedRow> rows = {Row(7, Op::Delete, "a")};
	std::vector<HeldChange> held = {{3, "a", Op::Update}};
	Coalesced c = Coalesce(rows, held, false);
	EXPECT_EQ(Sent(rows, c), (std::vector<std::string>{"7:delete"}));
	EXPECT_TRUE(Superseded(c).empty());
}

TEST(Coalesce, HeldUpdateIsSupersededByADeleteThatIsSent)
{
	std::vector<ClaimedRow> rows = {Row(7, Op::Delete, "a")};
	std::vector<HeldChange> held = {{3, "a", Op::Update}};
	Coalesced c = Coalesce(rows, held, true);
	EXPECT_EQ(Sent(rows, c), (std::vector<std::string>{"7:delete"}));
	EXPECT_EQ(Superseded(c), (std::vector<int64_t>{3}));
}

TEST(Coalesce, SupersededHeldInsertKeepsItsInsertMeaning)
{
	// The insert failed (retry pending), then the row was updated: the remote (a webhook
	// consumer, say) has never heard of the record, so the change sent is an insert.
	std::vector<ClaimedRow> rows = {Row(9, Op::Update, "a"), Row(10, Op::Update, "b")};
	std::vector<HeldChange> held = {{2, "a", Op::Insert}};
	for (bool deletes_sent : {true, false}) {
		Coalesced c = Coalesce(rows, held, deletes_sent);
		EXPECT_EQ(Sent(rows, c), (std::vector<std::string>{"9:insert", "10:update"}));
		EXPECT_EQ(Superseded(c), (std::vector<int64_t>{2}));
	}
}

TEST(Coalesce, HeldInsertNotSupersededLendsNoInsertMeaning)
{
	// Newer than the claimed change: it is not coalesced, so the update stays an update.
	std::vector<ClaimedRow> rows = {Row(9, Op::Update, "a")};
	std::vector<HeldChange> held = {{12, "a", Op::Insert}};
	Coalesced c = Coalesce(rows, held, true);
	EXPECT_EQ(Sent(rows, c), (std::vector<std::string>{"9:update"}));
	EXPECT_TRUE(Superseded(c).empty());
}

// Per-key order across retries: a change not newer than the newest delivered for its key is
// taken out, with what it superseded; newer ones and keys without a mark stay, in order.
TEST(TakeStale, OlderThanTheKeysMarkIsNotSent)
{
	std::vector<ClaimedRow> rows = {Row(3, Op::Update, "a"), Row(5, Op::Update, "b"), Row(7, Op::Update, "c"),
	                                Row(8, Op::Update, "a")};
	Coalesced c = Coalesce(rows, {HeldChange{1, "b", Op::Insert}}, true);
	ASSERT_EQ(Sent(rows, c), (std::vector<std::string>{"5:insert", "7:update", "8:update"}));
	// b was delivered up to change 6, c exactly at 7 (already sent), a only up to 4.
	std::vector<Coalesced::Send> stale = TakeStale(&c, rows, {{"a", 4}, {"b", 6}, {"c", 7}});
	EXPECT_EQ(Sent(rows, c), (std::vector<std::string>{"8:update"}));
	ASSERT_EQ(stale.size(), 2u);
	EXPECT_EQ(rows[stale[0].row].id, 5);
	EXPECT_EQ(stale[0].superseded, (std::vector<int64_t>{1}));
	EXPECT_EQ(rows[stale[1].row].id, 7);
}

TEST(TakeStale, NoMarksChangeNothing)
{
	std::vector<ClaimedRow> rows = {Row(1, Op::Insert, "a"), Row(2, Op::Delete, "b")};
	Coalesced c = Coalesce(rows, {}, true);
	EXPECT_TRUE(TakeStale(&c, rows, {}).empty());
	EXPECT_EQ(Sent(rows, c), (std::vector<std::string>{"1:insert", "2:delete"}));
}

} // namespace
} // namespace switchboard
