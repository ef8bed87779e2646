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

} // namespace
} // namespace switchboard
