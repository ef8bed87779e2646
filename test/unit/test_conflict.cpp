// Unit tests for the pull's conflict rule (delivery/conflict.h).
#include <gtest/gtest.h>

#include "delivery/conflict.h"

namespace switchboard {
namespace {

constexpr int64_t kLocal = 1'700'000'000'000; // capture time of the newest pending local change

TEST(Conflict, RemoteRuleAppliesTheRemoteRecordWhateverTheTimes)
{
	EXPECT_EQ(SettleConflict("remote", kLocal + 1, kLocal), ConflictWinner::Remote);
	EXPECT_EQ(SettleConflict("remote", kLocal - 60'000, kLocal), ConflictWinner::Remote);
	EXPECT_EQ(SettleConflict("remote", 0, kLocal), ConflictWinner::Remote);
}

TEST(Conflict, LocalRuleKeepsTheLocalChangeWhateverTheTimes)
{
	EXPECT_EQ(SettleConflict("local", kLocal + 60'000, kLocal), ConflictWinner::Local);
	EXPECT_EQ(SettleConflict("local", kLocal - 1, kLocal), ConflictWinner::Local);
}

TEST(Conflict, NewestRuleTakesTheLaterOfTheTwo)
{
	EXPECT_EQ(SettleConflict("newest", kLocal + 1, kLocal), ConflictWinner::Remote);
	EXPECT_EQ(SettleConflict("newest", kLocal - 1, kLocal), ConflictWinner::Local);
}

TEST(Conflict, NewestRuleGivesATieToTheLocalChange)
{
	EXPECT_EQ(SettleConflict("newest", kLocal, kLocal), ConflictWinner::Local);
}

TEST(Conflict, NewestRuleWithoutARemoteTimeKeepsTheLocalChange)
{
	EXPECT_EQ(SettleConflict("newest", 0, kLocal), ConflictWinner::Local);
}

TEST(Conflict, UnknownRuleDiscardsNothingLocal)
{
	EXPECT_EQ(SettleConflict("", kLocal + 1, kLocal), ConflictWinner::Local);
	EXPECT_EQ(SettleConflict("Remote", kLocal + 1, kLocal), ConflictWinner::Local);
}

using nlohmann::json;

TEST(Conflict, EchoIsThePushedValuesComingBack)
{
	const std::vector<std::string> both = {"email", "firstname", "score"};
	json pushed = {{"email", "ada@x.com"}, {"firstname", "v1"}, {"score", 42}, {"phone", "1"}};
	// HubSpot renders every property as text, and adds fields of its own.
	json pulled = {{"email", "ada@x.com"}, {"firstname", "v1"}, {"score", "42"}, {"lastmodifieddate", "2026"}};
	EXPECT_TRUE(IsEchoOfPush(pushed, pulled, both));
	pulled["firstname"] = "v2";
	EXPECT_FALSE(IsEchoOfPush(pushed, pulled, both)) << "a field that differs is a remote change";
}

TEST(Conflict, EchoComparesLikeWithLike)
{
	EXPECT_TRUE(SameRemoteValue(json(1.5), json("1.5")));
	EXPECT_TRUE(SameRemoteValue(json(2), json(2.0)));
	EXPECT_TRUE(SameRemoteValue(json(nullptr), json("")));
	EXPECT_TRUE(SameRemoteValue(json(true), json("true")));
	EXPECT_FALSE(SameRemoteValue(json("a"), json("A")));
	EXPECT_FALSE(SameRemoteValue(json(1), json("1x")));
	EXPECT_FALSE(SameRemoteValue(json::array({1}), json("[1]")));
}

TEST(Conflict, EchoNeedsAComparedFieldAndMatchesSalesforceSpelling)
{
	json pushed = {{"LastName", "Lovelace"}};
	EXPECT_FALSE(IsEchoOfPush(pushed, json::object(), {"LastName"})) << "nothing compared: no echo";
	EXPECT_FALSE(IsEchoOfPush(pushed, json{{"LastName", "Lovelace"}}, {})) << "no field both pushed and pulled";
	EXPECT_TRUE(IsEchoOfPush(json{{"lastname", "Lovelace"}}, json{{"LastName", "Lovelace"}}, {"lastname"}));
}

} // namespace
} // namespace switchboard
